"""The frozen-feature cache: hits skip the backbone, keys invalidate, training and scoring read it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from sklearn.metrics import roc_auc_score

from fakedata import real_image
from harness.feature_cache import (
    FeatureStore,
    cached_features,
    open_store,
    score_cached,
    train_head,
    uses_feature_cache,
)
from harness.suite import Sample
from harness.plugins.detectors.univfd import UnivFD

TINY = {"backbone": "tiny", "pretrained": "none", "crop_size": 64,
        "tiny": {"patch_size": 8, "embed_dim": 64, "depth": 1, "num_heads": 2}}


def write_blur_pairs(folder: Path, n: int, seed: int, split: str, size: int = 64) -> list[Sample]:
    """Real textured images and fakes that are their smoothed reconstructions (the trace an
    autoencoder generator leaves: missing high frequencies)."""
    rng = np.random.default_rng(seed)
    (folder / "real").mkdir(parents=True, exist_ok=True)
    (folder / "fake").mkdir(parents=True, exist_ok=True)
    reals, fakes = [], []
    for i in range(n):
        real = Image.fromarray(real_image(rng, size))
        rp, fp = folder / "real" / f"{i:04d}.png", folder / "fake" / f"{i:04d}.png"
        real.save(rp)
        real.filter(ImageFilter.GaussianBlur(1.0)).save(fp)
        reals.append(Sample(str(rp), 0, "blur", split))
        fakes.append(Sample(str(fp), 1, "blur", split, pair=str(rp)))
    return reals + fakes


class CountingBackbone(torch.nn.Module):
    """Wraps the backbone and counts the images it sees."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.facts = inner.facts
        self.model = inner.model
        self.images = 0

    def forward(self, x):
        self.images += x.shape[0]
        return self.inner(x)


def make_detector(tmp_path: Path, **extra) -> UnivFD:
    torch.manual_seed(0)
    det = UnivFD({**TINY, "feature_cache_dir": str(tmp_path / "features"), **extra})
    det.backbone = CountingBackbone(det.backbone)
    return det


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("blur")
    return {
        "train": write_blur_pairs(root / "train", 100, 0, "train"),
        "val": write_blur_pairs(root / "val", 30, 1, "val"),
        "test": write_blur_pairs(root / "test", 60, 2, "test"),
    }


def test_univfd_opts_in():
    det = UnivFD(TINY)
    assert uses_feature_cache(det)
    assert not uses_feature_cache(UnivFD({**TINY, "cache_features": False}))


def test_cache_hit_does_not_call_the_backbone(tmp_path, data):
    det = make_detector(tmp_path)
    samples = data["test"][:20]
    first = cached_features(det, samples, batch_size=8)
    assert det.backbone.images == 20 and first.computed == 20 and first.hits == 0
    again = cached_features(det, samples, batch_size=8)
    assert det.backbone.images == 20, "a cache hit ran the backbone"
    assert again.hits == 20 and again.computed == 0
    assert np.array_equal(first.features, again.features)
    # A new process (a fresh store object) reads the shards from disk.
    fresh = make_detector(tmp_path)
    fresh.backbone.inner.load_state_dict(det.backbone.inner.state_dict())
    third = cached_features(fresh, samples, batch_size=8)
    assert fresh.backbone.images == 0 and np.array_equal(third.features, first.features)


def test_cached_scores_equal_direct_forward(tmp_path, data):
    det = make_detector(tmp_path)
    torch.nn.init.normal_(det.head.weight, 0, 1.0)
    samples = data["test"][:10] + data["test"][60:70]
    score_cached(det, samples, batch_size=8)
    df = score_cached(det, samples, batch_size=8)
    assert df.attrs["cached"] == 20 and df.attrs["scored"] == 0
    # Independent reference: preprocess each image and run the full model.
    with torch.no_grad():
        direct = [float(det(det.preprocess([Image.open(s.path).convert("RGB")])[0][None])) for s in samples]
    assert list(df["path"]) == [s.path for s in samples]
    assert list(df["label"]) == [s.label for s in samples]
    np.testing.assert_allclose(df["logit"].to_numpy(), direct, rtol=1e-5, atol=1e-5)


