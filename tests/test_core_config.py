"""Configuration layering: defaults < profile < TOML file < --set."""

from __future__ import annotations

import pytest

from harness import config as cfg
from harness.errors import HarnessError


def test_layers_win_in_order(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[detector]\nlr = 0.5\nwidth = 32\n[train]\nepochs = 7\n[run]\nseed = 3\n')
    resolved = cfg.resolve(
        detector_defaults={"lr": 0.1, "width": 8, "depth": 2, "nested": {"a": 1, "b": 2}},
        suite_defaults={"root": "/data"},
        training_defaults={"epochs": 30, "batch_size": 64},
        profile={"detector": {"depth": 1, "width": 4}, "train": {"epochs": 2}},
        file_config=cfg.load_toml(toml),
        overrides=["detector.lr=0.001", "detector.nested.b=5", "suite.root=/elsewhere", "run.tag=hello"],
    )
    assert resolved["detector"] == {"lr": 0.001, "width": 32, "depth": 1, "nested": {"a": 1, "b": 5}}
    assert resolved["train"] == {"epochs": 7, "batch_size": 64}
    assert resolved["suite"] == {"root": "/elsewhere"}
    assert resolved["run"]["seed"] == 3 and resolved["run"]["tag"] == "hello"
    assert resolved["run"]["device"] == "auto"


def test_resolve_does_not_mutate_the_plugin_defaults():
    defaults = {"nested": {"a": 1}}
    cfg.resolve(detector_defaults=defaults, overrides=["detector.nested.a=2"])
    assert defaults == {"nested": {"a": 1}}


@pytest.mark.parametrize(
    "text, value",
    [("3", 3), ("1e-4", 1e-4), ("true", True), ('["a", "b"]', ["a", "b"]), ("plain words", "plain words"),
     ('"quoted"', "quoted"), ("/a/path", "/a/path")],
)
def test_set_values_are_typed_like_toml(text, value):
    assert cfg.parse_value(text) == value


@pytest.mark.parametrize("bad", ["novalue", "=3", "a..b=1", "a.=1"])
def test_malformed_set_is_a_clear_error(bad):
    with pytest.raises(HarnessError, match="--set expects key=value"):
        cfg.parse_override(bad)


def test_missing_and_invalid_toml_files(tmp_path):
    with pytest.raises(HarnessError, match="does not exist"):
        cfg.load_toml(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[detector\n")
    with pytest.raises(HarnessError, match="not valid TOML"):
        cfg.load_toml(bad)


def test_settings_nothing_reads_are_reported_with_the_closest_key(tmp_path, caplog):
    path = tmp_path / "my.toml"
    path.write_text('[detector]\nlearning_rate = 0.1\n[eval]\nbatchsize = 8\n[protocol]\nanything = 1\n')
    config = cfg.resolve(
        detector_defaults={"lr": 1e-4, "backbone": "tiny"}, suite_defaults={"generators": None},
        training_defaults={"epochs": 3}, file_config=cfg.load_toml(path),
        overrides=["train.epoch=1", "train.epochs=2", "train.lr=1e-3", "suite.root=/data", "suite.generator=x",
                   "run.seed=3", "detector.backbone=vit"],
    )
    assert config["run"]["unknown_settings"] == [
        "eval.batchsize (did you mean eval.batch_size?)",
        "train.epoch (did you mean train.epochs?)",
        "suite.generator (did you mean suite.generators?)",
        "detector.learning_rate",
    ]
    assert "train.epoch (did you mean train.epochs?)" in caplog.text
    assert config["train"]["epochs"] == 2 and config["train"]["epoch"] == 1  # reported, not dropped


def test_a_benchmark_run_without_typos_warns_about_nothing(caplog):
    import argparse

    from harness import pipeline

    args = argparse.Namespace(detector="npr", suite="mini", config=None, overrides=["train.epochs=1"], device=None,
                              out=None, weights=None, seed=None, compile=None)
    config, _ = pipeline.resolve(args)
    assert config["run"]["unknown_settings"] == []
    assert "typos" not in caplog.text  # the early pass that reads the protocol does not judge keys
    args.overrides = ["train.epoch=1"]
    config, _ = pipeline.resolve(args)
    assert config["run"]["unknown_settings"] == ["train.epoch (did you mean train.epochs?)"]
    assert caplog.text.count("train.epoch (did you mean") == 1
