"""The CLI: help, version, listing, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

import harness
from harness.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"aigi-harness {harness.__version__}"


@pytest.mark.parametrize("command", [[], ["list"], ["plugins"], ["run"], ["train"], ["analyze"], ["suite"], ["leaderboard"]])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: harness" in capsys.readouterr().out


def test_run_help_names_every_documented_option(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for option in ("--detector", "--suite", "--config", "--set", "--device", "--out", "--weights", "--seed"):
        assert option in out


def test_list_shows_builtin_kinds(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "detectors:" in out and "suites:" in out and "analyses:" in out
    assert main(["list", "detectors"]) == 0
    listing = capsys.readouterr().out
    assert "ppl" in listing and "suites:" not in listing


def test_unknown_detector_is_one_line_with_close_matches(capsys):
    code = main(["run", "--detector", "unvfd", "--suite", "mini"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("harness: error: unknown detector 'unvfd'")
    assert "univfd" in err[-1]
    assert not any("Traceback" in line for line in err)


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "harness", "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "aigi-harness" in out.stdout