def test_keys_follow_file_transform_and_backbone(tmp_path, data):
    det = make_detector(tmp_path)
    src = Path(data["test"][0].path)
    img = tmp_path / "edited.png"
    img.write_bytes(src.read_bytes())
    sample = [Sample(str(img), 0, "g", "test")]
    base = cached_features(det, sample).features.copy()
    # An edited file is recomputed.
    Image.open(src).transpose(Image.FLIP_LEFT_RIGHT).save(img)
    edited = cached_features(det, sample)
    assert edited.computed == 1 and not np.array_equal(edited.features, base)
    # A named transform gets its own entries; an unnamed one is never cached.
    flip = lambda im: im.transpose(Image.FLIP_TOP_BOTTOM)  # noqa: E731
    assert cached_features(det, sample, transform=flip, transform_key="flip").computed == 1
    assert cached_features(det, sample, transform=flip, transform_key="flip").hits == 1
    calls = det.backbone.images
    cached_features(det, sample, transform=flip)
    cached_features(det, sample, transform=flip)
    assert det.backbone.images == calls + 2
    # Other backbone weights -> another key.
    key = open_store(det, "cpu", tmp_path / "features").folder.name
    other = make_detector(tmp_path)
    assert open_store(other, "cpu", tmp_path / "features").folder.name == key  # same seed, same weights
    with torch.no_grad():
        other.backbone.inner.model.patch_embed.proj.weight.mul_(2)
    assert open_store(other, "cpu", tmp_path / "features").folder.name != key
    assert cached_features(other, sample).computed == 1


def test_undecodable_files_are_reported_not_cached(tmp_path, data):
    det = make_detector(tmp_path)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    broken = tmp_path / "broken.png"
    broken.write_bytes(Path(data["test"][0].path).read_bytes()[:60])
    samples = [data["test"][0], Sample(str(empty), 0, "g", "test"), Sample(str(broken), 1, "g", "test"),
               Sample(str(tmp_path / "missing.png"), 1, "g", "test")]
    table = cached_features(det, samples)
    assert table.valid.tolist() == [True, False, False, False]
    reasons = dict(table.skipped)
    assert set(reasons) == {str(empty), str(broken), str(tmp_path / "missing.png")}
    assert "zero-byte" in reasons[str(empty)]
    df = score_cached(det, samples)
    assert list(df["path"]) == [data["test"][0].path] and len(df.attrs["skipped"]) == 3


def test_interrupted_shard_is_ignored(tmp_path):
    store = FeatureStore(tmp_path / "k", {"schema": 1})
    store.add(["a", "b"], np.ones((2, 3), dtype=np.float32))
    np.save(tmp_path / "k" / "torn.npy", np.zeros((5, 3), dtype=np.float32))  # no index: interrupted
    (tmp_path / "k" / "bad.json").write_text(json.dumps(["c"]))  # index without its array
    again = FeatureStore(tmp_path / "k", {"schema": 1})
    assert len(again) == 2 and "a" in again and "c" not in again
    assert again.get("b").tolist() == [1.0, 1.0, 1.0]


def test_head_trained_through_the_cache_beats_chance(tmp_path, data):
    det = make_detector(tmp_path)
    config = {"run": {"seed": 0},
              "train": {"epochs": 60, "batch_size": 32, "lr": 3e-2, "weight_decay": 0.0, "patience": 8}}
    ckpt = train_head(det, data["train"], data["val"], config=config, run_dir=tmp_path / "run", device="cpu")
    assert det.backbone.images == len(data["train"]) + len(data["val"])
    meta = json.loads(ckpt.with_suffix(".json").read_text())
    assert meta["kind"] == "best" and meta["val"]["acc"] > 0.7
    summary = json.loads((tmp_path / "run" / "training.json").read_text())
    assert summary["train_generators"] == ["blur"] and summary["epochs_run"] >= 1

    df = score_cached(det, data["test"])
    acc = float(((df["logit"] > 0).astype(int) == df["label"]).mean())
    auc = roc_auc_score(df["label"], df["logit"])
    assert acc > 0.7 and auc > 0.8, (acc, auc)

    # Training again reads every feature from the cache: the backbone never runs.
    seen = det.backbone.images
    train_head(det, data["train"], data["val"], config=config, run_dir=tmp_path / "run2", device="cpu")
    assert det.backbone.images == seen

    # The saved head reproduces the scores in a fresh detector.
    other = make_detector(tmp_path)
    other.backbone.inner.load_state_dict(det.backbone.inner.state_dict())
    other.load_weights(ckpt)
    again = score_cached(other, data["test"])
    assert other.backbone.images == 0
    np.testing.assert_allclose(again["logit"].to_numpy(), df["logit"].to_numpy(), rtol=1e-6)

    # The backbone is random-init, so the checkpoint carries it: a detector drawn under another
    # seed gets it back, scores the same and reads the same cache entries.
    torch.manual_seed(123)
    reseeded = UnivFD({**TINY, "feature_cache_dir": str(tmp_path / "features")})
    reseeded.backbone = CountingBackbone(reseeded.backbone)
    assert reseeded.feature_identity() != det.feature_identity()
    reseeded.load_weights(ckpt)
    assert reseeded.feature_identity() == det.feature_identity()
    third = score_cached(reseeded, data["test"])
    assert reseeded.backbone.images == 0
    np.testing.assert_allclose(third["logit"].to_numpy(), df["logit"].to_numpy(), rtol=1e-6)


