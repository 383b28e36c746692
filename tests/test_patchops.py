"""Shared patch operations: complexity, selection, tiling, SRM filters, DWT, ResNet loading and
provenance, blur / JPEG augmentation."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
import pywt
import torch
import torchvision
from PIL import Image
from scipy.ndimage import gaussian_filter
from torch.nn import functional as F

from harness.checkpoints import save_checkpoint
from harness.errors import HarnessError
from harness.images import blur_jpeg
from harness.plugins.detectors.patchops import (
    DWT2,
    SRM,
    build_resnet,
    content_generator,
    load_imagenet_resnet,
    loaded_resnet_provenance,
    patch_complexity,
    ranked_crops,
    resnet_provenance,
    srm30_kernels,
    tile,
    to_uint8_tensor,
)


def complexity_by_loops(patch: np.ndarray) -> int:
    """The official rule, pixel by pixel: patch [H, W, C] uint8."""
    p = patch.astype(np.int64)
    h, w, c = p.shape
    total = 0
    for ch in range(c):
        for i in range(h):
            for j in range(w):
                if j + 1 < w:
                    total += abs(p[i, j, ch] - p[i, j + 1, ch])
                if i + 1 < h:
                    total += abs(p[i, j, ch] - p[i + 1, j, ch])
                if i + 1 < h and j + 1 < w:
                    total += abs(p[i, j, ch] - p[i + 1, j + 1, ch])
                    total += abs(p[i + 1, j, ch] - p[i, j + 1, ch])
    return total


def reference_ranking(image: Image.Image, size: int, count: int, seed) -> tuple[list[int], list, list]:
    """Draw the corners with the documented law (tops, then lefts, uniform), cut the crops with
    PIL as the official code does, and rank them with Python's stable ``sorted``.
    ``seed``: an int or a ready generator."""
    gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
    w, h = image.size
    tops = torch.randint(0, h - size + 1, (count,), generator=gen).tolist()
    lefts = torch.randint(0, w - size + 1, (count,), generator=gen).tolist()
    scores = [
        complexity_by_loops(np.array(image.crop((l, t, l + size, t + size)))) for t, l in zip(tops, lefts)
    ]
    return sorted(range(count), key=lambda i: scores[i]), tops, lefts


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, batches) -> None:
    """Re-estimate BatchNorm running statistics as plain averages over ``batches``.

    A from-scratch network trained for a dozen steps still carries most of its initial running
    statistics (momentum 0.1); the short training tests settle them before evaluating.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for x in batches:
        model(x)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.eval()


def test_complexity_equals_pixel_loops():
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, (4, 6, 5, 3), dtype=np.uint8)
    ours = patch_complexity(torch.from_numpy(patches).permute(0, 3, 1, 2))
    assert ours.dtype == torch.int64
    assert ours.tolist() == [complexity_by_loops(p) for p in patches]
    # A flat patch has none; uint8 arithmetic would have wrapped around on 0 - 255.
    flat = torch.full((1, 3, 4, 4), 7, dtype=torch.uint8)
    assert patch_complexity(flat).item() == 0
    edge = torch.zeros(1, 1, 2, 2, dtype=torch.uint8)
    edge[..., 0, 1] = 255  # one bright pixel: horizontal, vertical and anti-diagonal pairs see it
    assert patch_complexity(edge).item() == 3 * 255


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ranking_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    # Texture that varies across the image, so the ranking is not trivial.
    arr = (rng.normal(128, 1, (30, 37, 3)) + rng.normal(0, 40, (30, 37, 3)) * np.linspace(0, 1, 37)[None, :, None])
    image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    order, tops, lefts = ranked_crops(to_uint8_tensor(image), 8, 20, torch.Generator().manual_seed(seed))
    ref_order, ref_tops, ref_lefts = reference_ranking(image, 8, 20, seed)
    assert tops.tolist() == ref_tops and lefts.tolist() == ref_lefts
    assert order.tolist() == ref_order


