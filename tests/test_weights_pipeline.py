"""``--weights`` takes a registry name or a file, and rebuilds the detector as it was trained."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import tiny_detector
from fakedata import write_pairs
from harness import pipeline, weights
from harness.checkpoints import save_checkpoint
from harness.cli import build_parser, main
from harness.config import merge
from harness.errors import HarnessError
from harness.registry import get_detector, get_plugins
from tiny_detector import TinyResidualDetector
from test_weights import FIXTURE, needs_fixture


@pytest.fixture
def env(tmp_path, monkeypatch):
    data = tmp_path / "data"
    for k, gen in enumerate(("g1", "g2")):
        for j, (split, n) in enumerate((("train", 4), ("val", 2), ("test", 4))):
            write_pairs(data / split / gen / "0_real", data / split / gen / "1_fake", n, seed=10 * k + j)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    tiny_detector.install(get_plugins())
    return tmp_path


def _run(env, *extra) -> tuple[dict, dict]:
    args = ["run", "--detector", "tiny-residual", "--suite", "folder", "--set", f"suite.root={env / 'data'}",
            "--out", str(env / "runs"), "--set", "eval.workers=0", "--set", "eval.bootstrap=50", *extra]
    assert main(args) == 0
    latest = max((env / "runs").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    return json.loads((latest / "results.json").read_text()), json.loads((latest / "config.json").read_text())


def _checkpoint(env, **config) -> Path:
    det = TinyResidualDetector(config)
    return save_checkpoint(env / "w.safetensors", det.checkpoint_state(), det.config, {"train_generators": ["g1"]})


def test_the_checkpoint_configuration_rebuilds_the_detector(env, capsys):
    results, config = _run(env, "--weights", str(_checkpoint(env, size=16)))
    assert config["detector"]["size"] == 16  # the default is 32: the checkpoint's setting wins over it
    assert results["precision"] == "fp32" and config["eval"]["precision"] == "fp32"
    assert results["train_generators"] == ["g1"]  # what it was trained on, not the test generators
    assert results["weights"]["trained_on"] == "g1" and results["weights"]["trained_in_run"] is False
    out = capsys.readouterr().out
    assert "not trained in this run; trained on: g1)" in out and "trained on: g1, g2" not in out


def test_settings_given_for_the_run_win_and_the_conflict_is_reported(env, caplog):
    with caplog.at_level(logging.WARNING):
        results, config = _run(env, "--weights", str(_checkpoint(env, size=16)), "--set", "detector.size=32",
                               "--set", "eval.precision=bf16")
    assert config["detector"]["size"] == 32
    assert results["precision"] == "bf16-weights"  # asked for, and recorded (a bf16 copy on CPU)
    assert config["run"]["weights_conflicts"] == ["detector.size=32 (checkpoint: 16)"]
    assert results["weights"]["setting_conflicts"] == ["detector.size=32 (checkpoint: 16)"]
    assert "yours win: detector.size=32 (checkpoint: 16)" in caplog.text


def test_a_ppl_checkpoint_trained_on_mini_is_rebuilt_with_its_tiny_vit(env):
    ppl = get_detector("ppl")
    trained = merge(ppl.defaults, ppl.profiles["mini"]["detector"])
    assert trained["backbone"] == "tiny"
    path = save_checkpoint(env / "ppl.safetensors", {}, trained, {"train_generators": ["tconv"]})
    args = build_parser().parse_args(["run", "--detector", "ppl", "--suite", "folder", "--weights", str(path),
                                      "--set", f"suite.root={env / 'data'}"])
    config, _ = pipeline.resolve(args)
    assert config["detector"]["backbone"] == "tiny"  # not the default open_clip:ViT-L-14
    assert config["detector"] == trained


@needs_fixture
def test_weights_takes_a_registry_name(env):
    weights.import_file(FIXTURE, "univfd:progan")
    args = build_parser().parse_args(["run", "--detector", "univfd", "--suite", "folder",
                                      "--weights", "univfd:progan", "--set", f"suite.root={env / 'data'}"])
    config, _ = pipeline.resolve(args)
    assert config["run"]["weights"] == str(weights.path("univfd:progan"))
    assert config["run"]["weights_entry"] == "univfd:progan"


def test_a_registry_name_of_another_detector_or_not_stored_is_refused(env):
    def resolve(detector, name):
        args = build_parser().parse_args(["run", "--detector", detector, "--suite", "folder", "--weights", name,
                                          "--set", f"suite.root={env / 'data'}"])
        return pipeline.resolve(args)

    with pytest.raises(HarnessError, match="'univfd:progan' is for univfd, not detector 'npr'"):
        resolve("npr", "univfd:progan")
    with pytest.raises(HarnessError, match="not in the store.*harness weights pull npr:progan-4class"):
        resolve("npr", "npr:progan-4class")


def test_a_harness_checkpoint_of_another_detector_is_refused(env):
    path = save_checkpoint(env / "npr.safetensors", {}, {}, {"detector": "npr"})
    args = build_parser().parse_args(["run", "--detector", "ssp", "--suite", "folder", "--weights", str(path),
                                      "--set", f"suite.root={env / 'data'}"])
    with pytest.raises(HarnessError, match="trained for detector 'npr', not 'ssp': pass --detector npr"):
        pipeline.resolve(args)


def test_local_files_of_the_training_machine_that_are_not_here_fall_back_to_the_default(env, caplog):
    from harness.commands._common import apply_weights

    det = TinyResidualDetector({"size": 16})
    path = save_checkpoint(env / "w.safetensors", det.checkpoint_state(),
                           {**det.config, "backbone_weights": "/elsewhere/clip.safetensors",
                            "feature_cache_dir": str(env)})
    config = {"run": {"weights": str(path)}, "detector": {"size": 32, "backbone_weights": None}}
    with caplog.at_level(logging.WARNING):
        apply_weights(config, TinyResidualDetector, {})
    assert config["detector"]["size"] == 16 and config["detector"]["backbone_weights"] is None
    assert config["detector"]["feature_cache_dir"] == str(env)  # a path that exists here is kept
    assert "detector.backbone_weights=/elsewhere/clip.safetensors, which is not on this machine" in caplog.text
