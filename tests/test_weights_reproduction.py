"""Reproduction protocols: a benchmark file names a registry checkpoint, the run scores it with no
training and puts the entry's reported numbers beside the reproduced ones, with a status that
the record and the leaderboard carry; NPR's native geometry."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import tiny_detector
from fakedata import write_pairs
from harness import weights
from harness.checkpoints import save_checkpoint
from harness.cli import main
from harness.leaderboard import accuracy_table
from harness.records import build_record
from harness.registry import get_plugins
from harness.weights import Checkpoint, Reported, compare_reported
from tiny_detector import TinyResidualDetector


@pytest.fixture
def env(tmp_path, monkeypatch):
    data = tmp_path / "data"
    for k, gen in enumerate(("g1", "g2")):
        for j, (split, n) in enumerate((("train", 2), ("val", 2), ("test", 4))):
            write_pairs(data / split / gen / "0_real", data / split / gen / "1_fake", n, seed=10 * k + j)
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "tiny-repro.toml").write_text(
        '[protocol]\nsuite = "folder"\nweights = "tiny-residual:official"\ntolerance = 1.0\n'
        'train_generators = ["g1"]\ntest_generators = ["g1", "g2"]\nanalyses = []\n')
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HARNESS_BENCHMARKS", str(bench))
    monkeypatch.chdir(tmp_path)
    tiny_detector.install(get_plugins())
    entry = Checkpoint(
        name="tiny-residual:official", host="manual", url="https://example.invalid/tiny", filename="tiny.safetensors",
        reported=(Reported(source="paper A", metric="acc", values={"g1": 100.0, "g2": 50.0}, protocol="tiny-repro"),
                  Reported(source="paper B", metric="acc", values={"g1": 99.5, "g2": 100.0}, mean=99.75,
                           protocol="tiny-repro"),
                  Reported(source="other protocol", metric="acc", values={"g1": 1.0}, protocol="elsewhere")))
    monkeypatch.setattr(TinyResidualDetector, "checkpoints", (entry,), raising=False)
    det = TinyResidualDetector()
    weights.import_file(save_checkpoint(tmp_path / "tiny.safetensors", det.checkpoint_state(), det.config),
                        "tiny-residual:official")
    return tmp_path


def test_a_reproduction_protocol_scores_its_checkpoint_and_compares(env, capsys):
    assert main(["run", "--detector", "tiny-residual", "--suite", "tiny-repro", "--set",
                 f"suite.root={env / 'data'}", "--out", str(env / "runs"), "--set", "eval.workers=0",
                 "--set", "eval.bootstrap=50"]) == 0
    run_dir = next((env / "runs").iterdir())
    results = json.loads((run_dir / "results.json").read_text())
    assert results["weights"]["entry"] == "tiny-residual:official" and results["weights"]["trained_in_run"] is False
    acc = {g: 100 * results["metrics"]["per_generator"][g]["acc"] for g in ("g1", "g2")}
    assert acc == {"g1": 100.0, "g2": 100.0}  # the tiny residual detector separates these images exactly
    a, b = results["reproduction"]  # the entry's third source belongs to another protocol
    assert a["source"] == "paper A" and a["status"] == "off by +50.0 points (g2)"
    assert a["difference"] == {"g1": 0.0, "g2": 50.0} and a["reported_mean"] == 75.0 and a["reproduced_mean"] == 100.0
    assert b["status"] == "within tolerance (±1 points)" and b["reported_mean"] == 99.75
    out = capsys.readouterr().out
    assert "reported (paper A) vs reproduced, acc (%): off by +50.0 points (g2)" in out

    record = build_record(run_dir)
    assert [x["status"] for x in record["reproduction"]] == [a["status"], b["status"]]
    table = accuracy_table("tiny-repro", [record])
    assert table.headers[-1] == "Reproduction (reported mean)"
    assert table.rows[0][-1].startswith("off by +50.0 points (g2) (acc 75.0, paper A); within tolerance")


def test_compare_reported_counts_missing_generators():
    measured = {"per_generator": {"a": {"acc": 0.9}}}
    out = compare_reported(Reported(source="s", metric="acc", values={"a": 90.5, "b": 80.0}), measured, 1.0)
    assert out["status"] == "within tolerance (±1 points); 1 reported generator(s) not scored: b"
    assert out["reproduced_mean"] is None and out["reported_mean"] == 85.25


def test_npr_native_geometry_drops_an_odd_last_row_and_column():
    from harness.registry import get_detector

    npr = get_detector("npr")({"native": True})
    image = Image.new("RGB", (35, 22), (10, 20, 30))
    x = npr.preprocess([image])[0]
    assert x.shape == (3, 22, 34)  # height 22 kept, width 35 -> 34
    assert torch.allclose(x[:, 0, 0], torch.tensor([10, 20, 30]) / 255.0)
    assert npr(x[None]).shape == (1,)


def test_weights_given_with_set_win_over_the_protocols_checkpoint(env):
    from argparse import Namespace

    from harness.pipeline import resolve

    mine = env / "mine.safetensors"
    det = TinyResidualDetector()
    save_checkpoint(mine, det.checkpoint_state(), det.config)
    args = Namespace(detector="tiny-residual", suite="tiny-repro", config=None, device=None, out=None, seed=None,
                     weights=None, compile=None, overrides=[f"run.weights={mine}", f"suite.root={env / 'data'}"])
    config, _ = resolve(args)
    assert config["run"]["weights"] == str(mine) and not config["run"].get("weights_entry")
    config, _ = resolve(Namespace(**{**vars(args), "overrides": [f"suite.root={env / 'data'}"]}))
    assert config["run"]["weights_entry"] == "tiny-residual:official"  # nothing given: the protocol's
