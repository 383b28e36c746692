"""A third-party detector package: pip-installed, listed, and run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakedata import write_pairs

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "harness-tiny-cnn"
HARNESS = [sys.executable, "-m", "harness"]


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory):
    """pip-install the example package into its own folder and put that folder on PYTHONPATH."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(EXAMPLE)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), str(ROOT)]), HF_HUB_OFFLINE="1")
    return env


def harness(env, *args, cwd=None):
    return subprocess.run([*HARNESS, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_contributing_guide_shows_the_example_verbatim():
    guide = (ROOT / "CONTRIBUTING.md").read_text()
    for path in (EXAMPLE / "pyproject.toml", EXAMPLE / "harness_tiny_cnn" / "__init__.py"):
        assert path.read_text() in guide, f"CONTRIBUTING.md is out of date with {path}"


def test_installed_plugin_is_listed(installed_example):
    listing = harness(installed_example, "list", "detectors")
    assert listing.returncode == 0, listing.stderr
    line = next(line for line in listing.stdout.splitlines() if line.startswith("tiny-cnn"))
    assert "tiny_cnn" in line and "Three-layer CNN" in line
    plugins = harness(installed_example, "plugins")
    row = next(line for line in plugins.stdout.splitlines() if line.startswith("tiny_cnn"))
    assert "harness-tiny-cnn" in row and "0.1.0" in row and "ok" in row


def test_installed_plugin_runs_end_to_end_and_reproduces(installed_example, tmp_path):
    data = tmp_path / "data"
    for split, n, seed in (("train", 48, 0), ("val", 16, 1), ("test", 24, 2)):
        write_pairs(data / split / "0_real", data / split / "1_fake", n, size=32, seed=seed)
    results = []
    for attempt in range(2):
        out = tmp_path / f"runs{attempt}"
        proc = harness(installed_example, "run", "--detector", "tiny-cnn", "--suite", "folder",
                       "--set", f"suite.root={data}", "--device", "cpu", "--out", str(out), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
        assert {"config.json", "environment.json", "log.txt", "results.json"} <= {p.name for p in run_dir.iterdir()}
        config = json.loads((run_dir / "config.json").read_text())
        assert config["run"]["detector"] == "tiny-cnn" and config["suite"]["root"] == str(data)
        env = json.loads((run_dir / "environment.json").read_text())
        assert env["seed"] == 0 and env["device"] == "cpu" and "torch" in env["packages"]
        results.append(json.loads((run_dir / "results.json").read_text()))
    assert results[0]["metrics"] == results[1]["metrics"]
    overall = results[0]["metrics"]["overall"]
    assert overall["acc"] > 0.7 and overall["auc"] > 0.9, overall
