"""Masking fills: zero (the default, as before), the detector's normalisation mean, a blurred copy;
each puts what it says under the mask, and the summary records the one used."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from harness.analysis import AnalysisContext
from harness.detector import Detector, InputPolicy
from harness.errors import HarnessError
from harness.patchgrid import cells_to_mask
from harness.plugins.analyses.masking import MaskingAnalysis, fill_values, forward_masked, parse_fill
from tests.test_masking import make_samples

MEAN = (0.485, 0.456, 0.406)


class CellMean(Detector):
    """Logit = the mean input value over cell (2, 5) of an 8x8 grid (rows 8:12, cols 20:24), minus 0.45."""

    name = "cell-mean"

    def input_policy(self, train=False):
        return InputPolicy("center_crop", 32, mean=MEAN, std=(0.229, 0.224, 0.225), patch_grid=8)

    def forward(self, x):
        return x[..., 8:12, 20:24].mean(dim=(-3, -2, -1)) - 0.45


def _one_cell_mask(b: int) -> torch.Tensor:
    cells = torch.zeros(b, 8, 8, dtype=torch.bool)
    cells[:, 2, 5] = True
    return cells_to_mask(cells, 32, 32)


def test_each_fill_puts_what_it_says_under_the_mask():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    det = CellMean()
    masks = _one_cell_mask(2)
    index = torch.arange(2)
    zero = forward_masked(det, x, index, masks, fill=fill_values(x, "zero", det), amp=False)
    assert zero.tolist() == pytest.approx([-0.45, -0.45])
    mean = forward_masked(det, x, index, masks, fill=fill_values(x, "mean", det), amp=False)
    assert mean.tolist() == pytest.approx([np.mean(MEAN) - 0.45] * 2, abs=1e-6)
    # blur: the masked cell holds the Gaussian-blurred image (scipy reference, sigma 2)
    blurred = fill_values(x, "blur", det, sigma=2.0)
    got = forward_masked(det, x, torch.tensor([1, 0, 1]), _one_cell_mask(3), fill=blurred, amp=False)
    reference = [gaussian_filter(x[i].numpy(), sigma=(0, 2, 2), mode="mirror", truncate=3)[:, 8:12, 20:24].mean()
                 - 0.45 for i in (1, 0, 1)]
    assert got.tolist() == pytest.approx(reference, abs=1e-5)
    unmasked = x[..., 8:12, 20:24].mean(dim=(-3, -2, -1)) - 0.45
    assert not torch.allclose(got[:2], unmasked[[1, 0]])  # the blur is not the identity
    # a constant fill is that constant
    assert float(fill_values(x, 0.3, det)) == 0.3


def test_fill_settings_are_checked():
    assert parse_fill(0.0) == "zero" and parse_fill(0) == "zero" and parse_fill(0.5) == 0.5
    for bad in ("black", 1.5, -0.1, True):
        with pytest.raises(HarnessError, match="analyses.masking.fill"):
            parse_fill(bad)


def test_summary_records_the_fill_and_default_matches_the_old_zero_fill(tmp_path):
    samples = make_samples(tmp_path, n=3)
    context = AnalysisContext(CellMean().eval(), samples, torch.device("cpu"), tmp_path / "out", {})
    base = {"ratios": [0.0, 0.5], "seeds": [0], "square_sizes": [0.25], "targeted_fractions": [], "cache_dir": False,
            "workers": 0}
    default = MaskingAnalysis(base).run(context)
    old = MaskingAnalysis({**base, "fill": 0.0}).run(context)
    assert default.summary["fill"] == old.summary["fill"] == "zero"
    assert default.tables["random"].equals(old.tables["random"])
    blur = MaskingAnalysis({**base, "fill": "blur"}).run(context)
    assert blur.summary["fill"] == "blur" and blur.summary["blur_sigma"] == 2.0  # half of a 4-pixel cell
    assert blur.summary["tde_fill"] == 0.0
    mean = MaskingAnalysis({**base, "fill": "mean"}).run(context)
    assert mean.summary["fill"] == "mean"
    # the mean fill (0.449 under the cell) moves the worst-square logits away from the zero fill's
    assert not np.allclose(mean.tables["square_per_image"].worst_logit, default.tables["square_per_image"].worst_logit)
