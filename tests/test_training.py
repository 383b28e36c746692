"""The training engine: data order, schedule, accumulation, early stopping, skips, resume after a
kill (identical weights), the ``harness train`` command and two-process gloo DDP."""

from __future__ import annotations

import json
import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from torch import nn

from fakedata import write_pairs
from harness.cli import main
from harness.detector import Detector, InputPolicy
from harness.suite import Sample
from harness.training import TrainingStopped, epoch_order, make_schedule, train
from harness.plugins.detectors.ppl import PPL


class SmallDetector(Detector):
    """Deterministic (no dropout, no random augmentation): gradients depend on the data alone."""

    name = "small"
    defaults = {"optimizer": "adamw"}

    def __init__(self, config=None):
        super().__init__(config)
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 1)

    def input_policy(self, train=False):
        return InputPolicy("center_crop", 16)

    def forward(self, x):
        return self.fc(self.conv(x).abs().mean((2, 3))).squeeze(-1)

    def configure_optimizer(self, params, train_config):
        if self.config["optimizer"] == "sgd":
            return torch.optim.SGD(params, lr=float(train_config["lr"]))
        return super().configure_optimizer(params, train_config)


def samples(root, split, n, seed, generator="g"):
    out = []
    for real, fake in write_pairs(root / split / generator / "0_real", root / split / generator / "1_fake",
                                  n, size=16, seed=seed):
        out += [Sample(str(real), 0, generator, split), Sample(str(fake), 1, generator, split, pair=str(real))]
    return out


def weights(path):
    return load_file(str(path))


def test_epoch_order_is_seeded_and_splits_ranks_evenly():
    assert epoch_order(20, 3, 1) == epoch_order(20, 3, 1)
    assert epoch_order(20, 3, 1) != epoch_order(20, 3, 2)
    assert sorted(epoch_order(20, 3, 1)) == list(range(20))
    shards = [epoch_order(21, 3, 1, rank, 2) for rank in range(2)]
    assert len(shards[0]) == len(shards[1]) == 10  # the odd one out is dropped so ranks step together
    assert not set(shards[0]) & set(shards[1])


def test_cosine_schedule_with_warmup_matches_the_formula():
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = make_schedule(opt, {"epochs": 2, "warmup_steps": 2, "min_lr_ratio": 0.1, "schedule": "cosine",
                                "step_epochs": 1, "gamma": 0.1}, steps_per_epoch=6)
    seen = []
    for _ in range(12):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.5, 1.0] + [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - 2) / 10)) for s in range(2, 12)]
    assert seen == pytest.approx(expected)
    opt = torch.optim.SGD([param], lr=1.0)
    sched = make_schedule(opt, {"epochs": 3, "warmup_steps": 0, "min_lr_ratio": 0, "schedule": "step",
                                "step_epochs": 1, "gamma": 0.5}, steps_per_epoch=2)
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]


def test_gradient_accumulation_equals_the_larger_batch(tmp_path):
    data = samples(tmp_path, "train", 16, 0)
    results = []
    for batch_size, accum in ((8, 1), (4, 2)):
        torch.manual_seed(0)
        det = SmallDetector({"optimizer": "sgd"})
        config = {"run": {"seed": 1}, "train": {"epochs": 1, "batch_size": batch_size, "grad_accum": accum,
                                                 "lr": 0.5, "schedule": "constant", "resume": False}}
        train(det, data, [], config=config, run_dir=tmp_path / f"run{batch_size}", device="cpu")
        results.append({k: v.clone() for k, v in det.state_dict().items()})
    torch.manual_seed(0)
    start = SmallDetector({"optimizer": "sgd"})
    assert not torch.allclose(results[0]["fc.weight"], start.fc.weight)  # it did train
    for key in results[0]:
        assert torch.allclose(results[0][key], results[1][key], atol=1e-6), key


