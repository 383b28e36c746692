"""Degradation chains of the corruptions analysis: each changes the image as specified (quality read
back from the output's quantisation tables, noise std measured, output size), missing encoders are
reported skips, and the analysis scores, caches and plots them."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import torch
from PIL import Image, features

from harness.analysis import AnalysisContext
from harness.errors import HarnessError
from harness.images import jpeg_roundtrip
from harness.plugins.analyses import corruptions as corr
from harness.shortcuts import estimate_jpeg_quality
from tests.test_corruptions import Texture, make_samples


def textured(size=64, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    smooth = np.kron(rng.uniform(40, 215, (size // 8, size // 8, 3)), np.ones((8, 8, 1)))
    return Image.fromarray(np.clip(smooth + rng.normal(0, 10, smooth.shape), 0, 255).astype(np.uint8))


def quality_of(data: bytes) -> tuple[str, int | None]:
    with Image.open(io.BytesIO(data)) as img:
        return img.format, estimate_jpeg_quality(getattr(img, "quantization", None) or {})


def test_double_jpeg_is_two_pillow_round_trips_ending_at_the_second_quality():
    img = textured()
    out = corr.double_jpeg(90, 60)(img)
    assert np.array_equal(np.asarray(out), np.asarray(jpeg_roundtrip(jpeg_roundtrip(img, 90), 60)))
    assert not np.array_equal(np.asarray(out), np.asarray(jpeg_roundtrip(img, 60)))  # the first pass left a trace
    assert quality_of(corr.pillow_bytes(jpeg_roundtrip(img, 90), "JPEG", 60)) == ("JPEG", 60)


def test_webp_and_social_and_opencv_outputs():
    img = textured()
    data = corr.pillow_bytes(img, "WEBP", 50)
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    out = np.asarray(corr.webp(50)(img), dtype=int)
    assert out.shape == (64, 64, 3) and 0 < np.abs(out - np.asarray(img, dtype=int)).mean() < 20

    shared = corr.social(0.5, 75)(img)
    assert shared.size == (32, 32)
    assert np.array_equal(np.asarray(shared), np.asarray(jpeg_roundtrip(img.resize((32, 32), Image.BICUBIC), 75)))
    assert quality_of(corr.pillow_bytes(img.resize((32, 32), Image.BICUBIC), "JPEG", 75)) == ("JPEG", 75)

    pytest.importorskip("cv2")
    for quality in (95, 70, 40):
        assert quality_of(corr.opencv_jpeg_bytes(img, quality)) == ("JPEG", quality)
    out = np.asarray(corr.opencv_jpeg(70)(img), dtype=int)
    assert out.shape == (64, 64, 3) and 0 < np.abs(out - np.asarray(img, dtype=int)).mean() < 20


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF")
def test_avif_encodes_avif():
    img = textured()
    data = corr.pillow_bytes(img, "AVIF", 50)
    assert data[4:12] == b"ftypavif"
    out = np.asarray(corr.avif(50)(img), dtype=int)
    assert out.shape == (64, 64, 3) and 0 < np.abs(out - np.asarray(img, dtype=int)).mean() < 25


def test_gaussian_noise_has_the_requested_std_and_is_deterministic_per_image():
    img = Image.new("RGB", (128, 128), (128, 128, 128))  # mid grey: no clipping at these levels
    for std in (2.0, 5.0, 10.0):
        out = np.asarray(corr.gaussian_noise(std)(img), dtype=float) - 128
        assert out.std() == pytest.approx(std, rel=0.05) and abs(out.mean()) < 0.2
    noise = corr.gaussian_noise(5.0, seed=1)
    assert np.array_equal(np.asarray(noise(img)), np.asarray(noise(img)))
    assert not np.array_equal(np.asarray(noise(img)), np.asarray(corr.gaussian_noise(5.0, seed=2)(img)))
    other = Image.new("RGB", (128, 128), (127, 128, 128))
    assert not np.array_equal(np.asarray(noise(img)) - np.asarray(img), np.asarray(noise(other)) - np.asarray(other))


def test_chain_levels_validate_and_label():
    labels = [lv.label for lv in corr.chain_levels("double_jpeg", [[90, 70]])]
    assert labels == ["double_jpeg none", "double_jpeg q=90>70"]
    assert [lv.label for lv in corr.chain_levels("social", [[0.5, 80]])][1] == "social scale=0.5,q=80"
    assert corr.chain_levels("noise", [5], seed=3)[1].key == "corruption:noise std=5|seed=3"
    for kind, bad in (("double_jpeg", [90]), ("webp", [0]), ("social", [[1.5, 80]]), ("noise", [-1])):
        with pytest.raises(HarnessError, match=f"analyses.corruptions.{kind}"):
            corr.chain_levels(kind, bad)


def test_missing_encoders_are_reported_skips(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 now raises ImportError
    monkeypatch.setattr(features, "check", lambda name: False if name == "avif" else True)
    assert "opencv-python-headless" in corr.chain_skip_reason("opencv_jpeg")
    assert "AVIF" in corr.chain_skip_reason("avif")
    samples = make_samples(tmp_path, n=2)
    context = AnalysisContext(Texture().eval(), samples, torch.device("cpu"), tmp_path / "out", {})
    config = {"jpeg": [], "blur": [], "resize": [], "avif": [50], "opencv_jpeg": [70], "webp": [60], "cache_dir": False}
    result = corr.CorruptionsAnalysis(config).run(context)
    assert set(result.summary["degradations_skipped"]) == {"avif", "opencv_jpeg"}
    assert set(result.tables["per_generator"].corruption) == {"jpeg", "blur", "resize", "webp"}


def test_analysis_scores_every_chain_with_identity_points_cache_and_figure(tmp_path):
    samples = make_samples(tmp_path)
    detector = Texture().eval()
    config = {"jpeg": [], "blur": [], "resize": [], "double_jpeg": [[90, 60]], "webp": [80], "noise": [4],
              "social": [[0.5, 80]], "cache_dir": str(tmp_path / "cache")}
    context = AnalysisContext(detector, samples, torch.device("cpu"), tmp_path / "out", {})
    result = corr.CorruptionsAnalysis(config).run(context)
    assert detector.forwards == len(samples) * 5  # clean once + four chain levels
    table = result.tables["per_generator"]
    pooled = table[table.generator == "all"].set_index("condition")
    for kind in ("double_jpeg", "webp", "noise", "social"):
        assert pooled.loc[f"{kind} none", "fake_acc"] == 1.0  # identity: the clean scores
    # each degradation destroys the equal-pixel-pair trace the detector looks for
    for condition in ("double_jpeg q=90>60", "webp q=80", "noise std=4"):
        assert pooled.loc[condition, "fake_acc"] < 0.5, condition
    # halved images are mostly the crop policy's constant padding, equal pairs everywhere: reals look fake
    assert pooled.loc["social scale=0.5,q=80", "real_acc"] < pooled.loc["social none", "real_acc"]
    assert "webp q=80" in result.summary["mAcc"]
    with Image.open(result.figures["chains"]) as img:
        img.verify()
    detector.forwards = 0
    corr.CorruptionsAnalysis(config).run(context)
    assert detector.forwards == 0


def test_chain_conditions_become_leaderboard_curves():
    from harness.records import corruption_section

    summary = {"mAcc": {"jpeg none": 0.9, "double_jpeg none": 0.9, "double_jpeg q=90>70": 0.6, "webp none": 0.9,
                        "webp q=80": 0.7, "social none": 0.9, "social scale=0.5,q=80": 0.55}}
    section = corruption_section(summary)
    assert section["double_jpeg"]["x"] == ["none", "90>70"] and section["double_jpeg"]["y"] == [0.9, 0.6]
    assert section["webp"]["x"] == ["none", 80.0]
    assert section["social"]["x"] == ["none", "0.5,q=80"] and section["social"]["y"] == [0.9, 0.55]