def test_training_and_scoring_engines_take_the_cached_path(tmp_path, data):
    from harness.scoring import score_samples
    from harness.training import train

    det = make_detector(tmp_path)
    config = {"run": {"seed": 0}, "train": {"epochs": 5, "batch_size": 32, "lr": 3e-3}}
    ckpt = train(det, data["train"][:40] + data["train"][100:140], data["val"], config=config,
                 run_dir=tmp_path / "run", device="cpu")
    assert ckpt.name == "best.safetensors" and ckpt.is_file()
    seen = det.backbone.images
    df = score_samples(det, data["train"][:40] + data["train"][100:140], device="cpu")
    assert det.backbone.images == seen  # every training image was cached during training
    assert len(df) == 80 and list(df.columns[:5]) == ["path", "generator", "split", "label", "logit"]


def test_training_without_a_val_split_reads_the_stored_train_features(tmp_path, data):
    det = make_detector(tmp_path)
    config = {"run": {"seed": 0}, "train": {"epochs": 2, "batch_size": 32, "lr": 1e-2}}
    train_head(det, data["train"], [], config=config, run_dir=tmp_path / "run", device="cpu")
    seen = det.backbone.images
    # the second time every train feature is stored and the val list is empty: nothing to look up
    ckpt = train_head(det, data["train"], [], config=config, run_dir=tmp_path / "run2", device="cpu")
    assert det.backbone.images == seen and ckpt.is_file()


def test_a_malformed_index_is_ignored_and_its_images_recomputed(tmp_path, caplog):
    store = FeatureStore(tmp_path / "k", {"schema": 1})
    store.add(["a", "b"], np.ones((2, 3), dtype=np.float32))
    np.save(tmp_path / "k" / "odd.npy", np.zeros((1, 3), dtype=np.float32))
    (tmp_path / "k" / "odd.json").write_text("5")  # valid JSON, not a list of keys
    np.save(tmp_path / "k" / "odd2.npy", np.zeros((1, 3), dtype=np.float32))
    (tmp_path / "k" / "odd2.json").write_text(json.dumps([{"key": 1}]))
    with caplog.at_level("WARNING", logger="harness.feature_cache"):
        again = FeatureStore(tmp_path / "k", {"schema": 1})
    assert len(again) == 2 and "a" in again
    assert sum("not a list of image keys" in r.getMessage() for r in caplog.records) == 2


@pytest.mark.parametrize("problem", ["a file in the way", "full disk"])
def test_an_unwritable_feature_cache_is_a_warning_and_features_are_still_computed(tmp_path, data, monkeypatch,
                                                                                   caplog, problem):
    import errno

    samples = data["test"][:8]
    expected = cached_features(make_detector(tmp_path / "good"), samples, batch_size=8).features
    det = make_detector(tmp_path)
    if problem == "a file in the way":
        (tmp_path / "features").write_text("in the way")
    else:
        def full_disk(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(np, "save", full_disk)
    with caplog.at_level("WARNING", logger="harness.feature_cache"):
        table = cached_features(det, samples, batch_size=8)
    assert table.valid.all() and np.array_equal(table.features, expected)
    assert any("cannot write the feature cache" in r.getMessage() for r in caplog.records)
    if problem == "full disk":
        assert not list((tmp_path / "features").rglob("*.npy"))  # nothing half-written left behind
