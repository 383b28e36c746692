"""The embedded mini suite (tiny preset): deterministic, disjoint regions, paired fakes, a real signal."""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression

from harness.cli import main
from harness.errors import HarnessError
from harness.manifest import CACHE_ENV, load_manifest
from harness.plugins.suites import mini
from harness.plugins.suites._mini_models import FAMILIES


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The tiny preset built twice: by ``harness suite build`` into the default cache, and by ``build()``."""
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(cache)
    try:
        assert main(["suite", "build", "mini", "--set", "suite.preset=tiny"]) == 0
        first = cache / "mini" / f"tiny-v{mini.VERSION}"
        rng_before = torch.random.get_rng_state()
        second = mini.build(tmp_path_factory.mktemp("again") / "mini", preset="tiny", progress=False)
        yield SimpleNamespace(first=first, second=second,
                              rng_untouched=torch.equal(rng_before, torch.random.get_rng_state()))
    finally:
        if old is None:
            os.environ.pop(CACHE_ENV, None)
        else:
            os.environ[CACHE_ENV] = old


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_builds_twice_to_identical_files(built):
    first, second = built.first, built.second
    a, b = _files(first), _files(second)
    assert len(a) > 1000
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []


def test_build_leaves_the_global_random_state_alone(built):
    assert built.rng_untouched


def test_a_build_of_another_preset_is_not_mistaken_for_the_asked_one(built):
    with pytest.raises(HarnessError, match="preset 'tiny'.*preset 'default'"):
        mini.MiniSuite({"root": str(built.second)}).root_path()


def test_building_into_a_foreign_folder_is_refused(tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(HarnessError, match="not empty"):
        mini.build(tmp_path, preset="tiny", progress=False)
    assert (tmp_path / "mine.txt").read_text() == "user data"


def test_first_use_reuses_the_cached_build_and_reads_through_genimage(built, monkeypatch):
    first = built.first
    monkeypatch.setenv(CACHE_ENV, str(first.parent.parent))
    suite = mini.MiniSuite({"preset": "tiny"})
    assert suite.root_path() == first  # found, not rebuilt
    samples = load_manifest(suite).samples
    assert list(dict.fromkeys(s.generator for s in samples)) == list(FAMILIES)
    assert {s.split for s in samples} == {"train", "val", "test"}
    record = json.loads((first / mini.MARKER).read_text())
    counts = collections.Counter((s.generator, s.split, s.label) for s in samples)
    for family in FAMILIES:
        expected = record["crops_per_generator_per_class"][family]
        assert counts[(family, "test", 0)] == counts[(family, "test", 1)] == expected["test"]
        assert counts[(family, "train", 1)] + counts[(family, "val", 1)] == expected["train"]
    # Every fake has its real pair: same name, same split, same generator folder.
    reals = {s.path: s for s in samples if s.label == 0}
    for s in samples:
        if s.label == 1:
            assert s.pair in reals and reals[s.pair].split == s.split
            assert Path(s.pair).name == Path(s.path).name


def test_sources_are_recorded_and_regions_are_disjoint(built):
    first = built.first
    record = json.loads((first / mini.MARKER).read_text())
    crop = record["settings"]["crop"]
    used = {src["name"]: src for src in record["sources"] if src["used"]}
    assert set(used) == set(mini.PRESETS["tiny"]["photos"])
    for src in used.values():
        assert src["licence"] and len(src["sha256"]) == 64
    photos = {}
    for name, package, inner, _ in mini.PHOTOS:
        if name in used:
            photos[name] = np.asarray(Image.open(mini._photo_file(package, inner)).convert("RGB"))
    # Each real crop is the photo region its name says; train and test regions never overlap.
    covered = {name: np.zeros(arr.shape[:2], np.int8) for name, arr in photos.items()}
    for folder, mark in (("train", 1), ("val", 2)):
        for path in sorted((first / "tconv" / folder / "nature").glob("*.png")):
            name, y, x = path.stem.rsplit("_", 2)
            y, x = int(y[1:]), int(x[1:])
            region = photos[name][y:y + crop, x:x + crop]
            np.testing.assert_array_equal(np.asarray(Image.open(path)), region)
            assert not np.any(covered[name][y:y + crop, x:x + crop] == 3 - mark)
            covered[name][y:y + crop, x:x + crop] = mark
    assert all((c == 1).any() and (c == 2).any() for c in covered.values())


def test_families_are_different_reconstructions_of_the_same_crop(built):
    first = built.first
    name = sorted((first / "tconv" / "val" / "nature").glob("*.png"))[0].name
    real = np.asarray(Image.open(first / "tconv" / "val" / "nature" / name)).astype(float)
    fakes = {f: np.asarray(Image.open(first / f / "val" / "ai" / name)).astype(float) for f in FAMILIES}
    for family, fake in fakes.items():
        # Shared real crops are the same file in every generator folder.
        assert (first / family / "val" / "nature" / name).read_bytes() == (
            first / "tconv" / "val" / "nature" / name).read_bytes()
        assert fake.shape == real.shape
        psnr = 10 * np.log10(255**2 / np.mean((fake - real) ** 2))
        assert 10 < psnr < 60, (family, psnr)
    for a in FAMILIES:
        for b in FAMILIES:
            if a < b:
                assert np.abs(fakes[a] - fakes[b]).mean() > 0.5, (a, b)


def _residual_features(paths: list[str]) -> np.ndarray:
    """Log spectrum of the nearest-neighbour residual (NPR-style), pooled to 8x8 bins."""
    feats = []
    for path in paths:
        x = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64).mean(axis=2)
        up = np.repeat(np.repeat(x[::2, ::2], 2, axis=0), 2, axis=1)
        spectrum = np.abs(np.fft.fft2(x - up))
        n = spectrum.shape[0] // 8
        pooled = spectrum.reshape(8, n, 8, n).mean(axis=(1, 3))
        feats.append(np.log1p(pooled).ravel())
    return np.array(feats)


def test_a_simple_detector_trained_on_one_generator_beats_chance_on_it(built):
    first = built.first
    suite = mini.MiniSuite({"root": str(first), "preset": "tiny"})
    samples = [s for s in load_manifest(suite).samples if s.generator == "tconv"]
    train = [s for s in samples if s.split == "train"]
    test = [s for s in samples if s.split == "test"]
    model = LogisticRegression(max_iter=2000, C=1.0)
    model.fit(_residual_features([s.path for s in train]), [s.label for s in train])
    predicted = model.predict(_residual_features([s.path for s in test]))
    labels = np.array([s.label for s in test])
    balanced = 0.5 * ((predicted[labels == 0] == 0).mean() + (predicted[labels == 1] == 1).mean())
    assert len(test) >= 100
    assert balanced > 0.8, balanced
