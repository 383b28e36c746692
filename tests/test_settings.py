"""Settings are typed and checked before any work: a bad value is one line naming the key,
the value and what is expected; unknown keys and sections get a "did you mean" warning."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from harness import cli
from harness import config as cfg
from harness.errors import HarnessError
from harness.plugins.detectors.npr import NPR
from harness.plugins.suites.folder import FolderSuite
from harness.registry import get_plugins
from harness.runs import Run


def run_cli(capsys, tmp_path, *extra):
    """``harness run`` on an empty folder suite: any value that passed the checks would fail
    later on the empty folder, never train or score."""
    (tmp_path / "empty").mkdir(exist_ok=True)
    code = cli.main(["run", "--detector", "npr", "--suite", "folder", "--set", f"suite.root={tmp_path / 'empty'}",
                     "--out", str(tmp_path / "runs"), "--device", "cpu", *extra])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("setting, line", [
    ("eval.batch_size=-1", "setting eval.batch_size=-1: expected an integer >= 1"),
    ("eval.batch_size=0", "setting eval.batch_size=0: expected an integer >= 1"),
    ("eval.batch_size=abc", 'setting eval.batch_size="abc": expected an integer >= 1'),
    ("eval.workers=-3", "setting eval.workers=-3: expected an integer >= 0"),
    ("run.seed=abc", 'setting run.seed="abc": expected an integer >= 0 and <= 4294967295'),
    ("run.seed=1.5", "setting run.seed=1.5: expected an integer >= 0 and <= 4294967295"),
    ("eval.bootstrap=-5", "setting eval.bootstrap=-5: expected an integer >= 1"),
    ("train.epochs=abc", 'setting train.epochs="abc": expected an integer >= 1'),
    ("train.lr=abc", 'setting train.lr="abc": expected a number >= 0'),
    ("train.lr=-1", "setting train.lr=-1: expected a number >= 0"),
    ("detector=5", "setting detector=5: expected a table of settings"),
    ("run=1", "setting run=1: expected a table of settings"),
    ("protocol=1", "setting protocol=1: expected a table of settings"),
    ("train.schedule=linear", 'setting train.schedule="linear": expected one of "cosine", "step", "constant"'),
    ("eval.precision=fp16", 'setting eval.precision="fp16": expected one of "auto", "fp32", "bf16"'),
    ("detector.crop_size=2.0", "setting detector.crop_size=2.0: expected an integer >= 1"),
    ("analyses.tde.grid=0", "setting analyses.tde.grid=0: expected auto or an integer >= 1"),
])
def test_a_bad_setting_is_one_line_before_any_work(capsys, tmp_path, setting, line):
    code, err = run_cli(capsys, tmp_path, "--set", setting)
    assert code == 2
    assert err.strip() == f"harness: error: {line}"
    assert not (tmp_path / "runs").exists()  # refused before the run folder


def test_a_bad_value_in_a_toml_file_is_one_line(capsys, tmp_path):
    path = tmp_path / "my.toml"
    path.write_text('[detector]\ncrop_size = "big"\n')
    code, err = run_cli(capsys, tmp_path, "--config", str(path))
    assert code == 2
    assert err.strip() == 'harness: error: setting detector.crop_size="big": expected an integer >= 1'


def test_the_seed_flag_is_checked_too(capsys, tmp_path):
    code, err = run_cli(capsys, tmp_path, "--seed", "-1")
    assert code == 2 and "setting run.seed=-1: expected an integer >= 0" in err


def test_suite_commands_check_the_suite_settings(capsys, tmp_path):
    code = cli.main(["suite", "info", "folder", "--set", f"suite.root={tmp_path}", "--set", "suite.max_depth=0"])
    assert code == 2
    assert capsys.readouterr().err.strip() == "harness: error: setting suite.max_depth=0: expected an integer >= 1"


def test_unknown_sections_and_analysis_keys_are_warned_with_the_closest_name(caplog):
    analyses = get_plugins().registry["analysis"]
    config = cfg.resolve(
        detector_defaults=NPR.defaults, suite_defaults=FolderSuite.defaults, training_defaults=NPR.training,
        file_config={"trian": {"epochs": 2}, "analyses": {"tdee": {"grid": 4}, "tde": {"gird": 4}}},
        settings=cfg.plugin_settings(NPR, FolderSuite, analyses),
    )
    assert config["run"]["unknown_settings"] == [
        "[trian] (did you mean [train]?)", "analyses.tdee (did you mean analyses.tde?)",
        "analyses.tde.gird (did you mean analyses.tde.grid?)",
    ]
    assert "[trian] (did you mean [train]?)" in caplog.text
    config = cfg.resolve(detector_defaults=NPR.defaults, file_config={"crop_size": 64, "nonsense": 1})
    assert config["run"]["unknown_settings"] == ["crop_size (outside any [section]; did you mean detector.crop_size?)",
                                                 "nonsense (outside any [section])"]


def test_a_key_whose_default_is_new_is_typed_by_that_default():
    """A setting another contributor adds to a plugin's defaults needs no declaration."""
    cfg.resolve(detector_defaults={"brand_new": 3}, overrides=["detector.brand_new=4"])
    with pytest.raises(HarnessError, match='setting detector.brand_new="x": expected an integer$'):
        cfg.resolve(detector_defaults={"brand_new": 3}, overrides=["detector.brand_new=x"])


