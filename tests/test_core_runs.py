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
