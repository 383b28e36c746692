"""Shortcut checks: JPEG quality from the quantisation tables, per-generator separability, the
metadata-only baseline; ``suite info`` names the generator separable by format alone."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import tiny_detector
from fakedata import real_image
from harness.checkpoints import save_checkpoint
from harness.cli import main
from harness.plugins.analyses.metadata_baseline import solvability, train_test_accuracy
from harness.registry import get_plugins
from harness.shortcuts import (
    IJG_LUMINANCE,
    estimate_jpeg_quality,
    file_metadata,
    ijg_table,
    metadata_table,
    separability,
)
from harness.suite import Sample
from tiny_detector import TinyResidualDetector

N = 30  # images per class, split and generator


def test_ijg_scaling_matches_the_standard_formula_and_pillow_tables():
    # quality 50 is the base table; 75 halves it (scale 50%, rounded); 100 is all ones
    assert (ijg_table(IJG_LUMINANCE, 50) == IJG_LUMINANCE).all()
    assert ijg_table(IJG_LUMINANCE, 75)[:4].tolist() == [8, 6, 5, 8]  # (16*50+50)//100, (11*50+50)//100, ...
    assert (ijg_table(IJG_LUMINANCE, 100) == 1).all()
    img = Image.fromarray(real_image(np.random.default_rng(0), 32))
    for quality in (5, 37, 50, 75, 90, 95, 100):
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=quality)
        with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
            assert list(decoded.quantization[0]) == ijg_table(IJG_LUMINANCE, quality).tolist()
            assert estimate_jpeg_quality(decoded.quantization) == quality


def test_file_metadata_reads_headers_and_reports_bad_files(tmp_path):
    img = Image.fromarray(real_image(np.random.default_rng(1), 48)).crop((0, 0, 40, 24))
    img.save(tmp_path / "a.jpg", quality=83)
    img.save(tmp_path / "b.png")
    (tmp_path / "c.png").write_bytes(b"not a png")
    a, b, c = (file_metadata(str(tmp_path / n)) for n in ("a.jpg", "b.png", "c.png"))
    assert (a["format"], a["jpeg_quality"], a["width"], a["height"]) == ("JPEG", 83, 40, 24)
    assert a["size"] == (tmp_path / "a.jpg").stat().st_size and a["error"] is None
    assert (b["format"], b["jpeg_quality"]) == ("PNG", None)
    assert c["error"] and c["format"] is None


def write_suite(root) -> None:
    """``shortcut``: JPEG reals and PNG fakes of the same content; ``matched``: JPEG q90 on both sides,
    real and fake drawn the same way, so no file feature tells them apart."""
    rng = np.random.default_rng(7)
    for split in ("train", "test"):
        for gen in ("shortcut", "matched"):
            for cls in ("0_real", "1_fake"):
                (root / split / gen / cls).mkdir(parents=True)
            for i in range(N):
                if gen == "shortcut":
                    pixels = Image.fromarray(real_image(rng, 32))
                    pixels.save(root / split / gen / "0_real" / f"{i:03d}.jpg", quality=90)
                    pixels.save(root / split / gen / "1_fake" / f"{i:03d}.png")
                else:
                    Image.fromarray(real_image(rng, 32)).save(root / split / gen / "0_real" / f"{i:03d}.jpg", quality=90)
                    Image.fromarray(real_image(rng, 32)).save(root / split / gen / "1_fake" / f"{i:03d}.jpg", quality=90)


@pytest.fixture
def suite_root(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "data"
    write_suite(root)
    return root


def _samples(root) -> list[Sample]:
    return [Sample(str(p), int(p.parent.name == "1_fake"), p.parent.parent.name, p.parent.parent.parent.name)
            for p in sorted(root.rglob("*.*"))]


def test_separability_and_baseline_per_generator(suite_root):
    meta = metadata_table(_samples(suite_root))
    table = separability(meta).set_index(["generator", "feature"])
    assert table.loc[("shortcut", "format"), "balanced_acc"] == 1.0 and table.loc[("shortcut", "format"), "separable"]
    assert not table.loc["matched", "separable"].any()
    solvable = solvability(meta).set_index("generator")
    assert solvable.loc["shortcut", "method"] == "train -> test"
    assert solvable.loc["shortcut", "acc"] == 1.0
    assert 0.3 <= solvable.loc["matched", "acc"] <= 0.7
    # trained on both generators' train split (JPEG fakes of matched blur the rule a little), tested on each
    result = train_test_accuracy(meta[meta.split == "train"], meta[meta.split == "test"])
    assert result["per_generator"]["shortcut"]["acc"] >= 0.9
    assert 0.3 <= result["per_generator"]["matched"]["acc"] <= 0.7


def test_suite_info_names_the_generator_separable_by_format(suite_root, capsys):
    assert main(["suite", "info", "folder", "--set", f"suite.root={suite_root}"]) == 0
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if line.startswith("warning: generator")]
    assert len(warnings) == 1 and "generator shortcut:" in warnings[0] and "format (100%)" in warnings[0]
    assert "solvable without pixels" in out
    rows = {tuple(line.split()[:2]): line for line in out.splitlines() if line.startswith(("shortcut", "matched"))}
    assert "JPEG 100%" in rows[("shortcut", "real")] and "q90 100%" in rows[("shortcut", "real")]
    assert "PNG 100%" in rows[("shortcut", "fake")]
    # the suite-wide mix alone (all reals JPEG, fakes half PNG) raised no format warning: the per-generator check does
    assert not any(line.startswith("warning: format shortcut") for line in out.splitlines())
    solvable = {line.split()[0]: line.split() for line in out.splitlines() if "train -> test" in line}
    assert solvable["shortcut"][-2:] == ["1.000", "1.000"]
    assert 0.3 <= float(solvable["matched"][-2]) <= 0.7


def test_metadata_baseline_analysis_reaches_results_and_the_leaderboard(suite_root, tmp_path, monkeypatch, capsys):
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    (bench / "shortcuts.toml").write_text('[protocol]\nsuite = "folder"\ntrain_generators = ["shortcut"]\n'
                                         'analyses = ["metadata-baseline"]\n')
    monkeypatch.setenv("HARNESS_BENCHMARKS", str(bench))
    monkeypatch.chdir(tmp_path)
    tiny_detector.install(get_plugins())
    det = TinyResidualDetector()
    weights = save_checkpoint(tmp_path / "w.safetensors", det.checkpoint_state(), det.config)
    assert main(["run", "--detector", "tiny-residual", "--suite", "shortcuts", "--set", f"suite.root={suite_root}",
                 "--out", str(tmp_path / "runs"), "--weights", str(weights), "--set", "eval.workers=0",
                 "--set", "eval.bootstrap=20"]) == 0
    run_dir = next((tmp_path / "runs").iterdir())
    results = json.loads((run_dir / "results.json").read_text())
    baseline = results["analyses"]["metadata-baseline"]
    assert baseline["per_generator_acc"]["shortcut"] == 1.0
    assert baseline["per_generator_acc"]["matched"] == 0.5  # the format rule calls every JPEG real
    assert (run_dir / "reliability.png").is_file()
    assert results["metrics"]["summary"]["ece"] == results["metrics"]["overall"]["ece"]

    root = tmp_path / "leaderboards"
    assert main(["leaderboard", "--root", str(root), "add", str(run_dir), "--build"]) == 0
    page = (root / "shortcuts" / "README.md").read_text()
    assert "Solvable without pixels (%)" in page and "ECE (class-balanced)" in page
    row = next(line for line in page.splitlines() if "Solvable" not in line and "| tiny-residual" in line
               and f"{100 * baseline['acc']:.1f}" in line)
    assert f"{results['metrics']['summary']['brier']:.4g}" in row


# -- eval.reencode, eval.match, per-format metrics ---------------------------------------------------------------

def test_reencoder_specs_and_output():
    from harness.errors import HarnessError
    from harness.images import jpeg_roundtrip
    from harness.shortcuts import reencoder

    for bad in ("jpeg", "jpeg:0", "jpeg:101", "gif:50", "png:9", "webp:x"):
        with pytest.raises(HarnessError, match="eval.reencode"):
            reencoder(bad)
    img = Image.fromarray(real_image(np.random.default_rng(3), 32))
    transform, key = reencoder("JPEG:75")
    assert key == "reencode:jpeg:75"
    assert np.array_equal(np.asarray(transform(img)), np.asarray(jpeg_roundtrip(img, 75)))
    webp, key = reencoder("webp:60")
    out = np.asarray(webp(img), dtype=int)
    assert key == "reencode:webp:60" and out.shape == (32, 32, 3) and np.abs(out - np.asarray(img)).mean() > 1
    png, _ = reencoder("png")
    assert np.array_equal(np.asarray(png(img)), np.asarray(img))  # lossless: same pixels


def test_match_keeps_equal_classes_per_format_and_size_stratum(suite_root):
    from harness.shortcuts import _size_bin, match_classes

    samples = [s for s in _samples(suite_root) if s.split == "test"]
    kept, notes = match_classes(samples)
    assert not any(s.generator == "shortcut" for s in kept)  # JPEG reals, PNG fakes: nothing matches
    assert any("generator shortcut keeps 0 of 60" in n and "left out" in n for n in notes)
    # brute force: per (format, size bin) stratum, both classes keep min(n_real, n_fake)
    meta = metadata_table([s for s in samples if s.generator == "matched"])
    meta["bin"] = meta["size"].map(_size_bin)
    expected = sum(2 * min((g.label == 0).sum(), (g.label == 1).sum()) for _, g in meta.groupby(["format", "bin"]))
    assert len(kept) == expected > 20
    kept_meta = metadata_table(kept)
    kept_meta["bin"] = kept_meta["size"].map(_size_bin)
    counts = kept_meta.groupby(["format", "bin"]).label.value_counts().unstack(fill_value=0)
    assert (counts[0] == counts[1]).all()


def _run(suite_root, tmp_path, monkeypatch, *extra) -> dict:
    monkeypatch.chdir(tmp_path)
    tiny_detector.install(get_plugins())
    det = TinyResidualDetector()
    weights = save_checkpoint(tmp_path / "w.safetensors", det.checkpoint_state(), det.config)
    out = tmp_path / f"runs{len(list(tmp_path.glob('runs*')))}"
    assert main(["run", "--detector", "tiny-residual", "--suite", "folder", "--set", f"suite.root={suite_root}",
                 "--out", str(out), "--weights", str(weights), "--set", "eval.workers=0",
                 "--set", "eval.bootstrap=20", *extra]) == 0
    return json.loads((next(out.iterdir()) / "results.json").read_text())


def test_run_reports_metrics_per_source_format(suite_root, tmp_path, monkeypatch):
    results = _run(suite_root, tmp_path, monkeypatch)
    assert results["shortcut_controls"] == {"reencode": None, "match": False}
    per_format = results["per_format"]
    assert set(per_format) == {"JPEG", "PNG"}
    assert per_format["PNG"]["overall"]["n"] == 30 and per_format["PNG"]["overall"]["n_real"] == 0
    assert per_format["JPEG"]["overall"]["n"] == 90
    scores = pd.read_csv(Path(results["run_dir"]) / "scores.csv")
    png = scores[(scores.split == "test") & scores.path.str.endswith(".png")]
    assert per_format["PNG"]["per_generator"]["shortcut"]["fake_acc"] == pytest.approx((png.logit >= 0).mean())


def test_run_with_reencode_and_match(suite_root, tmp_path, monkeypatch):
    from harness.images import jpeg_roundtrip, load_image

    results = _run(suite_root, tmp_path, monkeypatch, "--set", "eval.reencode=jpeg:75", "--set", "eval.match=true")
    assert results["shortcut_controls"] == {"reencode": "jpeg:75", "match": True}
    assert any("generator shortcut keeps 0 of 60" in w for w in results["plan_warnings"])
    assert "shortcut" not in results["metrics"]["per_generator"] and set(results["per_format"]) == {"JPEG"}
    scores = pd.read_csv(Path(results["run_dir"]) / "scores.csv")
    test = scores[scores.split == "test"]
    assert set(test.generator) == {"matched"} and (test.label == 0).sum() == (test.label == 1).sum()
    det = TinyResidualDetector()
    for row in test.head(6).itertuples():
        x = det.preprocess([jpeg_roundtrip(load_image(row.path), 75)])[0][None]
        assert row.logit == pytest.approx(float(det(x).detach()), abs=1e-5)
