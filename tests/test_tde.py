"""TDE maps against brute force, statistics against hand-computed values, the analysis end to end."""

import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from harness.analysis import AnalysisContext
from harness.detector import Detector, InputPolicy
from harness.patchgrid import edges
from harness.suite import Sample
from harness.plugins.analyses.tde import TDEAnalysis, patch_statistics, stable_subsample, tde_batched, tde_naive
from tests.fakedata import write_pairs


class TinyConv(Detector):
    name = "tiny-conv"

    def __init__(self, config=None, size=32, grid=None):
        super().__init__(config)
        self.size, self.grid = size, grid
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2),
                                 nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 1))
        self.forwards = 0

    def input_policy(self, train=False):
        return InputPolicy("center_crop", self.size, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), patch_grid=self.grid)

    def forward(self, x):
        self.forwards += len(x)
        return self.net(self.normalize(x)).squeeze(1)


class TwoView(TinyConv):
    """PatchCraft-shaped input [B, 2, 3, S, S]: both views feed the logit."""

    def preprocess(self, images, *, train=False, generator=None):
        return [torch.stack([t, t.flip(-1)]) for t in super().preprocess(images, train=train, generator=generator)]

    def forward(self, x):
        return super().forward(x[:, 0]) + 0.5 * super().forward(x[:, 1])


class OnePatch(Detector):
    """Logit = sum of the pixels of grid cell (2, 5) of an 8x8 grid over a 32x32 input."""

    name = "one-patch"

    def input_policy(self, train=False):
        return InputPolicy("center_crop", 32)

    def forward(self, x):
        return x[..., 8:12, 20:24].sum(dim=(-3, -2, -1))


class AllPatches(Detector):
    name = "all-patches"

    def input_policy(self, train=False):
        return InputPolicy("center_crop", 32)

    def forward(self, x):
        return x.mean(dim=(-3, -2, -1)) * 100


def brute_force_tde(model, x, m, fill):
    """Independent reference: slice each cell by hand, one image and one cell at a time."""
    h, w = x.shape[-2:]
    rows, cols = edges(h, m), edges(w, m)
    out = np.zeros((len(x), m, m))
    with torch.no_grad():
        for b in range(len(x)):
            clean = float(model(x[b : b + 1])[0])
            for i in range(m):
                for j in range(m):
                    masked = x[b : b + 1].clone()
                    masked[..., rows[i] : rows[i + 1], cols[j] : cols[j + 1]] = fill
                    out[b, i, j] = clean - float(model(masked)[0])
    return out


@pytest.mark.parametrize("m,fill", [(4, 0.0), (5, 0.5), (8, 0.0)])
def test_batched_tde_equals_brute_force(m, fill):
    model = TinyConv().eval()
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    base, tde = tde_batched(model, x, m, fill=fill, batch_size=7)  # 7: batches straddle images
    expected = brute_force_tde(model, x, m, fill)
    assert np.allclose(tde.numpy(), expected, atol=1e-5)
    assert np.allclose(base.numpy(), model(x).detach().numpy(), atol=1e-6)
    assert np.abs(expected).max() > 1e-3  # the maps are not trivially zero
    _, naive = tde_naive(model, x, m, fill=fill)
    assert np.allclose(naive.numpy(), expected, atol=1e-5)


def test_multi_view_inputs_mask_the_last_two_dims():
    model = TwoView().eval()
    x = torch.rand(2, 2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    _, tde = tde_batched(model, x, 4, batch_size=5)
    assert np.allclose(tde.numpy(), brute_force_tde(model, x, 4, 0.0), atol=1e-5)


def test_one_patch_detector_gives_one_patch_statistics():
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 0.9 + 0.1
    _, tde = tde_batched(OnePatch(), x, 8)
    tde = tde.numpy()
    nonzero = np.argwhere(np.abs(tde) > 1e-6)
    assert {(i, j) for _, i, j in nonzero} == {(2, 5)}
    assert len(nonzero) == 4
    assert np.allclose(tde[:, 2, 5], x[:, :, 8:12, 20:24].sum(dim=(1, 2, 3)).numpy(), atol=1e-4)
    stats = patch_statistics(tde)
    n = 64
    assert np.allclose(stats.gini, (n - 1) / n)
    assert np.allclose(stats.effective_patches, 1.0)
    assert np.allclose(stats.top1_share, 1.0)
    assert np.allclose(stats.active_fraction, 1 / n)
    assert np.allclose(stats.few_patch_bias, 1 - 1 / n)


def test_detector_summing_all_patches_has_gini_near_zero():
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(4)) * 0.2 + 0.4
    _, tde = tde_batched(AllPatches(), x, 8)
    stats = patch_statistics(tde.numpy())
    assert (stats.gini < 0.05).all()
    assert (stats.effective_patches > 0.98 * 64).all()
    assert np.allclose(stats.active_fraction, 1.0)
    assert (stats.few_patch_bias < 0.02).all()


