"""The wheel installs one top-level package, ``harness``, with its plugins and protocol files inside it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # A copy of the tracked tree: building in the checkout would leave (and later reuse) its build/ folder.
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    source = out / "source"
    for name in files:
        if (REPO / name).is_file() and not name.startswith(("leaderboards/", "tests/")):
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    # No build isolation: the build backend comes from this environment, so nothing is downloaded.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(source)], check=True, capture_output=True, text=True, timeout=600)
    return next(out.glob("aigi_harness-*.whl"))


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python*/site-packages"))


def test_installed_wheel_puts_only_the_project_namespace_at_the_top_level(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    before = set(p.name for p in site_packages(venv).iterdir())
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300)
    added = set(p.name for p in site_packages(venv).iterdir()) - before
    assert {name for name in added if not name.endswith(".dist-info")} == {"harness"}
    installed = site_packages(venv) / "harness"
    assert (installed / "plugins" / "detectors" / "ppl.py").is_file()
    assert {p.name for p in (installed / "benchmarks").glob("*.toml")} >= {"genimage.toml", "mini.toml"}
    entry_points = next(site_packages(venv).glob("aigi_harness-*.dist-info")) / "entry_points.txt"
    targets = [line.split("=", 1)[1].strip() for line in entry_points.read_text().splitlines() if "=" in line]
    assert targets and all(t.startswith("harness.") for t in targets), targets


def test_wheel_has_no_file_outside_harness(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    outside = [n for n in names if not n.startswith("harness/") and ".dist-info/" not in n]
    assert outside == []
    assert "harness/benchmarks/genimage.toml" in names