def tiny_ppl():
    return PPL({"backbone": "tiny", "pretrained": "none", "image_size": 16, "lora": False,
                "tiny": {"patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2}, "pcl_max_tokens": 64})


def test_resume_after_a_kill_gives_identical_weights(tmp_path, monkeypatch):
    train_set, val_set = samples(tmp_path, "train", 12, 0), samples(tmp_path, "val", 4, 1)
    base = {"epochs": 2, "batch_size": 4, "grad_accum": 2, "lr": 1e-3, "warmup_steps": 2, "clip_grad": 1.0}

    def run(run_dir, **extra):
        torch.manual_seed(0)  # the detector's own init, as the CLI's seeding does
        det = tiny_ppl()
        return det, train(det, train_set, val_set, config={"run": {"seed": 7}, "train": {**base, **extra}},
                          run_dir=run_dir, device="cpu")

    _, best_a = run(tmp_path / "a")
    # Stop after 2 of the 3 optimiser steps of epoch 1 (mid-epoch, RPR and PCL drawing random numbers).
    with pytest.raises(TrainingStopped) as stop:
        run(tmp_path / "b", stop_after_steps=2)
    progress = torch.load(tmp_path / "b" / "checkpoints" / "last_state.pt", weights_only=True)["progress"]
    assert (progress["epoch"], progress["micro"], progress["step"]) == (0, 4, 2)
    assert stop.value.last.is_file()

    calls = []
    original = PPL.training_step
    monkeypatch.setattr(PPL, "training_step", lambda self, batch: calls.append(1) or original(self, batch))
    _, best_b = run(tmp_path / "b")
    assert len(calls) == (6 - 4) + 6  # the resumed run did only the remaining micro-batches

    a, b = weights(tmp_path / "a" / "checkpoints" / "last.safetensors"), weights(tmp_path / "b" / "checkpoints" / "last.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(v, weights(best_b)[k]) for k, v in weights(best_a).items())
    history_a = json.loads((tmp_path / "a" / "training.json").read_text())["history"]
    history_b = json.loads((tmp_path / "b" / "training.json").read_text())["history"]
    assert [h["val"] for h in history_a] == [h["val"] for h in history_b]


def test_early_stopping_and_skipped_files(tmp_path):
    train_set = samples(tmp_path, "train", 8, 0)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"")
    train_set.append(Sample(str(broken), 1, "g", "train"))
    val_set = samples(tmp_path, "val", 4, 1)
    det = SmallDetector()
    # lr 0: the validation score never improves after the first epoch.
    config = {"run": {"seed": 0}, "train": {"epochs": 6, "batch_size": 4, "lr": 0.0, "patience": 2}}
    best = train(det, train_set, val_set, config=config, run_dir=tmp_path / "run", device="cpu")
    summary = json.loads((tmp_path / "run" / "training.json").read_text())
    assert summary["stopped_early"] is True and summary["epochs_run"] == 3
    assert {"path": str(broken), "reason": "zero-byte file"} in summary["skipped"]
    meta = json.loads(best.with_suffix(".json").read_text())
    assert meta["epoch"] == 1 and meta["val"]["n"] == 8 and meta["train_generators"] == ["g"]
    # A finished run stays finished when it is resumed.
    train(det, train_set, val_set, config=config, run_dir=tmp_path / "run", device="cpu")
    assert json.loads((tmp_path / "run" / "training.json").read_text())["epochs_run"] == 3


def test_harness_train_command(tmp_path, capsys):
    root = tmp_path / "data"
    samples(root, "train", 6, 0)
    samples(root, "val", 3, 1)
    code = main(["train", "--detector", "naive", "--suite", "folder", "--set", f"suite.root='{root}'",
                 "--out", str(tmp_path / "runs"), "--device", "cpu",
                 "--set", "detector.backbone='tiny'", "--set", "detector.pretrained='none'",
                 "--set", "detector.image_size=16", "--set", "detector.lora=false",
                 "--set", "detector.tiny.patch_size=4", "--set", "train.epochs=1", "--set", "train.batch_size=4"])
    out = capsys.readouterr().out
    assert code == 0, out
    best = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("best checkpoint"))
    meta = json.loads(open(best.replace(".safetensors", ".json")).read())
    assert meta["detector"] == "naive" and meta["backbone"]["random_init"] is True
    assert main(["train", "--detector", "naive", "--suite", "folder", "--set", f"suite.root='{root}'",
                 "--generators", "nope", "--out", str(tmp_path / "runs")]) == 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank, world, port, root, queue):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from harness import distributed
    from pathlib import Path

    try:
        root = Path(root)
        train_set = samples(root, "train", 8, 0)
        val_set = samples(root, "val", 3, 1)
        torch.manual_seed(rank)  # different inits: DDP must broadcast rank 0's
        det = SmallDetector()
        config = {"run": {"seed": 0}, "train": {"epochs": 2, "batch_size": 2, "lr": 1e-2}}
        best = train(det, train_set, val_set, config=config, run_dir=root / "run", device="cpu")
        # numpy, not tensors: shared-memory tensors die with the process that sent them.
        queue.put((rank, {k: v.numpy().copy() for k, v in det.state_dict().items()}, str(best)))
    finally:
        distributed.destroy()


@pytest.mark.slow
def test_two_process_gloo_training_keeps_replicas_identical(tmp_path):
    samples(tmp_path, "train", 8, 0)
    samples(tmp_path, "val", 3, 1)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, str(tmp_path), queue)) for r in range(2)]
    for p in procs:
        p.start()
    got = {}
    for _ in procs:
        rank, state, best = queue.get(timeout=300)
        got[rank] = (state, best)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    state0, state1 = got[0][0], got[1][0]
    assert all((state0[k] == state1[k]).all() for k in state0)
    saved = weights(got[0][1])
    summary = json.loads((tmp_path / "run" / "training.json").read_text())
    assert summary["steps"] == 2 * 4  # 16 samples: 8 per rank, batch 2 -> 4 steps per epoch
    assert set(saved) == set(state0)