def test_declared_settings_of_a_subclass_refine_its_base():
    class Base:
        settings = {"size": {"minimum": 1}}

    class Child(Base):
        settings = {"size": {"maximum": 9}, "mode": {"enum": ["a"]}}

    assert cfg.declared_settings(Child) == {"size": {"minimum": 1, "maximum": 9}, "mode": {"enum": ["a"]}}


def test_an_invalid_schema_of_a_plugin_is_a_clear_error():
    with pytest.raises(HarnessError, match="invalid settings schema"):
        cfg.resolve(detector_defaults={"size": 3}, settings={"detector": {"size": {"type": "int"}}})


# -- properties ------------------------------------------------------------------------------

ANALYSES = get_plugins().registry["analysis"]
SETTINGS = cfg.plugin_settings(NPR, FolderSuite, ANALYSES)
KEYS = ["run.seed", "run.device", "eval.batch_size", "eval.workers", "eval.bootstrap", "eval.precision",
        "train.epochs", "train.lr", "train.betas", "train.patience", "train.resume", "detector.crop_size",
        "detector.tile_crop", "suite.root", "suite.max_depth", "analyses.tde.grid", "detector", "run", "nothing"]
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def resolve(**kwargs):
    return cfg.resolve(detector_defaults=NPR.defaults, suite_defaults=FolderSuite.defaults,
                       training_defaults=NPR.training, settings=SETTINGS, **kwargs)


@FAST
@given(key=st.one_of(st.sampled_from(KEYS), st.text(max_size=12)), value=st.text(max_size=12))
def test_any_set_string_resolves_or_is_a_harness_error(key, value):
    try:
        resolve(overrides=[f"{key}={value}"])
    except HarnessError as exc:
        assert str(exc).startswith(("setting ", "--set expects", "the configuration"))


TOML_VALUES = st.recursive(
    st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=8), st.booleans()),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)


@FAST
@given(layer=st.dictionaries(st.sampled_from(["run", "eval", "train", "detector", "suite", "analyses", "x"]),
                             st.one_of(TOML_VALUES, st.dictionaries(
                                 st.sampled_from([k.split(".")[-1] for k in KEYS] + ["tde"]), TOML_VALUES,
                                 max_size=4)), max_size=4))
def test_any_toml_layer_resolves_or_is_a_harness_error(layer):
    try:
        resolve(file_config=layer)
    except HarnessError as exc:
        assert str(exc).startswith(("setting ", "the configuration"))


def toml_literal(value) -> str:
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, bool) else str(value).lower()


VALID = {
    "run.seed": st.integers(0, 2**32 - 1),
    "eval.batch_size": st.integers(1, 10**6),
    "eval.workers": st.integers(0, 64),
    "train.lr": st.floats(0, 10, allow_nan=False).filter(lambda v: v == 0 or abs(v) > 1e-300),
    "train.patience": st.integers(0, 100),
    "detector.crop_size": st.integers(1, 4096),
    "detector.tile_crop": st.booleans(),
    "suite.root": st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=20),
}


@FAST
@given(data=st.data())
def test_valid_values_round_trip_into_config_json(tmp_path_factory, data):
    chosen = data.draw(st.lists(st.sampled_from(sorted(VALID)), min_size=1, max_size=4, unique=True))
    values = {key: data.draw(VALID[key]) for key in chosen}
    config = resolve(overrides=[f"{key}={toml_literal(value)}" for key, value in values.items()])
    folder = tmp_path_factory.mktemp("run")
    Run(dir=folder, config=config, device=None, seed=0).write_json("config.json", config)
    written = json.loads((folder / "config.json").read_text())
    for key, value in values.items():
        section, name = key.split(".")
        assert written[section][name] == value and type(written[section][name]) is type(value)


@FAST
@given(default=st.integers(1, 999), file=st.one_of(st.none(), st.integers(1, 999)),
       override=st.one_of(st.none(), st.integers(1, 999)), flag=st.one_of(st.none(), st.integers(0, 999)))
def test_layers_win_in_order_defaults_file_set_flag(default, file, override, flag):
    config = cfg.resolve(
        training_defaults={"epochs": default},
        file_config={"train": {"epochs": file}, "run": {"seed": file}} if file is not None else None,
        overrides=[f"train.epochs={override}", f"run.seed={override}"] if override is not None else [],
        flags={"run": {"seed": flag}} if flag is not None else None,
    )
    expected_epochs = next(v for v in (override, file, default) if v is not None)
    expected_seed = next(v for v in (flag, override, file, 0) if v is not None)
    assert config["train"]["epochs"] == expected_epochs and config["run"]["seed"] == expected_seed


def test_valid_floats_keep_their_value():
    assert math.isclose(resolve(overrides=["train.lr=1e-4"])["train"]["lr"], 1e-4)


@FAST
@given(key=st.sampled_from(["protocol.metrics", "protocol.train_generators", "protocol.analyses", "protocol.suite",
                            "protocol.profile", "protocol", "train_suite", "analyses.tde", "suite.generators"]),
       value=st.one_of(st.text(max_size=10), st.integers().map(str), st.sampled_from(['["acc", 1]', "[[]]", "{}"])))
def test_the_whole_run_configuration_resolves_or_is_a_harness_error(key, value):
    import argparse

    from harness import pipeline

    args = argparse.Namespace(detector="npr", suite="mini", config=None, overrides=[f"{key}={value}"], device=None,
                              out=None, weights=None, seed=None, compile=None)
    try:
        pipeline.resolve(args)
    except HarnessError:
        pass
