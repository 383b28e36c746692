"""No CLI path ends in a traceback: unexpected errors are one line and a crash log, bad weights
files are one line naming the file, unknown allow-list names are warned about."""

from __future__ import annotations

import pickle
import runpy
import struct
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from harness import cli, registry
from harness.checkpoints import load_state, save_checkpoint
from harness.errors import HarnessError
from harness.plugins.detectors.npr import NPR
from tests.fakedata import write_pairs


def boom(args):
    raise ZeroDivisionError("kaboom\nsecond line")


@pytest.fixture
def crashing_list(monkeypatch, tmp_path):
    """``harness list`` whose command raises an exception the harness does not expect."""
    import harness.commands.list as list_command

    monkeypatch.setattr(list_command, "run", boom)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("HARNESS_DEBUG", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


def test_an_unexpected_exception_is_one_line_and_a_log_file(crashing_list, capsys, tmp_path):
    code = cli.main(["list"])
    err = capsys.readouterr().err
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("harness: internal error: ZeroDivisionError: kaboom (traceback in ")
    logs = list((tmp_path / "cache" / "crashes").glob("crash-*.log"))
    assert len(logs) == 1 and str(logs[0]) in lines[0]
    text = logs[0].read_text()
    assert "Traceback (most recent call last)" in text and "in boom" in text and "argv: ['list']" in text


def test_harness_debug_prints_the_traceback(crashing_list, capsys, monkeypatch):
    monkeypatch.setenv("HARNESS_DEBUG", "1")
    assert cli.main(["list"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in boom" in err
    assert err.strip().splitlines()[-1].startswith("harness: internal error: ZeroDivisionError")


def test_under_torchrun_the_line_names_the_rank(crashing_list, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert cli.main(["list"]) == 1
    assert capsys.readouterr().err.startswith("harness: rank 1: internal error: ZeroDivisionError")


def test_an_unwritable_cache_still_gives_one_line(crashing_list, capsys, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(blocker))
    assert cli.main(["list"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "traceback in " in err


def test_expected_errors_keep_their_own_message(capsys):
    assert cli.main(["run", "--detector", "nope", "--suite", "mini"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness: error: unknown detector 'nope'.") and "internal error" not in err


def test_python_m_harness_has_the_same_boundary(crashing_list, capsys, monkeypatch):
    """``python -m harness`` runs ``harness/__main__.py``: the same one line, exit 1."""
    monkeypatch.setattr(sys, "argv", ["harness", "list"])
    monkeypatch.delitem(sys.modules, "harness.__main__", raising=False)
    with pytest.raises(SystemExit) as stop:
        runpy.run_module("harness", run_name="__main__")
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "internal error: ZeroDivisionError: kaboom" in err


# -- weights files ---------------------------------------------------------------------------

def _tensor_file(tmp_path, name="w.safetensors", **tensors):
    path = tmp_path / name
    save_file(tensors or {"a": torch.ones(4)}, str(path))
    return path


@pytest.mark.parametrize("make", ["pickle", "empty", "truncated", "huge_header"])
def test_an_unreadable_safetensors_file_is_one_line_naming_it(tmp_path, make):
    path = tmp_path / "w.safetensors"
    if make == "pickle":
        path.write_bytes(pickle.dumps({"a": [1.0, 2.0]}))
    elif make == "empty":
        path.write_bytes(b"")
    elif make == "truncated":
        good = _tensor_file(tmp_path, "good.safetensors", a=torch.ones(1000)).read_bytes()
        path.write_bytes(good[: len(good) // 2])
    else:  # a header length of 2^62 bytes
        path.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    with pytest.raises(HarnessError, match=f"weights file {path} is not a readable safetensors file"):
        load_state(path)


def test_a_torch_file_that_needs_unpickling_is_refused(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"state": Path("a-class-weights_only-refuses")}, path)
    with pytest.raises(HarnessError, match=f"cannot read weights {path} safely"):
        load_state(path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_at_load_time(tmp_path, bad):
    weights = torch.ones(3, 3)
    weights[1, 2] = bad
    path = _tensor_file(tmp_path, a=torch.ones(2), layer_weight=weights)
    with pytest.raises(HarnessError, match=r"holds NaN or infinite values in 1 tensors, e.g. layer_weight"):
        load_state(path)
    torch.save({"model": {"fc.bias": weights}}, tmp_path / "w.pth")
    with pytest.raises(HarnessError, match=r"e.g. model.fc.bias"):
        load_state(tmp_path / "w.pth")


def test_integer_tensors_for_float_weights_are_refused_with_names_and_dtypes(tmp_path):
    det = NPR({"load_size": 32, "crop_size": 32})
    state = det.checkpoint_state()
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = state[key].to(torch.int32)
    path = tmp_path / "npr.safetensors"
    save_checkpoint(path, state, det.config)
    before = det.state_dict()[key].clone()
    with pytest.raises(HarnessError, match=rf"1 integer tensors for floating-point weights \['{key} int32 != float32'\]"):
        det.load_weights(path)
    assert torch.equal(det.state_dict()[key], before)  # nothing loaded


def test_a_run_that_scores_nothing_fails(capsys, tmp_path):
    """Every test image is truncated: exit 2 with one line, no empty table with exit 0."""
    data = tmp_path / "data"
    for real, fake in write_pairs(data / "0_real", data / "1_fake", 2, size=32):
        for path in (real, fake):
            path.write_bytes(path.read_bytes()[:60])
    det = NPR({"load_size": 32, "crop_size": 32})
    save_checkpoint(tmp_path / "npr.safetensors", det.checkpoint_state(), det.config)
    code = cli.main(["run", "--detector", "npr", "--suite", "folder", "--set", f"suite.root={data}",
                     "--set", "detector.load_size=32", "--set", "detector.crop_size=32", "--set", "eval.workers=0",
                     "--weights", str(tmp_path / "npr.safetensors"), "--device", "cpu", "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2
    assert "harness: error: none of the 4 test images could be scored" in err and "Traceback" not in err


# -- the plugin allow-list -------------------------------------------------------------------

def test_allow_list_names_that_match_no_plugin_are_warned(monkeypatch, capsys):
    monkeypatch.setenv(registry.ALLOW_LIST_ENV, "bogus,npx,mini")
    try:
        plugins = registry.get_plugins(reload=True)
        err = capsys.readouterr().err
        assert "HARNESS_PLUGINS names 'bogus', but no installed plugin has that name;" in err
        assert "HARNESS_PLUGINS names 'npx', but no installed plugin has that name (did you mean npr?)" in err
        assert "'mini'" not in err and list(plugins.registry["suite"]) == ["mini"]
    finally:
        monkeypatch.delenv(registry.ALLOW_LIST_ENV)
        registry.get_plugins(reload=True)


@pytest.mark.parametrize("kind", ["nan", "pickle"])
def test_bad_weights_stop_a_run_with_one_line(capsys, tmp_path, kind):
    data = tmp_path / "data"
    write_pairs(data / "0_real", data / "1_fake", 2, size=32)
    det = NPR({"load_size": 32, "crop_size": 32})
    path = tmp_path / "npr.safetensors"
    if kind == "nan":
        state = {k: (torch.full_like(v, float("nan")) if v.is_floating_point() else v)
                 for k, v in det.checkpoint_state().items()}
        save_checkpoint(path, state, det.config)
    else:
        path.write_bytes(pickle.dumps(det.checkpoint_state()))
    code = cli.main(["run", "--detector", "npr", "--suite", "folder", "--set", f"suite.root={data}",
                     "--set", "detector.load_size=32", "--set", "detector.crop_size=32", "--set", "eval.workers=0",
                     "--weights", str(path), "--device", "cpu", "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    line = next(line for line in err.splitlines() if line.startswith("harness: error:"))
    assert f"weights file {path}" in line
    assert ("NaN or infinite" in line) if kind == "nan" else ("not a readable safetensors file" in line)