def test_ties_keep_the_draw_order():
    image = torch.full((3, 10, 10), 50, dtype=torch.uint8)  # every crop is flat: all complexities tie
    order, _, _ = ranked_crops(image, 4, 12, torch.Generator().manual_seed(0))
    assert order.tolist() == list(range(12))


def test_the_flat_patch_is_chosen():
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 256, (32, 35, 3), dtype=np.uint8)
    arr[:, :32] = 90  # only the crop at left = 0 is flat; 64 draws over 4 positions all but surely hit it
    order, tops, lefts = ranked_crops(torch.from_numpy(arr).permute(2, 0, 1), 32, 64, torch.Generator().manual_seed(5))
    assert (tops[order[0]], lefts[order[0]]) == (0, 0)
    assert lefts[order[-1]] == lefts.max()  # the crop that sees most noise is the richest


def test_tile_is_row_major():
    patches = torch.arange(6 * 2 * 3 * 3).reshape(6 * 1, 2, 3, 3)[:4]
    grid = tile(patches, 2)
    assert grid.shape == (2, 6, 6)
    for k in range(4):
        r, c = divmod(k, 2)
        assert torch.equal(grid[:, r * 3 : (r + 1) * 3, c * 3 : (c + 1) * 3], patches[k])
    with pytest.raises(ValueError):
        tile(patches[:3], 2)


def test_content_generator_depends_on_image_and_seed_only():
    a = torch.randint(0, 256, (3, 9, 9), dtype=torch.uint8)
    draw = lambda img, seed: torch.randint(0, 1000, (5,), generator=content_generator(img, seed)).tolist()
    assert draw(a, 0) == draw(a.clone(), 0)
    assert draw(a, 0) != draw(a, 1)
    b = a.clone()
    b[0, 0, 0] ^= 1
    assert draw(a, 0) != draw(b, 0)


