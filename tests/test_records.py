"""Leaderboard records: building from a run folder, the schema validator, integrity and naming."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import records as rec
from harness.errors import HarnessError
from harness.runs import config_hash

GENERATORS = ["tconv", "nearest", "bilinear", "pixelshuffle", "vqvae", "denoiser"]


def make_scores(accs: dict[str, float], n: int = 40, lost_class: dict[str, int] | None = None) -> pd.DataFrame:
    """``n`` images per generator (half real, half fake) of which round(acc * n) are on the right side of 0;
    ``lost_class`` drops every image of one label in a generator (all unreadable, say)."""
    rows = []
    for g, acc in accs.items():
        right = round(acc * n)
        for i in range(n):
            label = i % 2
            sign = 1.0 if i < right else -1.0  # correct: fakes above 0, reals below
            logit = sign * (0.5 + i / n) * (1 if label else -1)
            if (lost_class or {}).get(g) != label:
                rows.append((f"/img/{g}/{i}.png", g, "test", label, logit))
    return pd.DataFrame(rows, columns=["path", "generator", "split", "label", "logit"])


def make_run(folder: Path, detector: str = "npr", *, seed: int = 0, shift: float = 0.0,
             started: str = "2026-11-22T00:10:00Z", analyses: bool = True, weights_file: bool = True,
             lost_class: dict[str, int] | None = None, suite: str = "mini") -> Path:
    """A finished run folder as the pipeline writes it: config.json, environment.json, scores.csv, results.json
    (its metrics computed from the scores as the pipeline does), analyses/."""
    from harness.metrics import evaluate
    from harness.pipeline import json_safe

    folder.mkdir(parents=True, exist_ok=True)
    accs = {g: min(1.0, round(0.95 - 0.07 * i + shift, 6)) for i, g in enumerate(GENERATORS)}
    config = {"run": {"seed": seed, "device": "cpu", "detector": detector, "suite": suite, "profile": "mini",
                      "benchmark": "mini"},
              "detector": {"width": 8}, "suite": {"preset": "tiny"}, "eval": {"bootstrap": 50},
              "train": {"epochs": 2, "lr": 1e-3},
              "analyses": {}, "protocol": {"suite": suite, "train_generators": ["tconv"]}}
    env = {"python": "3.11.7", "packages": {"aigi-harness": "0.1.0", "torch": "2.4.0"},
           "plugins": {detector: {"distribution": "aigi-harness", "version": "0.1.0", "broken": False}},
           "git_revision": "0123456789abcdef0123456789abcdef01234567", "device": "cpu",
           "hardware": {"platform": "Linux", "processor": "x86_64", "cpu_count": 2}, "seed": seed,
           "torch_threads": 2, "started": started}
    weights = folder / "checkpoints" / "best.safetensors"
    if weights_file:
        weights.parent.mkdir(exist_ok=True)
        weights.write_bytes(f"weights of {detector} {shift}".encode())
    scores = make_scores(accs, lost_class=lost_class)
    scores.to_csv(folder / "scores.csv", index=False)
    results = {
        "schema": 1, "detector": detector, "suite": suite, "benchmark": "mini", "train_generators": ["tconv"],
        "test_generators": GENERATORS,
        "weights": {"path": str(weights), "sha256": "ab" * 32, "trained_in_run": True},
        "manifest_hash": "f00d" * 16,
        "metrics": json_safe(evaluate(scores, None, generators=GENERATORS, n_boot=50, seed=seed)),
        "analyses": {}, "skipped": [{"path": "/x/broken.png", "reason": "truncated"}], "seed": seed,
    }
    if analyses:
        results["analyses"] = {
            "tde": {"grid": 8, "fill": 0.0, "images": 24, "skipped": 0, "few_patch_bias": 0.4 + shift,
                    "effective_patches": 30.0, "gini": 0.5, "top1_share": 0.1, "active_fraction": 0.3,
                    "few_patch_bias_per_generator": {"tconv": 0.3, "nearest": None}},
            "masking": {"grid": 8, "fill": 0.0, "images": 24, "skipped": 0, "recall_clean": 0.9, "acc_clean": 0.85,
                        "recall_decline": {"0.0": 0.0, "0.5": 0.3 + shift, "0.1": 0.05},
                        "acc": {"0.0": 0.85, "0.1": 0.8, "0.5": 0.6},
                        "square_acc_drop": {"0.125": 0.01, "0.25": 0.05},
                        "targeted_recall": {"top": {"0.1": 0.5}, "bottom": {"0.1": 0.88}}},
            "corruptions": {"images": 24, "skipped": 0,
                            "mAcc": {"jpeg none": 0.85, "jpeg q=90": 0.8, "jpeg q=60": 0.7, "blur sigma=0": 0.85,
                                     "blur sigma=1.5": 0.65, "resize scale=0.6": 0.6, "resize scale=1": 0.85}},
        }
        tde_dir = folder / "analyses" / "tde"
        tde_dir.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        frame = pd.DataFrame({"path": [f"/img/{i}.png" for i in range(24)], "generator": "tconv",
                              "label": [i % 2 for i in range(24)],
                              "effective_patches": rng.uniform(1, 64, 24), "gini": rng.uniform(0, 1, 24),
                              "few_patch_bias": rng.uniform(0, 1, 24)})
        frame.loc[3, "gini"] = np.nan  # an image with no positive evidence has no Gini
        frame.to_csv(tde_dir / "per_image.csv", index=False)
        (tde_dir / "tde_mean_heatmaps.png").write_bytes(_png_bytes())
    for name, payload in (("config.json", config), ("environment.json", env), ("results.json", results)):
        (folder / name).write_text(json.dumps(payload, indent=2))
    return folder


def _png_bytes() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def reported_record(label: str = "UnivFD", acc: float = 0.9) -> dict:
    return rec.seal({
        "schema": rec.SCHEMA_ID, "schema_version": rec.SCHEMA_VERSION, "kind": "reported", "benchmark": "mini",
        "suite": "mini", "manifest_hash": None,
        "detector": {"name": label.lower(), "label": label},
        "weights": {"sha256": None, "trained_in_run": None},
        "protocol": {"train_generators": ["tconv"], "test_generators": ["tconv", "nearest"]},
        "metrics": {"per_generator": {"tconv": {"acc": acc}, "nearest": {"acc": acc - 0.1}},
                    "summary": {"mAcc": acc - 0.05, "std": 0.05, "worst_generator": "nearest"}},
        "source": {"citation": "A paper", "table": "Table 9"},
        "assets": [],
    })


@pytest.fixture()
def record(tmp_path):
    return rec.build_record(make_run(tmp_path / "run"))


# -- building ----------------------------------------------------------------------------------------------------

def test_record_carries_the_run_provenance_and_metrics(tmp_path):
    run = make_run(tmp_path / "run")
    record = rec.build_record(run)
    config = json.loads((run / "config.json").read_text())
    results = json.loads((run / "results.json").read_text())
    assert rec.validate_schema(record) == []
    assert record["kind"] == "reproduced" and record["benchmark"] == "mini" and record["suite"] == "mini"
    assert record["detector"]["name"] == "npr" and record["detector"]["plugin_version"] == "0.1.0"
    assert record["detector"]["config_hash"] == config_hash(config)
    assert record["weights"] == {"sha256": "ab" * 32, "trained_in_run": True, "file": "best.safetensors",
                                 "training_config": config["train"]}
    assert record["manifest_hash"] == results["manifest_hash"]
    assert record["protocol"]["train_generators"] == ["tconv"]
    assert record["protocol"]["test_generators"] == GENERATORS
    for gen in GENERATORS:
        assert record["metrics"]["per_generator"][gen]["acc"] == results["metrics"]["per_generator"][gen]["acc"]
        assert record["metrics"]["per_generator"][gen]["auc"] == results["metrics"]["per_generator"][gen]["auc"]
    summary = record["metrics"]["summary"]
    assert summary["mAcc"] == pytest.approx(np.mean([results["metrics"]["per_generator"][g]["acc"] for g in GENERATORS]))
    assert summary["worst_generator"] == "denoiser" and len(summary["mAcc_ci95"]) == 2
    prov = record["provenance"]
    assert prov["git_revision"].startswith("0123456789") and prov["seed"] == 0
    assert prov["hardware"]["cpu_count"] == 2 and prov["date"] == "2026-11-22T00:10:00Z"
    assert prov["harness_version"] == "0.1.0" and prov["skipped_files"] == 1


def test_analysis_summaries_become_curves_and_distributions(record, tmp_path):
    tde = record["tde"]
    assert tde["grid"] == 8
    assert tde["stats"] == {"few_patch_bias": 0.4, "effective_patches": 30.0, "gini": 0.5, "top1_share": 0.1,
                            "active_fraction": 0.3}
    assert tde["few_patch_bias_per_generator"] == {"tconv": 0.3, "nearest": None}
    # Quantiles over the fake images only, against numpy on the same column.
    frame = pd.read_csv(tmp_path / "run" / "analyses" / "tde" / "per_image.csv")
    fakes = frame[frame.label == 1]
    for stat in ("effective_patches", "gini", "few_patch_bias"):
        values = fakes[stat].dropna().to_numpy()
        expected = np.quantile(values, [0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
        assert tde["distribution"][stat]["n"] == len(values)
        assert tde["distribution"][stat]["quantiles"] == pytest.approx(expected, abs=1e-6)
    assert tde["distribution"]["gini"]["n"] == 11  # 12 fakes, one without a Gini

    masking = record["masking"]
    assert masking["recall_decline"]["x"] == [0.0, 0.1, 0.5]  # sorted by ratio, not by key order
    assert masking["recall_decline"]["y"] == [0.0, 0.05, 0.3]
    assert masking["random_acc"]["y"] == [0.85, 0.8, 0.6]
    assert masking["single_patch_acc_drop"]["x"] == [0.125, 0.25]
    assert masking["targeted_recall"]["top"]["y"] == [0.5]
    assert masking["stats"] == {"recall_clean": 0.9, "acc_clean": 0.85}

    corruptions = record["corruptions"]
    assert corruptions["jpeg"]["x"] == ["none", 90.0, 60.0] and corruptions["jpeg"]["y"] == [0.85, 0.8, 0.7]
    assert corruptions["blur"]["x"] == [0.0, 1.5]
    assert corruptions["resize"]["x"] == [0.6, 1.0] and corruptions["resize"]["y"] == [0.6, 0.85]


def test_run_without_analyses_gives_null_sections(tmp_path):
    record = rec.build_record(make_run(tmp_path / "run", analyses=False))
    assert record["tde"] is None and record["masking"] is None and record["corruptions"] is None
    assert rec.validate_schema(record) == []


@pytest.mark.parametrize("broken, message", [
    ("results.json", "results.json is missing"),
    ("per_generator", "no per-generator metrics"),
    ("schema", "unsupported results schema"),
    ("json", "not a readable run file"),
])
def test_unfinished_or_foreign_run_folders_are_refused(tmp_path, broken, message):
    run = make_run(tmp_path / "run")
    results = json.loads((run / "results.json").read_text())
    if broken == "results.json":
        (run / "results.json").unlink()
    elif broken == "json":
        (run / "results.json").write_text("{not json")
    else:
        if broken == "per_generator":
            results["metrics"]["per_generator"] = {}
        else:
            results["schema"] = 7
        (run / "results.json").write_text(json.dumps(results))
    with pytest.raises(HarnessError, match=message):
        rec.build_record(run)


# -- schema ------------------------------------------------------------------------------------------------------

def _mutations():
    def set_path(path, value):
        def apply(r):
            node = r
            for key in path[:-1]:
                node = node[key]
            if value is KeyError:
                del node[path[-1]]
            else:
                node[path[-1]] = value
        return apply

    return {
        "missing detector name": (set_path(["detector", "name"], KeyError), "$.detector: 'name' is a required property"),
        "accuracy above 1": (set_path(["metrics", "per_generator", "tconv", "acc"], 97.5), "$.metrics.per_generator.tconv.acc: 97.5 is greater than the maximum of 1"),
        "unknown kind": (set_path(["kind"], "guessed"), "$.kind: 'guessed' is not one of"),
        "benchmark with a path": (set_path(["benchmark"], "../elsewhere"), "$.benchmark"),
        "detector name with a slash": (set_path(["detector", "name"], "a/b"), "$.detector.name"),
        "unexpected key": (set_path(["comment"], "hi"), "'comment' was unexpected"),
        "reproduced without provenance": (set_path(["provenance"], KeyError), "$: 'provenance' is a required property"),
        "NaN metric": (set_path(["metrics", "summary", "mAcc"], float("nan")), "$.metrics.summary.mAcc: nan is not of type 'number'"),
        "boolean as number": (set_path(["metrics", "summary", "std"], True), "$.metrics.summary.std"),
        "asset outside": (set_path(["assets"], [{"path": "../../etc/passwd", "sha256": "0" * 64}]), "$.assets[0].path"),
        "short sha": (set_path(["weights", "sha256"], "abc"), "$.weights.sha256"),
        "wrong schema version": (set_path(["schema_version"], 2), "$.schema_version"),
        "empty per-generator": (set_path(["metrics", "per_generator"], {}), "$.metrics.per_generator: {} should be non-empty"),
        "ci with three ends": (set_path(["metrics", "summary", "mAcc_ci95"], [0.1, 0.2, 0.3]), "$.metrics.summary.mAcc_ci95: [0.1, 0.2, 0.3] is too long"),
    }


@pytest.mark.parametrize("name", sorted(_mutations()))
def test_schema_rejects_each_defect_and_names_where(record, name):
    mutate, expected = _mutations()[name]
    bad = copy.deepcopy(record)
    mutate(bad)
    errors = rec.validate_schema(bad)
    assert errors, f"{name} was accepted"
    assert any(expected in e for e in errors), errors


def test_reported_record_needs_its_source():
    good = reported_record()
    assert rec.validate_schema(good) == []
    bad = copy.deepcopy(good)
    del bad["source"]
    assert any("$: 'source' is a required property" in e for e in rec.validate_schema(bad))


# -- integrity and names -----------------------------------------------------------------------------------------

def test_any_edit_breaks_the_integrity_hash(record):
    assert rec.check_record(record) == []
    edited = copy.deepcopy(record)
    edited["metrics"]["per_generator"]["nearest"]["acc"] = 0.99
    assert any("content hash does not match" in p for p in rec.check_record(edited))
    assert rec.check_record(rec.seal(edited)) == []  # resealed: consistent again, but under a new hash
    assert rec.seal(edited)["integrity"]["content_hash"] != record["integrity"]["content_hash"]


def test_content_hash_is_independent_of_key_order(record):
    shuffled = json.loads(json.dumps(record, sort_keys=False))
    reordered = dict(reversed(list(shuffled.items())))
    assert rec.content_hash(reordered) == record["integrity"]["content_hash"]


def test_file_names_never_collide_between_contributors(tmp_path):
    a = rec.build_record(make_run(tmp_path / "a", seed=0))
    b = rec.build_record(make_run(tmp_path / "b", seed=1))  # same detector, same day, another run
    name_a, name_b = rec.record_filename(a), rec.record_filename(b)
    assert name_a.startswith("npr-20261122-") and name_a.endswith(".json")
    assert name_a != name_b
    assert rec.record_filename(reported_record()).startswith("univfd-reported-")
    assert rec.check_record(a, file_name=name_b) == [f"file name should be {name_a} for this content"]


def test_the_same_run_read_twice_is_one_duplicate_key(tmp_path):
    run = make_run(tmp_path / "run")
    assert rec.duplicate_key(rec.build_record(run)) == rec.duplicate_key(rec.build_record(run))
    other = rec.build_record(make_run(tmp_path / "other", seed=3))
    assert rec.duplicate_key(other) != rec.duplicate_key(rec.build_record(run))


def test_resolve_inside_refuses_every_way_out(tmp_path):
    base = tmp_path / "lb" / "mini"
    (base / "assets" / "x").mkdir(parents=True)
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"x")
    (base / "assets" / "x" / "link.png").symlink_to(outside)
    assert rec.resolve_inside(base, "assets/x/a.png") == (base / "assets" / "x" / "a.png").resolve()
    for bad in ("../secret.png", "assets/../../secret.png", str(outside), "assets\\..\\..\\secret.png",
                "assets/x/link.png", ""):
        assert rec.resolve_inside(base, bad) is None, bad


def test_load_record_refuses_nan_and_broken_json(tmp_path):
    path = tmp_path / "r.json"
    path.write_text('{"a": NaN}')
    with pytest.raises(HarnessError, match="NaN"):
        rec.load_record(path)
    path.write_text("{")
    with pytest.raises(HarnessError, match="r.json"):
        rec.load_record(path)


def test_plugin_version_of_a_detector_registered_under_another_plugin_name(tmp_path):
    """``naive`` is registered by the ``ppl`` plugin: its record names that plugin and its version."""
    from harness.registry import get_plugins

    plugins = get_plugins()
    name = next((n for n in plugins.registry["detector"] if plugins.owner("detector", n).name != n), None)
    if name is None:
        pytest.skip("no installed detector is registered under another plugin's name")
    owner = plugins.owner("detector", name).name
    run = make_run(tmp_path / "run", name)
    env = json.loads((run / "environment.json").read_text())
    env["plugins"] = {owner: {"distribution": "aigi-harness", "version": "9.9.9", "broken": False}}
    (run / "environment.json").write_text(json.dumps(env))
    record = rec.build_record(run)
    assert record["detector"]["plugin"] == owner and record["detector"]["plugin_version"] == "9.9.9"
