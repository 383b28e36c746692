"""Issue 21's speed figures side by side in one run (a benchmark, not a test).

    python benchmarks/speed/bench_speed.py [--detector npr] [--images 128] [--size 256] [--repeats 2]
                                           [--manifest-files 50000] [--skip-manifest]

1. Scoring: the detector at its full profile (default ``npr``, random weights: speed does not depend on
   them) over ``--images`` generated PNGs of ``--size`` px, batch 64, fp32, no score cache:
   - bare forward: the model alone over the same images decoded and preprocessed beforehand;
   - harness scoring (``score_samples``: DataLoader, decoding, input policy, logit checks) at the default
     settings (``eval.workers`` and threads as ``harness run`` chooses them) and at ``eval.workers=0``;
   - the same without batch-norm folding (``eval.fuse=false``: the scoring of before this change).
   Ratios: harness / bare forward (targets >= 0.9 at defaults, >= 0.8 at workers=0) and folded /
   unfolded harness scoring (target >= 1.3).
2. Startup: ``harness --version`` (target <= 0.5 s) and ``harness list`` (target <= 2 s), with
   ``python -c "import torch"`` beside them (the floor of any command that lists detectors).
3. Manifest: ``benchmarks/speed/bench_manifest.py``'s build / bare scandir + stat (target <= 3).

Every figure is the best of ``--repeats`` timings; the shared machine's load average is printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench_manifest import best  # the script beside this one (its folder is on sys.path)
from harness.images import load_image
from harness.pipeline import prepare_for_inference
from harness.registry import get_detector
from harness.runs import apply_thread_settings, default_workers
from harness.scoring import score_samples
from harness.suite import Sample

HERE = Path(__file__).resolve().parent


def make_images(folder: Path, count: int, size: int) -> list[Sample]:
    rng = np.random.default_rng(0)
    samples = []
    for i in range(count):
        low = rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8)
        img = Image.fromarray(low).resize((size, size), Image.BICUBIC)  # photo-like: compresses as a photo would
        path = folder / f"{i:05d}.png"
        img.save(path)
        samples.append(Sample(str(path), i % 2, "bench", "test"))
    return samples


def build(name: str, fold: bool):
    torch.manual_seed(0)
    detector = get_detector(name)().eval()
    prepare_for_inference(detector, {"run": {}, "eval": {"fuse": fold}})
    return detector.place("cpu").eval()


def bare_forward(detector, samples, batch_size: int):
    """A timed callable: the model alone over the images decoded and preprocessed beforehand."""
    batches = torch.stack([detector.preprocess([load_image(s.path)])[0] for s in samples]).split(batch_size)
    with torch.no_grad():
        detector(batches[0][:2])  # warm-up (allocator, oneDNN primitives)

    def run():
        apply_thread_settings({"run": {}, "eval": {}})
        with torch.no_grad():
            for batch in batches:
                detector(batch)

    return run


def harness_scoring(detector, samples, batch_size: int, workers: int):
    """A timed callable: ``score_samples`` with the threads ``harness run`` would set for ``workers``."""
    def run():
        apply_thread_settings({"run": {}, "eval": {"workers": workers}})
        frame = score_samples(detector, samples, device="cpu", batch_size=batch_size, workers=workers, cache_dir=None)
        assert len(frame) == len(samples)

    return run


def command_time(argv: list[str], repeats: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return best(lambda: subprocess.run(argv, check=True, capture_output=True, env=env), repeats)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", default="npr")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--manifest-files", type=int, default=50_000)
    parser.add_argument("--skip-manifest", action="store_true")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="aigi-bench-speed-"))
    try:
        samples = make_images(workdir, args.images, args.size)
        default = {"run": {}, "eval": {}}
        threads = apply_thread_settings(default)
        print(f"{args.detector}, {args.images} images of {args.size} px, batch {args.batch_size}, best of "
              f"{args.repeats}; CPUs {threads['cpus_available']}, default eval.workers {default_workers()}, "
              f"threads {threads['intra_op']} ({threads['source']}); load average {os.getloadavg()[0]:.1f}")
        folded, unfolded = build(args.detector, True), build(args.detector, False)
        runs = {
            "bare forward, folded": bare_forward(folded, samples, args.batch_size),
            "bare forward, unfolded": bare_forward(unfolded, samples, args.batch_size),
            "harness, defaults": harness_scoring(folded, samples, args.batch_size, default_workers()),
            "harness, workers=0": harness_scoring(folded, samples, args.batch_size, 0),
            "harness, defaults, eval.fuse=false": harness_scoring(unfolded, samples, args.batch_size, default_workers()),
        }
        # Rotated repeats: each round times every variant once, so that a change of the machine's
        # load hits all of them alike; each figure is the best round.
        rows = {label: float("inf") for label in runs}
        for _ in range(args.repeats):
            for label, run in runs.items():
                rows[label] = min(rows[label], best(run, 1))
        for label, seconds in rows.items():
            print(f"  {label:38s} {seconds:7.2f} s  {args.images / seconds:6.1f} img/s")
        bare = rows["bare forward, folded"]
        print(f"harness / bare forward, defaults: {bare / rows['harness, defaults']:.2f} (target >= 0.9)")
        print(f"harness / bare forward, workers=0: {bare / rows['harness, workers=0']:.2f} (target >= 0.8)")
        print(f"folded / unfolded harness scoring: "
              f"{rows['harness, defaults, eval.fuse=false'] / rows['harness, defaults']:.2f}x faster (target >= 1.3)")
        print(f"bare forward folded / unfolded: {rows['bare forward, unfolded'] / bare:.2f}x faster")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    harness_cmd = [str(Path(sys.executable).with_name("harness"))]
    version = command_time(harness_cmd + ["--version"], 3)
    listing = command_time(harness_cmd + ["list"], 3)
    torch_import = command_time([sys.executable, "-c", "import torch"], 3)
    print(f"harness --version: {version:.2f} s (target <= 0.5)")
    print(f"harness list: {listing:.2f} s (target <= 2); python -c 'import torch': {torch_import:.2f} s")

    if not args.skip_manifest:
        sys.stdout.flush()
        subprocess.run([sys.executable, str(HERE / "bench_manifest.py"), "--files", str(args.manifest_files),
                        "--repeats", str(max(2, args.repeats))], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
