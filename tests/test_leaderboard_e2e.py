"""``harness run`` -> ``harness leaderboard add`` -> ``build`` on a real run folder (with the three analyses),
using the evaluation tests' tiny detector on a folder suite written by ``tests/fakedata.py``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

import tiny_detector
from fakedata import write_pairs
from harness import leaderboard as lb
from harness import records as rec
from harness.checkpoints import save_checkpoint
from harness.cli import main
from harness.registry import get_plugins
from tiny_detector import TinyResidualDetector

GENERATORS = ("g1", "g2")


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    data = tmp_path / "data"
    for k, gen in enumerate(GENERATORS):
        for j, (split, n) in enumerate((("train", 4), ("val", 2), ("test", 4))):
            write_pairs(data / split / gen / "0_real", data / split / gen / "1_fake", n, seed=10 * k + j)
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "tinyboard.toml").write_text(
        '[protocol]\nsuite = "folder"\ntrain_generators = ["g1"]\ntest_generators = ["g1", "g2"]\n'
        'analyses = ["tde", "masking", "corruptions"]\n\n'
        "[analyses.tde]\ngrid = 4\n\n[analyses.masking]\ngrid = 4\nseeds = [0]\nworkers = 0\n\n[analyses.corruptions]\nworkers = 0\n"
    )
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HARNESS_BENCHMARKS", str(bench))
    monkeypatch.chdir(tmp_path)
    tiny_detector.install(get_plugins())
    det = TinyResidualDetector()
    weights = save_checkpoint(tmp_path / "w.safetensors", det.checkpoint_state(), det.config)
    assert main(["run", "--detector", "tiny-residual", "--suite", "tinyboard", "--set", f"suite.root={data}",
                 "--out", str(tmp_path / "runs"), "--weights", str(weights), "--set", "eval.workers=0",
                 "--set", "eval.bootstrap=100"]) == 0
    return next((tmp_path / "runs").iterdir())


def test_a_real_run_becomes_a_record_and_a_page(run_dir, tmp_path, capsys):
    root = tmp_path / "leaderboards"
    assert main(["leaderboard", "--root", str(root), "add", str(run_dir), "--build"]) == 0
    files = lb.record_files(root / "tinyboard")
    assert len(files) == 1
    record = rec.load_record(files[0])
    results = json.loads((run_dir / "results.json").read_text())
    assert rec.check_record(record, file_name=files[0].name, benchmark_dir=root / "tinyboard") == []
    assert record["detector"]["name"] == "tiny-residual" and record["weights"]["trained_in_run"] is False
    assert record["weights"]["sha256"] == results["weights"]["sha256"]
    assert record["manifest_hash"] == results["manifest_hash"]
    for gen in GENERATORS:
        assert record["metrics"]["per_generator"][gen]["acc"] == pytest.approx(
            results["metrics"]["per_generator"][gen]["acc"])
    assert record["metrics"]["summary"]["mAcc"] == pytest.approx(results["metrics"]["summary"]["mAcc"])
    # Every analysis of the run reached the record in the shape the pages draw.
    assert record["tde"]["grid"] == 4
    summary = results["analyses"]["tde"]
    assert record["tde"]["stats"] == {k: summary[k] for k in ("few_patch_bias", "effective_patches", "gini",
                                                              "top1_share", "active_fraction")}
    # Distributions over the fake images that have positive evidence (none may have: then no distribution).
    per_image = pd.read_csv(run_dir / "analyses" / "tde" / "per_image.csv")
    fakes = per_image[per_image.label == 1]
    expected = {stat: int(fakes[stat].notna().sum()) for stat in ("effective_patches", "gini", "few_patch_bias")}
    got = {stat: d["n"] for stat, d in record["tde"].get("distribution", {}).items()}
    assert got == {stat: n for stat, n in expected.items() if n}
    assert record["masking"]["random_acc"]["x"][0] == 0.0
    assert record["masking"]["random_acc"]["y"][0] == pytest.approx(results["analyses"]["masking"]["acc_clean"])
    assert {"jpeg", "blur", "resize"} <= set(record["corruptions"])
    assert sorted(Path(a["path"]).name for a in record["assets"]) == [
        "corruptions.png", "masking_random.png", "tde_histogram.png", "tde_mean_heatmaps.png"]
    readme = (root / "tinyboard" / "README.md").read_text()
    for section in ("Accuracy per generator", "Random patch masking", "Corruption robustness", "(TDE) statistics"):
        assert section in readme
    for plot in ("accuracy", "masking", "corruptions"):
        assert (root / "tinyboard" / "plots" / f"{plot}.png").is_file()
    assert (root / "tinyboard" / "plots" / "tde.png").is_file() == bool(got)
    assert main(["leaderboard", "--root", str(root), "add", str(run_dir)]) == 2
    assert "duplicate" in capsys.readouterr().err


def test_a_run_is_printed_beside_the_published_rows_of_its_benchmark(run_dir, tmp_path):
    from harness import compare

    results = json.loads((run_dir / "results.json").read_text())
    assert compare.in_context(results) is None  # no leaderboard for this benchmark yet: nothing to compare with
    published = rec.build_record(run_dir)
    published["detector"]["label"] = "published-tiny"
    lb.add_record(rec.seal(published), tmp_path / "leaderboards")  # ./leaderboards: the cwd of this test

    text = compare.in_context(results)
    rows = [line for line in text.splitlines() if line.startswith("|")]
    mine = [row for row in rows if "(your run)" in row]
    theirs = [row for row in rows if "published-tiny" in row]
    assert len(mine) == 1 and len(theirs) == 1 and "| your run " in mine[0]
    acc = 100 * results["metrics"]["summary"]["mAcc"]
    assert f"{acc:.1f}" in mine[0] and f"{acc:.1f}" in theirs[0]
    assert "the published row 'published-tiny'" in text and "+0.0 points" in text
    assert "randomly initialised" not in text  # the tiny detector records no random backbone


def test_the_random_init_note_names_the_real_run():
    from harness.compare import random_init_note

    results = {"detector": "ppl", "profile": "mini", "detector_provenance": {"random_init": True}}
    note = random_init_note(results)
    assert "randomly initialised" in note and "profile 'mini'" in note
    assert "harness run --detector ppl --suite genimage" in note and "--device cuda" in note
    assert random_init_note({**results, "detector_provenance": {"random_init": False}}) is None
