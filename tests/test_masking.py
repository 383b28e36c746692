"""Masking robustness: masks are what they claim, ratio 0 is the plain recall, squares and
targeted masking find the one patch a constructed detector looks at."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import recall_score

from harness.analysis import AnalysisContext
from harness.detector import Detector, InputPolicy
from harness.patchgrid import cells_to_mask
from harness.scoring import score_samples
from harness.suite import Sample
from harness.plugins.analyses.masking import MaskingAnalysis, forward_masked, random_cells
from tests.fakedata import write_pairs


class Brightness(Detector):
    """Fake when the image is brighter than 0.5 on average: a mixed, maskable decision."""

    name = "brightness"

    def input_policy(self, train=False):
        return InputPolicy("center_crop", 32)

    def forward(self, x):
        return (x.mean(dim=(-3, -2, -1)) - 0.5) * 40


class OnePatch(Detector):
    """Logit = sum of the pixels in rows 8:12, cols 20:24 (cell (2, 5) of an 8x8 grid) - 1."""

    name = "one-patch"

    def input_policy(self, train=False):
        return InputPolicy("center_crop", 32, patch_grid=8)

    def forward(self, x):
        return x[..., 8:12, 20:24].sum(dim=(-3, -2, -1)) - 1.0


class CountMasked(Detector):
    """Logit = the number of 4x4 cells whose pixels are all zero (inputs are never zero)."""

    name = "count-masked"

    def input_policy(self, train=False):
        return InputPolicy("center_crop", 32)

    def forward(self, x):
        zero = (x == 0).all(dim=1).float()
        return torch.nn.functional.avg_pool2d(zero[:, None], 4).eq(1).flatten(1).sum(1).float()


def make_samples(tmp_path, n=8):
    samples = []
    for gen, seed in (("alpha", 0), ("beta", 1)):
        for real, fake in write_pairs(tmp_path / gen / "real", tmp_path / gen / "fake", n, size=32, seed=seed):
            samples.append(Sample(str(real), 0, gen, "test"))
            samples.append(Sample(str(fake), 1, gen, "test", pair=str(real)))
    return samples


def test_random_cells_are_deterministic_nested_permutations():
    order = random_cells("/data/a.png", 3, 64)
    assert sorted(order.tolist()) == list(range(64))
    assert np.array_equal(order, random_cells("/data/a.png", 3, 64))
    assert not np.array_equal(order, random_cells("/data/a.png", 4, 64))
    assert not np.array_equal(order, random_cells("/data/b.png", 3, 64))


@pytest.mark.parametrize("k", [0, 1, 13, 57])
def test_masked_variants_mask_exactly_k_cells(k):
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.9 + 0.05
    cells = torch.zeros(3, 64, dtype=torch.bool)
    for i in range(3):
        cells[i, random_cells(f"img{i}", 0, 64)[:k]] = True
    masks = cells_to_mask(cells.view(3, 8, 8), 32, 32)
    logits = forward_masked(CountMasked(), x, torch.arange(3), masks, batch_size=2)
    assert logits.tolist() == [k, k, k]
    # cells_to_mask against a hand expansion of the grid
    expected = cells.view(3, 8, 8).repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)
    assert torch.equal(masks, expected)


def test_ratio_zero_reproduces_plain_recall_and_masking_lowers_it(tmp_path):
    samples = make_samples(tmp_path)
    detector = Brightness().eval()
    plain = score_samples(detector, samples, device="cpu", batch_size=8)
    labels, predicted = plain.label.to_numpy(), (plain.logit.to_numpy() >= 0).astype(int)
    expected_recall = recall_score(labels, predicted)
    assert 0 < expected_recall < 1  # a decision that masking can change

    config = {"ratios": [0.0, 0.5, 0.9], "seeds": [0, 1], "square_sizes": [0.25], "targeted_fractions": [],
              "cache_dir": False}
    context = AnalysisContext(detector, samples, torch.device("cpu"), tmp_path / "out", {})
    result = MaskingAnalysis(config).run(context)
    table = result.tables["random"].set_index("ratio")
    assert table.loc[0.0, "recall"] == pytest.approx(expected_recall)
    assert table.loc[0.0, "recall_std"] == pytest.approx(0.0)
    assert table.loc[0.0, "recall_decline"] == pytest.approx(0.0)
    assert table.loc[0.0, "acc"] == pytest.approx((predicted == labels).mean())
    assert result.summary["recall_clean"] == pytest.approx(expected_recall)
    # Zero-filling 90% of the cells darkens every image below 0.5: nothing is called fake.
    assert table.loc[0.9, "recall"] == 0.0 and table.loc[0.9, "recall_decline"] == pytest.approx(1.0)
    assert table.loc[0.5, "masked_cells"] == 32
    per_gen = result.tables["random_per_generator"]
    for gen in ("alpha", "beta"):
        rows = plain[(plain.generator == gen)]
        gen_recall = recall_score(rows.label, (rows.logit >= 0).astype(int))
        assert per_gen[(per_gen.generator == gen) & (per_gen.ratio == 0.0)].recall.iloc[0] == pytest.approx(gen_recall)
    json.dumps(result.summary)
    for path in result.figures.values():
        with Image.open(path) as img:
            img.verify()


def test_single_square_and_targeted_masking_find_the_one_patch(tmp_path):
    samples = [s for s in make_samples(tmp_path, n=4) if s.label == 1]
    broken = tmp_path / "empty.png"
    broken.write_bytes(b"")
    samples.append(Sample(str(broken), 1, "alpha", "test"))
    config = {"ratios": [0.0], "seeds": [0], "square_sizes": [0.125, 0.25], "targeted_fractions": [0.02, 0.25],
              "cache_dir": str(tmp_path / "cache")}
    context = AnalysisContext(OnePatch(), samples, torch.device("cpu"), tmp_path / "out", {})
    result = MaskingAnalysis(config).run(context)

    square = result.tables["square"].set_index("side_px")
    assert square.loc[4, "positions"] == 64 and square.loc[8, "positions"] == 16
    assert square.loc[4, "recall_clean"] == 1.0
    assert square.loc[4, "recall"] == pytest.approx(63 / 64)
    assert square.loc[8, "recall"] == pytest.approx(15 / 16)
    assert square.loc[4, "recall_worst_per_image"] == 0.0
    assert square.loc[4, "recall_worst_position"] == 0.0
    per_image = result.tables["square_per_image"]
    small = per_image[per_image.side_px == 4]
    assert len(small) == 8
    assert (small.worst_top == 8).all() and (small.worst_left == 20).all() and small.flipped.all()

    targeted = result.tables["targeted"].set_index("k")
    assert list(targeted.index) == [1, 16]
    assert targeted.loc[1, "recall_top"] == 0.0 and targeted.loc[1, "recall_bottom"] == 1.0
    assert targeted.loc[1, "recall_decline_top"] == pytest.approx(1.0)
    assert list(result.tables["skipped"].path) == [str(broken)]
    assert result.summary["skipped"] == 1 and result.summary["images"] == 8
    assert set(result.figures) == {"random_masking", "square_masking", "targeted_masking"}


def test_random_masks_are_the_same_wherever_the_suite_lies(tmp_path, monkeypatch):
    import shutil

    import harness.plugins.analyses.masking as masking

    keys = []
    real_random_cells = masking.random_cells
    monkeypatch.setattr(masking, "random_cells", lambda key, seed, n: keys.append(key) or real_random_cells(key, seed, n))
    make_samples(tmp_path / "here")
    shutil.copytree(tmp_path / "here", tmp_path / "elsewhere" / "deeper")
    config = {"ratios": [0.5], "seeds": [0, 1], "square_sizes": [], "targeted_fractions": [], "cache_dir": False}
    tables, seen = [], []
    for root in (tmp_path / "here", tmp_path / "elsewhere" / "deeper"):
        keys.clear()
        samples = [Sample(str(p), int(p.parent.name == "fake"), p.parent.parent.name, "test")
                   for p in sorted(root.glob("*/*/*.png"))]
        context = AnalysisContext(Brightness().eval(), samples, torch.device("cpu"), root / "out", {})
        tables.append(MaskingAnalysis(config).run(context).tables["random"])
        seen.append(sorted(keys))
    assert seen[0] == seen[1] and len(seen[0]) == 2 * 32  # every image, every seed, keyed alike
    assert not any(str(tmp_path) in key for key in seen[0])
    pd.testing.assert_frame_equal(tables[0], tables[1])
