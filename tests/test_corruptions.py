"""Corruption robustness: transforms against independent references, identity points equal the
clean numbers, corrupted scores are cached under their own key."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter
from sklearn.metrics import accuracy_score

from harness.analysis import AnalysisContext
from harness.detector import Detector, InputPolicy
from harness.scoring import score_samples
from harness.suite import Sample
from harness.plugins.analyses.corruptions import CorruptionsAnalysis, blur, jpeg, levels, resize
from tests.fakedata import write_pairs


class Texture(Detector):
    """Fake when most horizontal pixel pairs are equal: the trace of 2x nearest upsampling."""

    name = "texture"

    def __init__(self, config=None):
        super().__init__(config)
        self.forwards = 0

    def input_policy(self, train=False):
        return InputPolicy("center_crop", 32)

    def forward(self, x):
        self.forwards += len(x)
        return ((x[..., 0::2] - x[..., 1::2]).abs() < 1e-6).float().mean(dim=(-3, -2, -1)) - 0.5


def make_samples(tmp_path, n=8):
    samples = []
    for gen, seed in (("alpha", 0), ("beta", 1)):
        for real, fake in write_pairs(tmp_path / gen / "real", tmp_path / gen / "fake", n, size=32, seed=seed):
            samples.append(Sample(str(real), 0, gen, "test"))
            samples.append(Sample(str(fake), 1, gen, "test", pair=str(real)))
    return samples


def random_image(seed=0, size=64):
    return Image.fromarray(np.random.default_rng(seed).uniform(0, 255, (size, size, 3)).astype(np.uint8))


def test_blur_matches_a_gaussian_filter():
    img = random_image()
    a = np.asarray(img, dtype=float)
    for sigma in (0.5, 1.5, 2.5):
        ours = np.asarray(blur(sigma)(img), dtype=float)
        reference = gaussian_filter(a, sigma=(sigma, sigma, 0), mode="nearest")
        assert np.abs(ours - reference)[8:-8, 8:-8].mean() < 1.5
        assert np.abs(a - reference)[8:-8, 8:-8].mean() > 20  # the blur is far from a no-op


def test_resize_and_jpeg_do_what_they_say():
    img = random_image(size=50)
    assert resize(0.6)(img).size == (30, 30) and resize(1.4)(img).size == (70, 70)
    compressed = jpeg(60)(img)
    assert compressed.mode == "RGB" and compressed.size == img.size
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=60)
    assert np.array_equal(np.asarray(compressed), np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")))
    assert not np.array_equal(np.asarray(compressed), np.asarray(img))


def test_levels_have_explicit_identity_points():
    for kind, values, identity in (("jpeg", [100, 60], "jpeg none"), ("blur", [0, 1.0], "blur sigma=0"),
                                   ("resize", [0.6, 1.0, 1.4], "resize scale=1")):
        curve = levels(kind, values)
        assert [lv.label for lv in curve if lv.transform is None] == [identity]
    assert [lv.value for lv in levels("resize", [1.4, 0.6, 1.0])] == [0.6, 1.0, 1.4]
    assert [lv.label for lv in levels("jpeg", [100, 60])] == ["jpeg none", "jpeg q=100", "jpeg q=60"]


def test_identity_points_reproduce_clean_numbers_and_scores_are_cached(tmp_path):
    samples = make_samples(tmp_path)
    detector = Texture().eval()
    plain = score_samples(detector, samples, device="cpu", batch_size=16)
    assert plain.label.tolist() == [s.label for s in samples]
    predicted = (plain.logit >= 0).astype(int)
    assert accuracy_score(plain.label, predicted) > 0.9  # the constructed detector works on clean images

    config = {"jpeg": [90, 60], "blur": [1.0, 2.5], "resize": [0.6, 1.0], "cache_dir": str(tmp_path / "cache")}
    context = AnalysisContext(detector, samples, torch.device("cpu"), tmp_path / "out", {})
    detector.forwards = 0
    result = CorruptionsAnalysis(config).run(context)
    # clean (shared by the three identity points) + 2 jpeg + 2 blur + 1 resize
    assert detector.forwards == len(samples) * 6

    table = result.tables["per_generator"]
    identity = table[table.identity]
    assert sorted(set(identity.condition)) == ["blur sigma=0", "jpeg none", "resize scale=1"]
    for gen in ("alpha", "beta"):
        rows = plain[plain.generator == gen]
        clean_acc = accuracy_score(rows.label, (rows.logit >= 0).astype(int))
        assert identity[identity.generator == gen].acc.tolist() == pytest.approx([clean_acc] * 3)
    # Blur and JPEG erase the equal pixel pairs: fakes are missed.
    by_condition = table[table.generator == "all"].set_index("condition")
    assert by_condition.loc["blur sigma=0", "fake_acc"] == 1.0
    assert by_condition.loc["blur sigma=2.5", "fake_acc"] < 0.5
    assert by_condition.loc["jpeg q=60", "fake_acc"] < 0.5
    summary = result.tables["summary"].set_index("condition")
    assert summary.loc["jpeg none", "mAcc"] == pytest.approx(table[(table.condition == "jpeg none")
                                                                  & (table.generator != "all")].acc.mean())
    json.dumps(result.summary)
    with Image.open(result.figures["curves"]) as img:
        img.verify()

    detector.forwards = 0
    again = CorruptionsAnalysis(config).run(context)
    assert detector.forwards == 0
    assert again.tables["per_generator"].equals(table)
