"""Run folders and device selection."""

from __future__ import annotations

import json

import pytest
import torch

from harness import config as cfg
from harness.errors import HarnessError
from harness.runs import select_device, start_run


def test_start_run_writes_config_environment_and_log(tmp_path):
    config = cfg.resolve(detector_defaults={"width": 4}, overrides=[f"run.out={tmp_path}", "run.seed=7", "run.device=cpu"])
    run = start_run(config, label="det-suite")
    assert run.dir.parent == tmp_path and run.dir.name.split("-")[-1] and "det-suite" in run.dir.name
    assert json.loads((run.dir / "config.json").read_text()) == config
    env = json.loads((run.dir / "environment.json").read_text())
    assert env["seed"] == 7 and env["device"] == "cpu" and env["packages"]["torch"] == torch.__version__.split("+")[0]
    assert "run folder" in (run.dir / "log.txt").read_text()
    # The seed was applied: the next draw equals a fresh generator seeded the same way.
    expected = torch.rand(3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.rand(3), expected)


def test_device_selection():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(HarnessError, match="unknown device"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(HarnessError, match="CUDA is not available"):
            select_device("cuda")


def _close_run_logs():
    import logging

    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        root.removeHandler(handler)
        handler.close()


def test_a_reused_run_folder_must_hold_the_same_configuration(tmp_path):
    folder = tmp_path / "run"
    base = [f"run.dir={folder}", "run.device=cpu", "detector.width=4"]
    try:
        first = start_run(cfg.resolve(overrides=base + ["run.seed=1"]), label="x")
        first.write_json("results.json", {"acc": 0.9})
        # resuming: the same settings, plus ones that only steer how the work is done
        start_run(cfg.resolve(overrides=base + ["run.seed=1", "train.stop_after_steps=3"]), label="x")
        with pytest.raises(HarnessError, match=r"run\.seed: 1 -> 2") as refused:
            start_run(cfg.resolve(overrides=base + ["run.seed=2"]), label="x")
        assert "pick a new folder" in str(refused.value)
        with pytest.raises(HarnessError, match=r"detector\.width: 4 -> 8"):
            start_run(cfg.resolve(overrides=[f"run.dir={folder}", "run.device=cpu", "detector.width=8",
                                             "run.seed=1"]), label="x")
    finally:
        _close_run_logs()
    # the refused runs left the first run's files as they were
    assert json.loads((folder / "results.json").read_text()) == {"acc": 0.9}
    assert json.loads((folder / "config.json").read_text())["run"]["seed"] == 1


def test_run_folder_write_failures_are_one_clear_error(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(HarnessError, match="cannot write the run folder"):
        start_run(cfg.resolve(overrides=[f"run.out={blocker}", "run.device=cpu"]), label="x")

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(HarnessError, match="No space left on device"):
        start_run(cfg.resolve(overrides=[f"run.out={tmp_path / 'runs'}", "run.device=cpu"]), label="x")
