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
from harness.errors import HarnessError
from harness.training import TrainingStopped, epoch_order, load_last, make_schedule, train
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
    progress = load_last(tmp_path / "b" / "checkpoints" / "last.manifest.json")[1]["progress"]
    assert (progress["epoch"], progress["micro"], progress["step"]) == (0, 4, 2)
    assert stop.value.last.is_file()

    calls = []
    original = PPL.training_step
    monkeypatch.setattr(PPL, "training_step", lambda self, batch: calls.append(1) or original(self, batch))
    _, best_b = run(tmp_path / "b")
    assert len(calls) == (6 - 4) + 6  # the resumed run did only the remaining micro-batches

    a, b = (weights(load_last(tmp_path / run / "checkpoints" / "last.manifest.json")[0]) for run in "ab")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(v, weights(best_b)[k]) for k, v in weights(best_a).items())
    history_a = json.loads((tmp_path / "a" / "training.json").read_text())["history"]
    history_b = json.loads((tmp_path / "b" / "training.json").read_text())["history"]
    assert [h["val"] for h in history_a] == [h["val"] for h in history_b]
    # The epoch cut by the kill averages its loss over all its steps, not only those after the resume.
    assert [h["train"] for h in history_a] == [h["train"] for h in history_b]


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


class Killed(BaseException):
    """Stands in for SIGKILL: nothing in the harness catches it, so no cleanup code runs."""


def _kill_on_call(monkeypatch, target, name, at_call, partial=None):
    """Replace ``target.name`` so that its ``at_call``-th call (optionally) writes a torn file and dies."""
    original = getattr(target, name)
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == at_call:
            if partial is not None:
                partial(*args)
            raise Killed(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapper)


def _torn_safetensors(state, path, *rest):
    with open(path, "wb") as fh:
        fh.write(b"\x08\x00\x00\x00")  # a header length and nothing else


def _empty_state_file(obj, path, *rest):
    open(path, "wb").close()  # what a kill during torch.save left: a 0-byte file


@pytest.mark.parametrize("point", ["weights", "state", "manifest", "cleanup"])
def test_a_kill_at_any_point_of_saving_last_resumes_to_the_same_weights(tmp_path, monkeypatch, point):
    import harness.checkpoints
    import harness.training

    data, val = samples(tmp_path, "train", 12, 0), samples(tmp_path, "val", 2, 1)
    config = {"run": {"seed": 3}, "train": {"epochs": 2, "batch_size": 4, "lr": 0.05, "save_every_steps": 1}}

    def run(run_dir):
        torch.manual_seed(0)
        det = SmallDetector()
        train(det, data, val, config=config, run_dir=run_dir, device="cpu")
        return det, json.loads((run_dir / "training.json").read_text())

    reference, reference_log = run(tmp_path / "a")
    with monkeypatch.context() as patch:
        # the 4th save of `last` (after step 4 of 6 in epoch 1) dies at `point`
        if point == "weights":
            _kill_on_call(patch, harness.checkpoints, "save_file", 4, _torn_safetensors)
        elif point == "state":
            _kill_on_call(patch, torch, "save", 4, _empty_state_file)
        elif point == "manifest":
            _kill_on_call(patch, harness.training, "_write_manifest", 4)
        else:
            _kill_on_call(patch, harness.training, "_remove_stale", 4)
        with pytest.raises(Killed):
            run(tmp_path / "b")
    manifest = tmp_path / "b" / "checkpoints" / "last.manifest.json"
    # Every save that completed its rename is what resume sees; a torn one is never named.
    step = json.loads(manifest.read_text())["step"]
    assert step == (4 if point == "cleanup" else 3)
    assert load_last(manifest)[1]["progress"]["step"] == step
    resumed, resumed_log = run(tmp_path / "b")
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in reference.state_dict().items())
    assert resumed_log["history"] == reference_log["history"]
    leftovers = sorted(p.name for p in (tmp_path / "b" / "checkpoints").glob("last-*"))
    assert len(leftovers) == 3  # one pair (weights, its JSON, state); the torn files are gone


def test_resume_refuses_weights_and_state_that_do_not_belong_together(tmp_path):
    data = samples(tmp_path, "train", 4, 0)
    config = {"run": {"seed": 0}, "train": {"epochs": 1, "batch_size": 4, "lr": 0.05, "stop_after_steps": 1}}
    with pytest.raises(TrainingStopped):
        train(SmallDetector(), data, [], config=config, run_dir=tmp_path / "run", device="cpu")
    ckpt = tmp_path / "run" / "checkpoints"
    manifest = json.loads((ckpt / "last.manifest.json").read_text())
    # Weights of another step under the name the manifest gives: the hash tells them apart.
    from harness.checkpoints import save_checkpoint
    save_checkpoint(ckpt / manifest["weights"]["file"], {k: v + 1 for k, v in SmallDetector().state_dict().items()}, {})
    with pytest.raises(HarnessError, match="not the one the manifest names"):
        train(SmallDetector(), data, [], config=config, run_dir=tmp_path / "run", device="cpu")
    afresh = {**config, "train": {**config["train"], "resume": False}}
    with pytest.raises(TrainingStopped):
        train(SmallDetector(), data, [], config=afresh, run_dir=tmp_path / "run", device="cpu")
    manifest = json.loads((ckpt / "last.manifest.json").read_text())
    (ckpt / manifest["state"]["file"]).unlink()
    with pytest.raises(HarnessError, match="state file .* is missing"):
        train(SmallDetector(), data, [], config=config, run_dir=tmp_path / "run", device="cpu")
    # The old layout (weights and state side by side, nothing tying them together) is refused in one line.
    (ckpt / "last.manifest.json").unlink()
    (ckpt / "last.safetensors").write_bytes(b"")
    (ckpt / "last_state.pt").write_bytes(b"")
    with pytest.raises(HarnessError, match="train.resume=false"):
        train(SmallDetector(), data, [], config=config, run_dir=tmp_path / "run", device="cpu")


def test_harness_train_resumes_in_its_run_dir_and_refuses_another_configuration(tmp_path, capsys):
    root = tmp_path / "data"
    samples(root, "train", 6, 0)
    samples(root, "val", 2, 1)
    run_dir = tmp_path / "run"
    args = ["train", "--detector", "naive", "--suite", "folder", "--set", f"suite.root='{root}'", "--device", "cpu",
            "--set", f"run.dir='{run_dir}'", "--set", "detector.backbone='tiny'", "--set", "detector.pretrained='none'",
            "--set", "detector.image_size=16", "--set", "detector.lora=false", "--set", "detector.tiny.patch_size=4",
            "--set", "train.epochs=1", "--set", "train.batch_size=4"]
    assert main(args + ["--set", "train.stop_after_steps=1"]) == 0
    assert "training stopped after 1 steps" in capsys.readouterr().out
    assert main(args) == 0  # the same configuration: it resumes
    assert "best checkpoint" in capsys.readouterr().out
    assert json.loads((run_dir / "training.json").read_text())["steps"] == 3
    assert main(args + ["--set", "train.lr=0.5"]) == 2
    err = capsys.readouterr().err
    assert "holds a run of another configuration" in err and "train.lr" in err
