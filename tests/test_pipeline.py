"""``harness run`` end to end: a tiny detector (registered through a pluggy plugin object) on a
folder-suite tree written by ``tests/fakedata.py``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tiny_detector
from fakedata import write_pairs
from harness.checkpoints import save_checkpoint, sha256_file
from harness.cli import main
from harness.metrics import binary_metrics
from harness.registry import get_plugins
from tiny_detector import TinyResidualDetector

GENERATORS = ("g1", "g2", "g3")


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A folder suite with train/val/test splits of three generators, and private caches."""
    data = tmp_path / "data"
    for k, gen in enumerate(GENERATORS):
        for j, (split, n) in enumerate((("train", 8), ("val", 4), ("test", 6))):
            write_pairs(data / split / gen / "0_real", data / split / gen / "1_fake", n, seed=10 * k + j)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HARNESS_BENCHMARKS", str(tmp_path / "benchmarks"))
    monkeypatch.chdir(tmp_path)
    tiny_detector.install(get_plugins())
    TinyResidualDetector.calls = 0
    return tmp_path


def harness_run(env, *extra) -> dict:
    args = ["run", "--detector", "tiny-residual", "--suite", "folder", "--set", f"suite.root={env / 'data'}",
            "--out", str(env / "runs"), "--set", "eval.workers=0", "--set", "eval.bootstrap=200", *extra]
    assert main(args) == 0
    latest = max((env / "runs").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    return json.loads((latest / "results.json").read_text())


def test_run_with_weights_scores_metrics_and_table(env, capsys):
    det = TinyResidualDetector()
    weights = save_checkpoint(env / "w.safetensors", det.checkpoint_state(), det.config)
    results = harness_run(env, "--weights", str(weights))
    out = capsys.readouterr().out

    assert results["schema"] == 1 and results["detector"] == "tiny-residual" and results["suite"] == "folder"
    assert results["weights"] == {"path": str(weights.resolve()), "sha256": sha256_file(weights), "trained_in_run": False,
                                  "entry": None, "train_generators": [], "trained_on": None, "setting_conflicts": []}
    # the checkpoint records no training generators: the run does not claim the test generators as them
    assert results["train_generators"] == [] and results["test_generators"] == list(GENERATORS)
    run_dir = Path(results["run_dir"])
    for name in ("config.json", "environment.json", "results.json", "scores.csv", "metrics.csv", "table.md"):
        assert (run_dir / name).is_file(), name

    # the metrics in results.json equal those recomputed from scores.csv, generator by generator
    scores = pd.read_csv(run_dir / "scores.csv")
    test = scores[scores.split == "test"]
    assert len(test) == len(GENERATORS) * 12 and set(scores.split) == {"test", "val"}
    for gen in GENERATORS:
        part = test[test.generator == gen]
        expected = binary_metrics(part.label, part.logit)
        got = results["metrics"]["per_generator"][gen]
        for key in ("acc", "real_acc", "fake_acc", "ap", "auc", "eer"):
            assert got[key] == pytest.approx(expected[key]), key
    accs = [results["metrics"]["per_generator"][g]["acc"] for g in GENERATORS]
    assert results["metrics"]["summary"]["mAcc"] == pytest.approx(np.mean(accs))
    assert results["direction_check"]["inverted"] is False
    assert results["manifest_hash"] and results["skipped"] == []

    # the papers' table: a row for the detector, columns generators, mAcc, std
    header = next(line for line in out.splitlines() if "mAcc" in line)
    assert header.split() == ["detector", *GENERATORS, "mAcc", "std"]
    row = next(line for line in out.splitlines() if line.startswith("tiny-residual"))
    assert row.split()[-2] == f"{100 * np.mean(accs):.1f}"

    # the same evaluation again: every score comes from the cache, the model is never called
    TinyResidualDetector.calls = 0
    again = harness_run(env, "--weights", str(weights))
    assert TinyResidualDetector.calls == 0
    assert again["counts"]["from_cache_test"] == again["counts"]["test"]
    assert again["metrics"] == results["metrics"]


def test_benchmark_protocol_and_train_generator_override(env, capsys):
    bench = env / "benchmarks"
    bench.mkdir()
    (bench / "tinybench.toml").write_text(
        '[protocol]\nsuite = "folder"\ntrain_generators = ["g1"]\ntest_generators = ["g3", "g1"]\n'
        'metrics = ["acc", "auc"]\nanalyses = ["tiny-count"]\nprofile = "mini"\n'
    )
    det = TinyResidualDetector()
    weights = save_checkpoint(env / "w.safetensors", det.checkpoint_state(), det.config)
    args = ["--weights", str(weights)]
    results = harness_run(env, *args, "--suite", "tinybench")
    assert results["benchmark"] == "tinybench" and results["profile"] == "mini"
    # the protocol's training generators give the validation split; the checkpoint records none of its own
    assert results["protocol"]["train_generators"] == ["g1"] and results["train_generators"] == []
    assert results["test_generators"] == ["g3", "g1"]
    assert list(results["metrics"]["per_generator"]) == ["g3", "g1"]
    assert results["direction_check"]["where"].startswith("the val split of training generator(s) g1")
    # the protocol's analysis ran on the test samples, its report was written, NaN became null
    assert results["analyses"]["tiny-count"] == {"n": 24, "undefined": None, "eval_mode": True}
    counts = pd.read_csv(Path(results["run_dir"]) / "analyses" / "tiny-count" / "counts.csv")
    assert counts.set_index("generator")["n"].to_dict() == {"g1": 12, "g3": 12}

    results = harness_run(env, *args, "--suite", "tinybench", "--set", 'protocol.train_generators=["g2"]',
                          "--set", "protocol.analyses=[]")
    assert results["train_generators"] == [] and results["protocol"]["train_generators"] == ["g2"]
    assert results["analyses"] == {}
    code = main(["run", "--detector", "tiny-residual", "--suite", "tinybench", "--set", f"suite.root={env / 'data'}",
                 "--weights", str(weights), "--set", 'protocol.analyses=["no-such-analysis"]'])
    assert code == 2 and "unknown analysis 'no-such-analysis'" in capsys.readouterr().err

    code = main(["run", "--detector", "tiny-residual", "--suite", "tinybench", "--set", f"suite.root={env / 'data'}",
                 "--weights", str(weights), "--set", 'protocol.test_generators=["nope"]'])
    assert code == 2
    assert "nope" in capsys.readouterr().err


def test_grid_analyses_are_skipped_for_a_detector_without_one_image_plane(env, capsys, monkeypatch):
    monkeypatch.setattr(TinyResidualDetector, "spatial_input", False)
    det = TinyResidualDetector()
    weights = save_checkpoint(env / "w.safetensors", det.checkpoint_state(), det.config)
    results = harness_run(env, "--weights", str(weights), "--set", 'protocol.analyses=["tde", "tiny-count"]')
    assert list(results["analyses"]) == ["tiny-count"]  # the run went on past the inapplicable analysis
    assert "grid analyses (TDE, masking) do not apply" in results["analyses_skipped"]["tde"]
    assert "analysis 'tde' skipped" in (Path(results["run_dir"]) / "log.txt").read_text()
    code = main(["analyze", "masking", "--detector", "tiny-residual", "--suite", "folder",
                 "--set", f"suite.root={env / 'data'}", "--weights", str(weights), "--out", str(env / "runs")])
    assert code == 2 and "analysis 'masking' does not apply" in capsys.readouterr().err


def test_left_out_generators_and_one_class_generators_are_reported(env):
    import shutil

    shutil.rmtree(env / "data" / "test" / "g3" / "0_real")
    det = TinyResidualDetector()
    weights = save_checkpoint(env / "w.safetensors", det.checkpoint_state(), det.config)
    results = harness_run(env, "--weights", str(weights), "--set", 'protocol.test_generators=["g1", "g3"]',
                          "--set", "eval.cache=false")
    assert results["plan_warnings"] == [
        "12 test images of generators outside the protocol are not scored: g2 (12)",
        "generator g3 has only fake test images: its accuracy is the fake images' accuracy alone, "
        "and it still counts in mAcc",
    ]
    assert results["metrics"]["per_generator"]["g3"]["n_real"] == 0


def test_inverted_detector_triggers_the_direction_warning(env, capsys):
    det = TinyResidualDetector({"invert": True})
    weights = save_checkpoint(env / "w.safetensors", det.checkpoint_state(), det.config)
    results = harness_run(env, "--weights", str(weights), "--set", "detector.invert=true")
    assert results["direction_check"]["inverted"] is True
    assert results["metrics"]["summary"]["mAcc"] < 0.5
    assert "LABEL DIRECTION WARNING" in capsys.readouterr().err


@pytest.mark.slow
def test_run_without_weights_trains_then_evaluates(env):
    results = harness_run(env, "--set", 'protocol.train_generators=["g1"]', "--set", "train.epochs=1",
                          "--set", "train.batch_size=8", "--set", "detector.bias=-3.0")
    assert results["weights"]["trained_in_run"] is True
    best = Path(results["weights"]["path"])
    assert best.is_file() and results["weights"]["sha256"] == sha256_file(best)
    assert results["counts"]["train"] == 16 and results["counts"]["val"] == 8
    assert results["metrics"]["summary"]["mAcc"] is not None


def test_compile_trains_and_scores_like_eager(env, monkeypatch):
    import torch

    compiled = []
    real_compile = torch.nn.Module.compile

    def spy(module, *args, **kwargs):
        compiled.append(type(module).__name__)
        return real_compile(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "compile", spy)
    common = ("--set", 'protocol.train_generators=["g1"]', "--set", "train.epochs=1", "--set", "train.batch_size=8",
              "--set", "detector.bias=-3.0", "--set", "eval.cache=false", "--device", "cpu")
    eager = harness_run(env, *common)
    assert compiled == []
    fast = harness_run(env, *common, "--compile")
    assert sorted(compiled) == ["TinyResidualDetector", "_Step"]  # the training step, then the detector's forward
    assert json.loads((Path(fast["run_dir"]) / "config.json").read_text())["run"]["compile"] is True
    a, b = (pd.read_csv(Path(r["run_dir"]) / "scores.csv") for r in (eager, fast))
    assert a.path.tolist() == b.path.tolist()
    np.testing.assert_allclose(b.logit, a.logit, rtol=1e-4, atol=1e-4)


def test_compile_refuses_the_cpu_bf16_copy_before_any_training(env, capsys):
    args = ["run", "--detector", "tiny-residual", "--suite", "folder", "--set", f"suite.root={env / 'data'}",
            "--out", str(env / "runs"), "--device", "cpu", "--compile", "--set", "eval.precision=bf16",
            "--set", "train.epochs=1"]  # no --weights: it would train first
    assert main(args) != 0
    assert "run.compile cannot be combined with eval.precision=bf16" in capsys.readouterr().err
    assert TinyResidualDetector.calls == 0  # refused before a single forward


@pytest.mark.slow
def test_matrix_trains_on_each_generator_and_tests_on_all(env, capsys):
    args = ["matrix", "--detector", "tiny-residual", "--suite", "folder", "--set", f"suite.root={env / 'data'}",
            "--out", str(env / "runs"), "--generators", "g1,g3", "--set", "eval.workers=0",
            "--set", "eval.bootstrap=50", "--set", "train.epochs=1", "--set", "train.batch_size=8"]
    assert main(args) == 0
    out = capsys.readouterr().out
    (matrix_dir,) = [p for p in (env / "runs").iterdir() if "-matrix-" in p.name]
    matrix = pd.read_csv(matrix_dir / "matrix.csv", index_col=0)
    assert list(matrix.index) == ["g1", "g3"]
    assert list(matrix.columns) == [*GENERATORS, "mAcc", "std"]
    runs = json.loads((matrix_dir / "matrix.json").read_text())["runs"]
    for gen in ("g1", "g3"):
        results = json.loads((Path(runs[gen]) / "results.json").read_text())
        assert results["train_generators"] == [gen] and results["weights"]["trained_in_run"]
        for test_gen in GENERATORS:
            assert matrix.loc[gen, test_gen] == pytest.approx(100 * results["metrics"]["per_generator"][test_gen]["acc"])
    assert "trained on" in out and "*" in out
    assert main(args + ["--weights", "x.safetensors"]) == 2


def test_a_generator_whose_reals_all_fail_to_decode_is_a_plan_warning(env):
    det = TinyResidualDetector()
    weights = save_checkpoint(env / "w.safetensors", det.checkpoint_state(), det.config)
    for real in (env / "data" / "test" / "g2" / "0_real").iterdir():
        real.write_bytes(real.read_bytes()[:60])  # a PNG cut short: listed, but it cannot be decoded
    results = harness_run(env, "--weights", str(weights))
    assert len(results["skipped"]) == 6
    assert "generator g2 has no scored real test images" in " ".join(results["plan_warnings"])
    assert results["metrics"]["per_generator"]["g2"]["real_acc"] is None  # fakes alone: the warning says why


def test_an_output_folder_inside_the_suite_root_is_refused(env, capsys):
    det = TinyResidualDetector()
    weights = save_checkpoint(env / "w.safetensors", det.checkpoint_state(), det.config)
    before = sorted(p for p in (env / "data").rglob("*") if p.is_file())
    for command in (["analyze", "tiny-count"], ["run"]):
        code = main([*command, "--detector", "tiny-residual", "--suite", "folder", "--set",
                     f"suite.root={env / 'data'}", "--weights", str(weights), "--out", str(env / "data" / "out")])
        assert code == 2
        err = capsys.readouterr().err
        assert "inside the suite's folder" in err and len(err.strip().splitlines()) == 1
    assert sorted(p for p in (env / "data").rglob("*") if p.is_file()) == before


def test_a_full_disk_while_writing_the_results_is_one_clear_error(env, capsys, monkeypatch):
    import errno

    det = TinyResidualDetector()
    weights = save_checkpoint(env / "w.safetensors", det.checkpoint_state(), det.config)
    original = pd.DataFrame.to_csv

    def to_csv(self, path=None, *args, **kwargs):
        if str(path).endswith("scores.csv"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv)
    code = main(["run", "--detector", "tiny-residual", "--suite", "folder", "--set", f"suite.root={env / 'data'}",
                 "--out", str(env / "runs"), "--set", "eval.workers=0", "--weights", str(weights)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("harness:")]
    assert code == 2 and len(err) == 1  # one line (the progress bars aside), no traceback
    assert "cannot write the run folder" in err[0] and "No space left on device" in err[0]


def test_suite_folders_read_the_root_from_the_suites_environment_variable(tmp_path, monkeypatch):
    from harness.pipeline import suite_folders

    monkeypatch.setenv("HARNESS_FOLDER_ROOT", str(tmp_path))
    assert suite_folders({"protocol": {"suite": "folder"}, "suite": {}}) == [tmp_path.resolve()]
