"""Startup cost: what `harness --version`, `--help` and `list` import, checked in a fresh interpreter.

A command module or plugin that imports torch, pandas or scikit-learn at its top level makes
every `harness` call pay seconds before it reads its arguments; these tests fail when one does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import contextlib, io, json, sys
from harness.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:  # argparse's --version and --help exit
        code = exc.code
# A package counts as imported when its code ran, not when a name for it was reserved.
loaded = sorted({name.split(".")[0] for name in sys.modules})
print(json.dumps({"code": code, "loaded": loaded, "out": out.getvalue()}))
"""

#: Model and table code that listing plugins must not build or import.
NOT_FOR_LIST = ("torchvision", "pandas", "sklearn", "scipy", "open_clip", "timm", "matplotlib", "skimage", "peft")


def probe(*argv: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_version_imports_neither_torch_nor_numpy():
    result = probe("--version")
    assert result["code"] == 0
    assert "aigi-harness" in result["out"]
    assert "torch" not in result["loaded"] and "numpy" not in result["loaded"]


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["suite", "info", "--help"],
                                  ["leaderboard", "add", "--help"], ["analyze", "--help"]])
def test_help_imports_no_torch(argv):
    result = probe(*argv)
    assert result["code"] == 0
    assert "usage:" in result["out"]
    assert "torch" not in result["loaded"], f"harness {' '.join(argv)} imported torch"


def test_list_imports_no_model_or_table_code():
    result = probe("list")
    assert result["code"] == 0
    # the listing is complete: built-in detectors, suites and analyses with their descriptions
    for name in ("npr", "univfd", "genimage", "mini", "tde", "masking"):
        assert f"\n{name} " in result["out"]
    assert "NPR (CVPR 2024)" in result["out"]
    heavy = [name for name in NOT_FOR_LIST if name in result["loaded"]]
    assert not heavy, f"harness list imported {heavy}"
