"""fp32 is the default scoring precision on every device; bf16 only on request, and recorded;
the frozen-feature cache computes in the precision asked for."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import torch
from PIL import Image

import harness.runs
from fakedata import real_image
from harness import config as cfg
from harness.feature_cache import cached_features, open_store
from harness.plugins.detectors.univfd import UnivFD
from harness.scoring import effective_precision, score_samples
from harness.suite import Sample

TINY = {"backbone": "tiny", "pretrained": "none", "crop_size": 32,
        "tiny": {"patch_size": 8, "embed_dim": 64, "depth": 1, "num_heads": 2}}


def test_fp32_is_the_default_on_every_device():
    assert cfg.resolve()["eval"]["precision"] == "fp32"
    for device in ("cpu", "cuda"):  # a device object needs no GPU
        assert effective_precision("fp32", torch.device(device)) == "fp32"
        assert effective_precision("auto", torch.device(device)) == "fp32"
    assert effective_precision("bf16", torch.device("cuda")) == "bf16-autocast"
    assert effective_precision("bf16", torch.device("cpu")) == "bf16-weights"


def _samples(tmp_path, n=4):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        path = tmp_path / f"{i}.png"
        Image.fromarray(real_image(rng, 32)).save(path)
        out.append(Sample(str(path), i % 2, "g", "test"))
    return out


def test_the_feature_cache_autocasts_only_when_bf16_is_asked_for(tmp_path, monkeypatch):
    asked = []

    def spy(device, enabled=True):
        asked.append(enabled)
        return contextlib.nullcontext()

    monkeypatch.setattr(harness.runs, "autocast", spy)
    torch.manual_seed(0)
    det = UnivFD({**TINY, "feature_cache_dir": str(tmp_path / "f")})
    samples = _samples(tmp_path)
    cached_features(det, samples)  # default precision
    assert asked and not any(asked)
    asked.clear()
    cached_features(det, samples, precision="bf16-autocast")
    assert asked and all(asked)


def test_the_feature_cache_keys_and_computes_by_precision(tmp_path):
    torch.manual_seed(0)
    det = UnivFD({**TINY, "feature_cache_dir": str(tmp_path / "f")}).eval()
    samples = _samples(tmp_path)
    fp32 = cached_features(det, samples)
    bf16 = cached_features(det, samples, precision="bf16-weights")
    assert fp32.key != bf16.key and bf16.computed == len(samples)  # separate stores, nothing mixed
    x = torch.stack([det.preprocess([Image.open(s.path).convert("RGB")])[0] for s in samples])
    with torch.no_grad():
        exact = det.features(x).numpy()
    np.testing.assert_allclose(fp32.features, exact, rtol=1e-6, atol=1e-6)
    assert not np.array_equal(bf16.features, fp32.features)
    meta = json.loads((open_store(det, "cpu", None, precision="bf16-weights").folder / "meta.json").read_text())
    assert meta["precision"] == "bf16-weights"


def test_score_samples_passes_the_precision_to_the_feature_cache(tmp_path):
    torch.manual_seed(0)
    det = UnivFD({**TINY, "feature_cache_dir": str(tmp_path / "f")})
    samples = _samples(tmp_path)
    default = score_samples(det, samples, device="cpu", cache_dir=None)
    bf16 = score_samples(det, samples, device="cpu", cache_dir=None, precision="bf16")
    assert default.attrs["cache_key"] != bf16.attrs["cache_key"]
    assert open_store(det, "cpu", None).folder.name == default.attrs["cache_key"]
