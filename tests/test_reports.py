"""``harness.reports.write_result`` and ``harness analyze`` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import tiny_detector
from fakedata import write_pairs
from harness.analysis import AnalysisResult
from harness.checkpoints import save_checkpoint
from harness.cli import main
from harness.errors import HarnessError
from harness.registry import get_plugins
from harness.reports import REPORT_MAX_ROWS, write_result
from tiny_detector import TinyResidualDetector


def small_figure(path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    fig.savefig(path)
    return path


def test_write_result_writes_csv_markdown_summary_and_report(tmp_path):
    short = pd.DataFrame({"generator": ["a", "b"], "acc": [0.5, 0.123456789], "note": ["x", None]})
    long = pd.DataFrame({"i": np.arange(REPORT_MAX_ROWS + 1), "v": np.linspace(0, 1, REPORT_MAX_ROWS + 1)})
    figures_dir = tmp_path / "out" / "demo"
    figures_dir.mkdir(parents=True)
    result = AnalysisResult(tables={"short": short, "long": long},
                            figures={"curve": small_figure(figures_dir / "curve.png")},
                            summary={"mAcc": 0.5, "per": {"a": 1}})
    written = write_result(result, tmp_path / "out", "demo")

    folder = tmp_path / "out" / "demo"
    assert written["tables"]["short"] == {"csv": str(folder / "short.csv"), "markdown": str(folder / "short.md")}
    pd.testing.assert_frame_equal(pd.read_csv(folder / "short.csv"), short)
    pd.testing.assert_frame_equal(pd.read_csv(folder / "long.csv"), long)
    markdown = (folder / "short.md").read_text().splitlines()
    assert [c.strip() for c in markdown[0].strip("|").split("|")] == ["generator", "acc", "note"]
    assert "0.1235" in markdown[3]  # four significant digits
    assert len((folder / "long.md").read_text().splitlines()) == REPORT_MAX_ROWS + 3
    assert json.loads((folder / "summary.json").read_text()) == result.summary
    report = (folder / "report.md").read_text()
    assert "![curve](curve.png)" in report
    assert "| a " in report  # the short table inline
    assert f"{REPORT_MAX_ROWS + 1} rows: [long.csv](long.csv)" in report
    assert "| 40 " not in report  # the long one only linked
    assert written["figures"] == {"curve": str(figures_dir / "curve.png")}
    json.dumps(written)


def test_write_result_links_figures_elsewhere_and_rejects_missing_ones(tmp_path):
    elsewhere = small_figure(tmp_path / "fig.png")
    write_result(AnalysisResult(figures={"f": elsewhere}), tmp_path / "out", "x")
    assert "![f](../../fig.png)" in (tmp_path / "out" / "x" / "report.md").read_text()
    with pytest.raises(HarnessError, match="does not exist"):
        write_result(AnalysisResult(figures={"g": tmp_path / "nope.png"}), tmp_path / "out", "y")


@pytest.fixture
def env(tmp_path, monkeypatch):
    data = tmp_path / "data"
    for k, gen in enumerate(("g1", "g2")):
        write_pairs(data / "test" / gen / "0_real", data / "test" / gen / "1_fake", 4, seed=k)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HARNESS_SCORE_CACHE", str(tmp_path / "scores"))
    monkeypatch.setenv("HARNESS_BENCHMARKS", str(tmp_path / "benchmarks"))
    monkeypatch.chdir(tmp_path)
    tiny_detector.install(get_plugins())
    det = TinyResidualDetector()
    save_checkpoint(tmp_path / "w.safetensors", det.checkpoint_state(), det.config)
    return tmp_path


FAST = {
    "tde": ["analyses.tde.grid=4"],
    "masking": ["analyses.masking.grid=4", "analyses.masking.ratios=[0.0, 0.5]", "analyses.masking.seeds=[0]",
                "analyses.masking.square_sizes=[0.25]", "analyses.masking.targeted_fractions=[0.25]"],
    "corruptions": ["analyses.corruptions.jpeg=[60]", "analyses.corruptions.blur=[2.0]",
                    "analyses.corruptions.resize=[1.0]"],
}


@pytest.mark.parametrize("name", sorted(FAST))
def test_analyze_command_writes_a_run_folder(env, name, capsys):
    args = ["analyze", name, "--detector", "tiny-residual", "--suite", "folder", "--set", f"suite.root={env / 'data'}",
            "--weights", str(env / "w.safetensors"), "--out", str(env / "runs"), "--set", "eval.workers=0"]
    for item in FAST[name]:
        args += ["--set", item]
    assert main(args) == 0
    out = capsys.readouterr().out
    (run_dir,) = (env / "runs").iterdir()
    record = json.loads((run_dir / "analysis.json").read_text())
    assert record["analysis"] == name and record["detector"] == "tiny-residual" and record["images"] == 16
    assert record["weights"]["trained_in_run"] is False
    folder = run_dir / "analyses" / name
    assert json.loads((folder / "summary.json").read_text()) == record["summary"]
    assert (folder / "report.md").is_file() and f"report: {folder / 'report.md'}" in out
    for files in record["files"]["tables"].values():
        assert Path(files["csv"]).is_file() and Path(files["markdown"]).is_file()
    assert record["files"]["figures"]
    for path in record["files"]["figures"].values():
        assert Path(path).parent == folder
        with Image.open(path) as img:
            img.verify()


def test_analyze_rejects_an_unknown_analysis(env, capsys):
    args = ["analyze", "tdee", "--detector", "tiny-residual", "--suite", "folder", "--set",
            f"suite.root={env / 'data'}", "--out", str(env / "runs")]
    assert main(args) == 2
    assert "Did you mean: tde" in capsys.readouterr().err
    assert not (env / "runs").exists()


def test_harness_run_performs_the_protocols_analyses(env):
    settings = "\n".join(f"[analyses.{name}]\n" + "\n".join(item.split(".", 2)[2].replace("=", " = ", 1)
                                                          for item in items) for name, items in FAST.items())
    (env / "benchmarks").mkdir()
    (env / "benchmarks" / "probe.toml").write_text(
        f'[protocol]\nsuite = "folder"\nanalyses = ["tde", "masking", "corruptions"]\n\n{settings}\n')
    args = ["run", "--detector", "tiny-residual", "--suite", "probe", "--set", f"suite.root={env / 'data'}",
            "--weights", str(env / "w.safetensors"), "--out", str(env / "runs"), "--set", "eval.workers=0",
            "--set", "eval.bootstrap=50"]
    assert main(args) == 0
    (run_dir,) = (env / "runs").iterdir()
    results = json.loads((run_dir / "results.json").read_text())  # strict JSON: no NaN anywhere
    assert set(results["analyses"]) == {"tde", "masking", "corruptions"}
    assert results["analyses"]["tde"]["grid"] == 4 and results["analyses"]["masking"]["grid"] == 4
    for name in FAST:
        folder = run_dir / "analyses" / name
        assert json.loads((folder / "summary.json").read_text()) == results["analyses"][name]
        assert (folder / "report.md").is_file()
    # the clean row of the corruption curves is the run's own test scores
    scores = pd.read_csv(run_dir / "scores.csv")
    test = scores[scores.split == "test"]
    clean = results["analyses"]["corruptions"]["mAcc"]["jpeg none"]
    per_gen = [((g.logit >= 0).astype(int) == g.label).mean() for _, g in test.groupby("generator")]
    assert clean == pytest.approx(np.mean(per_gen), abs=1e-6)
