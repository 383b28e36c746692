"""``harness suite verify NAME --against NAME@VERSION``: published counts and known-bad files."""

from __future__ import annotations

import json

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.manifest import CACHE_ENV
from harness.plugins.suites import fingerprints
from harness.registry import get_suite
from tests.suite_trees import numbered, touch_images


@pytest.fixture
def wildrf(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    root = tmp_path / "WildRF"
    touch_images(root / "train" / "0_real", numbered("r", 4, ".jpg"))
    touch_images(root / "train" / "1_fake", numbered("f", 4, ".jpg"))
    touch_images(root / "test" / "reddit" / "0_real", numbered("r", 2, ".jpg"))
    touch_images(root / "test" / "reddit" / "1_fake", numbered("f", 3, ".jpg"))  # one short of 4
    touch_images(root / "test" / "twitter" / "0_real", numbered("r", 2, ".jpg"))
    touch_images(root / "test" / "twitter" / "1_fake", numbered("bad", 2, ".jpg"))
    # facebook is missing altogether
    return root


def _fingerprint(folder, monkeypatch, **extra):
    data = {"suite": "wildrf", "version": "test", "source": "written by this test",
            "counts": [{"generator": "reddit", "split": "train", "class": "*", "count": 8},
                       {"generator": "reddit", "split": "test", "class": "fake", "count": 4},
                       {"generator": "twitter", "split": "test", "class": "real", "count": 2},
                       {"generator": "facebook", "split": "test", "class": "real", "count": 5},
                       {"generator": "*", "split": ["train", "test"], "class": "real", "count": 8}],
            **extra}
    folder.mkdir(exist_ok=True)
    (folder / "wildrf@test.json").write_text(json.dumps(data))
    monkeypatch.setenv(fingerprints.ENV, str(folder))
    return data


def test_verify_against_names_the_missing_and_short_subsets(wildrf, tmp_path, monkeypatch, capsys):
    _fingerprint(tmp_path / "fp", monkeypatch, known_bad=[
        {"path": "test/twitter/1_fake/bad00001.jpg", "reason": "published as corrupt"},
        {"path": "test/facebook/1_fake/x.jpg", "reason": "not in this copy"}])
    assert main(["suite", "verify", "wildrf", "--set", f"suite.root={wildrf}", "--against", "wildrf@test"]) == 1
    out = capsys.readouterr().out
    table = [line.split() for line in out.splitlines()]
    assert ["reddit", "test", "fake", "4", "3", "short", "by", "1"] in table
    assert ["facebook", "test", "real", "5", "0", "missing"] in table
    assert ["twitter", "test", "real", "2", "2", "ok"] in table
    assert ["*", "train+test", "real", "8", "8", "ok"] in table  # 4 + 2 + 2 distinct reals, summed
    assert "2 subset(s) missing or short: reddit test fake, facebook test real" in out
    assert "known-bad files present: 1 of 2 listed" in out and "test/twitter/1_fake/bad00001.jpg" in out


def test_verify_against_passes_when_every_count_is_there(wildrf, tmp_path, monkeypatch, capsys):
    touch_images(wildrf / "test" / "reddit" / "1_fake", ["f00003.jpg"])
    touch_images(wildrf / "test" / "facebook" / "0_real", numbered("r", 5, ".jpg"))
    touch_images(wildrf / "test" / "facebook" / "1_fake", numbered("f", 1, ".jpg"))
    data = _fingerprint(tmp_path / "fp", monkeypatch)
    data["counts"][-1]["count"] = 13
    (tmp_path / "fp" / "wildrf@test.json").write_text(json.dumps(data))
    assert main(["suite", "verify", "wildrf", "--set", f"suite.root={wildrf}", "--against",
                 str(tmp_path / "fp" / "wildrf@test.json")]) == 0
    assert "every published count is there" in capsys.readouterr().out


def test_compare_counts_distinct_files_against_a_brute_force_count(wildrf):
    from harness.manifest import load_manifest

    suite = get_suite("wildrf")({"root": str(wildrf)})
    table = load_manifest(suite).table
    fp = {"counts": [{"generator": "*", "split": s, "class": c, "count": 0}
                     for s in ("train", "test") for c in ("real", "fake", "*")]}
    result = fingerprints.compare(table, wildrf, fp)
    for check, entry in zip(result["checks"], fp["counts"]):
        rows = [r for r in table.itertuples() if r.split == entry["split"]
                and (entry["class"] == "*" or r.label == {"real": 0, "fake": 1}[entry["class"]])]
        assert check.found == len({r.path for r in rows})


def test_a_fingerprint_for_another_suite_or_a_malformed_one_is_one_line(wildrf, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "fp"
    folder.mkdir()
    (folder / "wildrf@bad.json").write_text(json.dumps({"suite": "wildrf", "version": "bad", "source": "x",
                                                        "counts": [{"generator": "a", "split": "dev",
                                                                    "class": "fake", "count": 1}]}))
    monkeypatch.setenv(fingerprints.ENV, str(folder))
    with pytest.raises(HarnessError, match="counts/0/split"):
        fingerprints.load("wildrf@bad")
    with pytest.raises(HarnessError, match="no fingerprint 'wildrf@nope'"):
        fingerprints.load("wildrf@nope")
    assert main(["suite", "verify", "wildrf", "--set", f"suite.root={wildrf}", "--against", "aigibench@2025"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["harness: error: fingerprint aigibench@2025 describes suite 'aigibench', not 'wildrf'"]


def test_shipped_fingerprints_are_well_formed_and_name_real_subsets(monkeypatch):
    monkeypatch.delenv(fingerprints.ENV, raising=False)
    shipped = fingerprints.available()
    assert {"aigibench@2025", "drct2m@2024", "openfake@2025", "synthbuster@2023"} <= set(shipped)
    for spec in shipped:
        data = fingerprints.load(spec)  # schema-checked
        assert spec == f"{data['suite']}@{data['version']}"
        suite_cls = get_suite(data["suite"])
        published = suite_cls({}).generators() if data["suite"] not in ("openfake",) else []
        for entry in data["counts"]:
            assert entry["generator"] == "*" or entry["generator"] in published, (spec, entry)