def test_statistics_match_hand_computed_values():
    tde = np.array([[1.0, 1.0, 2.0, -4.0], [0.0, -1.0, 0.0, -2.0]])
    stats = patch_statistics(tde, active_fraction=0.5)
    p = np.array([0.25, 0.25, 0.5, 0.0])
    gini = sum(abs(a - b) for a in p for b in p) / (2 * len(p) ** 2 * p.mean())
    entropy = -sum(v * math.log(v) for v in p if v > 0)
    first = stats.iloc[0]
    assert first["mean"] == pytest.approx(0.0)
    assert first["std"] == pytest.approx(np.std(tde[0]))
    assert first["gini"] == pytest.approx(gini)
    assert first["entropy"] == pytest.approx(entropy)
    assert first["effective_patches"] == pytest.approx(math.exp(entropy))
    assert first["top1_share"] == pytest.approx(0.5)
    assert first["top10_share"] == pytest.approx(0.5)  # ceil(0.1 * 4) = 1 patch
    assert first["active_fraction"] == pytest.approx(0.25)  # TDE > 0.5 * 2: only the 2
    assert first["few_patch_bias"] == pytest.approx(1 - math.exp(entropy) / 4)
    second = stats.iloc[1]  # no positive TDE: no distribution
    assert np.isnan(second["gini"]) and np.isnan(second["effective_patches"])
    assert second["active_fraction"] == 0.0


def make_samples(tmp_path, n=6):
    samples = []
    for gen, seed in (("alpha", 0), ("beta", 1)):
        for real, fake in write_pairs(tmp_path / gen / "real", tmp_path / gen / "fake", n, size=32, seed=seed):
            samples.append(Sample(str(real), 0, gen, "test"))
            samples.append(Sample(str(fake), 1, gen, "test", pair=str(real)))
    return samples


def test_analysis_writes_tables_figures_and_reuses_its_cache(tmp_path):
    samples = make_samples(tmp_path)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    samples.append(Sample(str(broken), 1, "alpha", "test"))
    model = TinyConv(grid=4).eval()
    config = {"eval": {"cache_dir": str(tmp_path / "cache")}}
    context = AnalysisContext(model, samples, torch.device("cpu"), tmp_path / "out", config)
    result = TDEAnalysis({"batch_size": 32, "examples": 3}).run(context)

    assert model.forwards == 24 * (16 + 1)  # 24 decodable images, 4x4 grid, the clean score once each
    per_image = result.tables["per_image"]
    assert len(per_image) == 24
    assert list(result.tables["skipped"].path) == [str(broken)]
    assert result.summary["grid"] == 4 and result.summary["skipped"] == 1
    json.dumps(result.summary)
    summary = result.tables["summary"]
    fakes_alpha = summary[(summary.generator == "alpha") & (summary["class"] == "fake")].iloc[0]
    expected = per_image[(per_image.generator == "alpha") & (per_image.label == 1)]["gini"].mean()
    assert fakes_alpha["gini"] == pytest.approx(expected) and fakes_alpha["images"] == 6
    for path in result.figures.values():
        with Image.open(path) as img:
            img.verify()
    assert set(result.figures) == {"mean_heatmaps", "histogram", "examples"}

    # The same detector again: every map comes from the cache, only the examples' inputs are decoded.
    model.forwards = 0
    again = TDEAnalysis({"batch_size": 32, "examples": 3}).run(context)
    assert model.forwards == 0
    assert np.allclose(again.tables["per_image"]["gini"], per_image["gini"], equal_nan=True)

    # Different weights: a different fingerprint, so the maps are recomputed.
    with torch.no_grad():
        model.net[-1].bias += 1.0
    TDEAnalysis({"batch_size": 32, "examples": 0}).run(context)
    assert model.forwards == 24 * 17


def test_grid_defaults_to_the_token_grid_then_eight(tmp_path):
    samples = make_samples(tmp_path, n=1)
    for grid, expected in ((2, 2), (None, 8)):
        context = AnalysisContext(TinyConv(grid=grid).eval(), samples, torch.device("cpu"), tmp_path / f"o{grid}", {})
        result = TDEAnalysis({"examples": 0, "cache_dir": False}).run(context)
        assert result.summary["grid"] == expected


def test_subsample_is_stable_and_keeps_the_suite_order(tmp_path):
    samples = [Sample(f"/d/{g}/{c}/{i}.png", c, g, "test") for g in ("zeta", "alpha") for c in (0, 1) for i in range(10)]
    kept = stable_subsample(samples, 3)
    assert len(kept) == 12
    assert [s.generator for s in kept] == ["zeta"] * 6 + ["alpha"] * 6
    assert stable_subsample(list(reversed(samples)), 3) == list(reversed(kept))
    assert stable_subsample(samples, 0) == samples
    # the same suite under another root (another machine): the same images, and the same masks
    moved = [Sample(s.path.replace("/d/", "/home/alice/data/"), s.label, s.generator, s.split) for s in samples]
    assert [s.portable_key for s in stable_subsample(moved, 3)] == [s.portable_key for s in kept]
    # same file names in two class folders of one generator (ForenSynths' progan/<class>/) stay apart
    twins = [Sample(f"/d/progan/{c}/0_real/0.png", 0, "progan", "test") for c in ("airplane", "bicycle")]
    assert twins[0].portable_key != twins[1].portable_key


def test_a_changed_file_is_computed_again(tmp_path):
    samples = make_samples(tmp_path, n=2)
    model = TinyConv(grid=2).eval()
    context = AnalysisContext(model, samples, torch.device("cpu"), tmp_path / "out", {})
    config = {"examples": 0, "cache_dir": str(tmp_path / "cache")}
    first = TDEAnalysis(config).run(context)
    model.forwards = 0
    changed = samples[1].path
    with Image.open(samples[0].path) as img:
        img.save(changed)
    stat = os.stat(changed)
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = TDEAnalysis(config).run(context)
    assert model.forwards == 1 * (4 + 1)
    before, after = first.tables["per_image"], second.tables["per_image"]
    assert after.logit[1] == pytest.approx(after.logit[0]) and after.logit[1] != pytest.approx(before.logit[1])
