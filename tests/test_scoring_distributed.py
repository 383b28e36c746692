"""Two gloo processes on CPU: every image scored once, gathered on rank 0, same metrics as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import torch
import torch.multiprocessing as mp

from fakedata import write_pairs
from harness import distributed
from harness.metrics import evaluate
from harness.scoring import score_samples
from harness.suite import Sample
from test_distributed import free_port
from tiny_detector import TinyResidualDetector

TESTS = Path(__file__).resolve().parent


def make_samples(root: Path) -> list[Sample]:
    samples = []
    for k, gen in enumerate(("g1", "g2")):
        for real, fake in write_pairs(root / gen / "0_real", root / gen / "1_fake", 7, seed=k):  # odd count
            samples += [Sample(str(real), 0, gen, "test"), Sample(str(fake), 1, gen, "test")]
    return samples


def _worker(rank, world, port, samples, cache, queue):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    distributed.init_from_env(torch.device("cpu"))
    try:
        TinyResidualDetector.calls = 0
        df = score_samples(TinyResidualDetector(), samples, device="cpu", batch_size=3, cache_dir=cache)
        queue.put((rank, df, TinyResidualDetector.calls))
    finally:
        distributed.destroy()


def test_two_processes_score_each_image_once_and_match_one_process(tmp_path):
    samples = make_samples(tmp_path / "data")
    cache = tmp_path / "cache"
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, samples, str(cache), queue)) for r in range(2)]
    for p in procs:
        p.start()
    got = dict((rank, (df, calls)) for rank, df, calls in (queue.get(timeout=180) for _ in procs))
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    single = score_samples(TinyResidualDetector(), samples, device="cpu", batch_size=3)
    for rank in (0, 1):
        pd.testing.assert_frame_equal(got[rank][0], single, check_exact=False, rtol=1e-6)
    # 28 images over 2 ranks: 14 each, in batches of 3 -> 5 forwards per rank, none padded
    assert got[0][1] == got[1][1] == 5
    lines = [json.loads(line) for part in cache.rglob("scores-*.jsonl") for line in part.read_text().splitlines()]
    assert sorted(entry["path"] for entry in lines) == sorted(s.path for s in samples)  # each exactly once
    assert evaluate(got[0][0], n_boot=200) == evaluate(single, n_boot=200)


LAUNCH = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    import torch
    torch.set_num_threads(1)
    import tiny_detector
    from harness.cli import main
    from harness.registry import get_plugins
    tiny_detector.install(get_plugins())
    code = main(sys.argv[1:])
    print("forward calls", tiny_detector.TinyResidualDetector.calls, file=sys.stderr)
    raise SystemExit(code)
    """
)


def test_torchrun_harness_run_gives_the_one_process_metrics(tmp_path):
    data = tmp_path / "data"
    for k, gen in enumerate(("g1", "g2")):
        for split, n in (("train", 2), ("val", 3), ("test", 9)):
            write_pairs(data / split / gen / "0_real", data / split / gen / "1_fake", n, seed=k)
    det = TinyResidualDetector()
    from harness.checkpoints import save_checkpoint

    weights = save_checkpoint(tmp_path / "w.safetensors", det.checkpoint_state(), det.config)
    script = tmp_path / "launch.py"
    script.write_text(LAUNCH.format(tests=str(TESTS)))
    env = {**os.environ, "HARNESS_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}

    def run(prefix, out, cache):
        args = ["run", "--detector", "tiny-residual", "--suite", "folder", "--set", f"suite.root={data}",
                "--weights", str(weights), "--out", str(out), "--set", "eval.workers=0", "--set", "eval.batch_size=4",
                "--set", "eval.bootstrap=200", "--set", f"eval.cache_dir={cache}", "--device", "cpu"]
        proc = subprocess.run([*prefix, str(script), *args], capture_output=True, text=True, env=env, timeout=300,
                              cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (run_dir,) = Path(out).iterdir()
        return json.loads((run_dir / "results.json").read_text()), proc

    # --standalone: torchrun binds a free port itself (no window for another process to take it)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    multi, proc = run(torchrun, tmp_path / "runs2", tmp_path / "cache2")
    single, _ = run([sys.executable], tmp_path / "runs1", tmp_path / "cache1")
    assert multi["metrics"] == single["metrics"]
    assert multi["counts"] == single["counts"]
    # 36 test + 12 val images over 2 ranks, batch 4: 18 + 6 images per rank -> 5 + 2 forwards each
    calls = [int(line.split()[-1]) for line in proc.stderr.splitlines() if line.startswith("forward calls")]
    assert calls == [7, 7]
    lines = [line for part in (tmp_path / "cache2").rglob("scores-*.jsonl") for line in part.read_text().splitlines()]
    assert len(lines) == 48  # every image scored exactly once across the two ranks