# The published 30-filter list (steganalysis SRM, as PatchCraft loads it), some written out
# with their normalisers: 0-7 first order, 8-11 second (/2), 12-19 third (/3), 20-23 EDGE3x3
# (/4), 24-27 EDGE5x5 (/12), 28 SQUARE3x3 (/4), 29 SQUARE5x5 (/12).
_PUBLISHED = {
    0: ([[1, 0, 0], [0, -1, 0], [0, 0, 0]], 1),
    4: ([[0, 0, 0], [0, -1, 1], [0, 0, 0]], 1),
    8: ([[1, 0, 0], [0, -2, 0], [0, 0, 1]], 2),
    10: ([[0, 0, 1], [0, -2, 0], [1, 0, 0]], 2),
    12: ([[-1, 0, 0, 0, 0], [0, 3, 0, 0, 0], [0, 0, -3, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0]], 3),
    15: ([[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, -3, 3, -1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]], 3),
    19: ([[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [-1, 3, -3, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]], 3),
    21: ([[0, 2, -1], [0, -4, 2], [0, 2, -1]], 4),
    24: ([[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]], 12),
    27: ([[-1, 2, -2, 0, 0], [2, -6, 8, 0, 0], [-2, 8, -12, 0, 0], [2, -6, 8, 0, 0], [-1, 2, -2, 0, 0]], 12),
    28: ([[-1, 2, -1], [2, -4, 2], [-1, 2, -1]], 4),
    29: ([[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2], [-1, 2, -2, 2, -1]], 12),
}


def test_srm30_matches_the_published_filters():
    k = srm30_kernels()
    assert k.shape == (30, 5, 5)
    for i, (rows, norm) in _PUBLISHED.items():
        ref = torch.tensor(rows, dtype=torch.float32)
        if ref.shape[0] == 3:
            ref = F.pad(ref, (1, 1, 1, 1))  # 3x3 filters sit in the middle of 5x5
        assert torch.allclose(k[i], ref / norm), i
    assert torch.allclose(k.sum(dim=(1, 2)), torch.zeros(30), atol=1e-6)  # all high-pass
    assert len({tuple(f.flatten().tolist()) for f in k}) == 30


def test_srm3_equals_a_direct_convolution():
    x = torch.rand(2, 3, 7, 6) * 4 - 2
    out = SRM()(x)
    kb = torch.tensor([[0, 0, 0, 0, 0], [0, -1, 2, -1, 0], [0, 2, -4, 2, 0], [0, -1, 2, -1, 0], [0, 0, 0, 0, 0]]) / 4
    kv = torch.tensor([[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2], [-1, 2, -2, 2, -1]]) / 12
    h2 = torch.zeros(5, 5)
    h2[2, 1:4] = torch.tensor([1.0, -2.0, 1.0]) / 2
    padded = F.pad(x, (2, 2, 2, 2))
    ref = torch.zeros(2, 3, 7, 6)
    for f, kern in enumerate((kb, kv, h2)):
        for i in range(7):
            for j in range(6):
                ref[:, f, i, j] = (padded[:, :, i : i + 5, j : j + 5] * kern).sum(dim=(1, 2, 3))
    assert torch.allclose(out, ref.clamp(-3, 3), atol=1e-5)
    assert (out.abs() <= 3).all() and (ref.abs() > 3).any()  # the clip was exercised
    assert not SRM().kernel.requires_grad and SRM(learnable=True).kernel.requires_grad


@pytest.mark.parametrize("shape", [(8, 8), (9, 7), (32, 32), (3, 5)])
def test_dwt_equals_pywavelets(shape):
    x = torch.rand(2, 3, *shape, dtype=torch.float64)
    ours = DWT2("bior1.3")(x.float())
    ca, (ch, cv, cd) = pywt.dwt2(x.numpy(), "bior1.3", mode="symmetric")
    for band, ref in zip(ours, (ca, ch, cv, cd)):
        assert band.shape == ref.shape
        assert np.allclose(band.numpy(), ref, atol=1e-5)


def test_resnet_imagenet_loading(tmp_path, monkeypatch):
    source = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    target = build_resnet("resnet18", num_classes=2)
    fc_before = target.fc.weight.clone()
    prov = load_imagenet_resnet(target, "resnet18", "imagenet", str(path))
    assert prov["random_init"] is False and prov["weights"] == str(path) and len(prov["weights_sha256"]) == 64
    assert torch.equal(target.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert torch.equal(target.fc.weight, fc_before)  # the 1000-way head is not taken
    assert load_imagenet_resnet(target, "resnet18", "none", None)["random_init"] is True
    # A failed download is an error that says what to do, not a silent random init.
    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(HarnessError, match="backbone_weights"):
        load_imagenet_resnet(target, "resnet18", "imagenet", None)
    with pytest.raises(HarnessError, match="no published ImageNet weights"):
        load_imagenet_resnet(build_resnet("resnet10", 1), "resnet10", "imagenet", None)
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(HarnessError, match="do not fit"):
        load_imagenet_resnet(target, "resnet18", "imagenet", str(tmp_path / "bad.pth"))


def test_loaded_provenance_names_the_file_and_keeps_the_keys(tmp_path):
    official = tmp_path / "official.pth"
    torch.save(build_resnet("resnet10", 1).state_dict(), official)
    prov = loaded_resnet_provenance("resnet10", official)
    # The keys of an ImageNet-initialised ResNet (resnet_provenance + weights_sha256), filled in for the file.
    assert prov == {"family": "torchvision", "name": "resnet10", "pretrained": None, "weights": str(official),
                    "weights_sha256": hashlib.sha256(official.read_bytes()).hexdigest(), "random_init": False}
    assert set(resnet_provenance("resnet10")) < set(prov)
    # A harness checkpoint: its sidecar names the backbone it was trained from, kept as ``init``.
    imagenet = {**resnet_provenance("resnet18"), "pretrained": "imagenet", "random_init": False,
                "weights": "torchvision ResNet18_Weights.IMAGENET1K_V1"}
    first = save_checkpoint(tmp_path / "a" / "best.safetensors", {"w": torch.ones(2)}, {}, {"backbone": imagenet})
    prov = loaded_resnet_provenance("resnet18", first)
    assert prov["weights"] == str(first) and prov["random_init"] is False and prov["init"] == imagenet
    assert prov["weights_sha256"] == hashlib.sha256(first.read_bytes()).hexdigest()
    # Trained (or resumed) from that checkpoint: the root of the chain stays the init, not nested.
    second = save_checkpoint(tmp_path / "b" / "last.safetensors", {"w": torch.zeros(2)}, {}, {"backbone": prov})
    assert loaded_resnet_provenance("resnet18", second)["init"] == imagenet
    # No sidecar (or none with a backbone): no init is claimed.
    bare = save_checkpoint(tmp_path / "c" / "x.safetensors", {"w": torch.zeros(2)}, {})
    assert "init" not in loaded_resnet_provenance("resnet18", bare)


def official_blur(arr: np.ndarray, sigma: float) -> np.ndarray:
    """AIGCDetectBenchmark's gaussian_blur: scipy's filter on each 8-bit channel, in place."""
    out = arr.copy()
    for c in range(3):
        gaussian_filter(out[:, :, c], output=out[:, :, c], sigma=sigma)
    return out


def pil_jpeg(arr: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="jpeg", quality=quality)
    return np.array(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def test_blur_then_jpeg_equals_the_official_augmentation():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
    twin = 255 - arr
    gen = torch.Generator().manual_seed(5)
    out = blur_jpeg([Image.fromarray(arr), Image.fromarray(twin)], gen, blur_prob=1.0, blur_sigma=[1.25, 1.25],
                    jpeg_prob=1.0, jpeg_quality=[40, 40])
    # Blur first, then JPEG, the same draw for an image and its pair.
    np.testing.assert_array_equal(np.array(out[0]), pil_jpeg(official_blur(arr, 1.25), 40))
    np.testing.assert_array_equal(np.array(out[1]), pil_jpeg(official_blur(twin, 1.25), 40))
    only_blur = blur_jpeg([Image.fromarray(arr)], gen, blur_prob=1.0, blur_sigma=[2.5, 2.5], jpeg_prob=0.0,
                          jpeg_quality=[30, 100])
    np.testing.assert_array_equal(np.array(only_blur[0]), official_blur(arr, 2.5))
    # Probability 0: the images are untouched and the generator is not drawn from.
    state = gen.get_state()
    (same,) = blur_jpeg([Image.fromarray(arr)], gen, blur_prob=0.0, blur_sigma=[0, 3], jpeg_prob=0.0,
                        jpeg_quality=[30, 100])
    np.testing.assert_array_equal(np.array(same), arr)
    assert torch.equal(gen.get_state(), state)


def test_blur_jpeg_rates_and_ranges_follow_the_configuration():
    arr = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    image = Image.fromarray(arr)
    blurred = jpegged = 0
    for seed in range(300):
        gen = torch.Generator().manual_seed(seed)
        (out,) = blur_jpeg([image], gen, blur_prob=0.1, blur_sigma=[0.0, 3.0], jpeg_prob=0.0, jpeg_quality=[30, 100])
        blurred += not np.array_equal(np.array(out), arr)
        gen = torch.Generator().manual_seed(seed)
        (out,) = blur_jpeg([image], gen, blur_prob=0.0, blur_sigma=[0.0, 3.0], jpeg_prob=0.1, jpeg_quality=[30, 100])
        jpegged += not np.array_equal(np.array(out), arr)
    # Binomial(300, 0.1): mean 30, sd 5.2 (a blur with sigma near 0 can leave the image unchanged).
    assert 12 <= blurred <= 48 and 12 <= jpegged <= 48, (blurred, jpegged)
    # The quality is drawn from the closed integer range: find it by matching the round trip.
    seen = set()
    for seed in range(40):
        gen = torch.Generator().manual_seed(seed)
        (out,) = blur_jpeg([image], gen, blur_prob=0.0, blur_sigma=[0, 3], jpeg_prob=1.0, jpeg_quality=[98, 100])
        seen |= {q for q in (98, 99, 100) if np.array_equal(np.array(out), pil_jpeg(arr, q))}
    assert seen == {98, 99, 100}
