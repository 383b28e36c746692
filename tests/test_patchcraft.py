"""PatchCraft / RPTC: rich/poor tiling, official key layout, filters per channel, checkpoints, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F
from torchvision.transforms.v2 import functional as TF

from harness.checkpoints import save_checkpoint
from harness.errors import HarnessError
from harness.images import load_image
from harness.config import merge
from harness.registry import get_detector
from harness.training import train_config
from harness.plugins.detectors.patchcraft import PatchCraft
from harness.plugins.detectors.patchops import srm30_kernels
from tests.fakedata import write_pairs
from tests.test_patchops import complexity_by_loops, official_blur, pil_jpeg, recalibrate_batchnorm, reference_ranking
from tests.test_ssp import perturbed


def official_keys() -> dict[str, tuple[int, ...]]:
    """The RPTC ``netC`` keys and shapes, enumerated by hand from the published architecture."""
    keys: dict[str, tuple[int, ...]] = {"group1.hpf.weight": (30, 1, 5, 5)}

    def conv_bn(prefix, conv_index, cin):
        keys[f"{prefix}.{conv_index}.weight"] = (32, cin, 3, 3)
        keys[f"{prefix}.{conv_index}.bias"] = (32,)
        for part in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{prefix}.{conv_index + 1}.{part}"] = (32,)
        keys[f"{prefix}.{conv_index + 1}.num_batches_tracked"] = ()

    conv_bn("group1_b", 0, 90)
    for group, convs in (("group2", 4), ("group3", 2), ("group4", 2), ("group5", 2)):
        for i in range(convs):
            conv_bn(group, 3 * i, 32)  # conv, BN, ReLU repeat; the pool (if any) comes last
    keys["fc2.weight"] = (1, 32)
    keys["fc2.bias"] = (1,)
    return keys


def test_official_layout_and_registration():
    model = PatchCraft()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == official_keys()
    assert torch.equal(model.group1.hpf.weight[:, 0], srm30_kernels())
    assert not model.group1.hpf.weight.requires_grad
    assert get_detector("patchcraft") is PatchCraft


def test_forward_shapes_and_per_channel_filters():
    model = PatchCraft({"grid": 2, "patch_size": 8}).eval()
    x = torch.rand(3, 2, 3, 16, 16)
    with torch.no_grad():
        assert model(x).shape == (3,)
        # 90 maps = for each colour channel in turn, its 30 filter responses.
        maps = model.group1(x[:, 0].reshape(9, 1, 16, 16)).reshape(3, 90, 16, 16)
        filters = srm30_kernels().unsqueeze(1)
        for c in range(3):
            ref = F.conv2d(x[:, 0, c : c + 1], filters, padding=2)
            assert torch.allclose(maps[:, 30 * c : 30 * (c + 1)], ref, atol=1e-6)
    with pytest.raises(HarnessError, match=r"\[B, 2, 3, S, S\]"):
        model(torch.rand(2, 3, 16, 16))


def test_contrast_is_poor_minus_rich():
    # Identical poor and rich views have no contrast: the output is the head on zero features
    # after the conv groups, the same for any image content.
    model = PatchCraft({"grid": 2, "patch_size": 8}).eval()
    a, b = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        same_a = model(torch.stack([a, a], dim=1))
        same_b = model(torch.stack([b, b], dim=1))
        differ = model(torch.stack([a, b], dim=1))
    assert torch.allclose(same_a, same_b, atol=1e-6)
    assert not torch.allclose(same_a, differ, atol=1e-4)


def test_head_is_p_fake_without_conversion():
    model = PatchCraft({"grid": 2, "patch_size": 8}).eval()
    with torch.no_grad():
        model.fc2.weight.zero_()
        model.fc2.bias.fill_(1.5)
        assert torch.allclose(model(torch.rand(2, 2, 3, 16, 16)), torch.full((2,), 1.5))


@pytest.mark.parametrize("wrap", ["netC_module", "netC", "bare"])
def test_official_checkpoint_loads(tmp_path, wrap):
    source = PatchCraft().eval()
    state = perturbed(source, 3)
    state["group1.hpf.weight"] = source.state_dict()["group1.hpf.weight"]
    source.load_state_dict(state)
    if wrap == "netC_module":
        blob = {"netC": {f"module.{k}": v for k, v in state.items()}}
    elif wrap == "netC":
        blob = {"netC": state}
    else:
        blob = state
    torch.save(blob, tmp_path / "rptc.pth")
    target = PatchCraft().eval()
    target.load_weights(tmp_path / "rptc.pth")
    x = torch.rand(1, 2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(target(x), source(x))
    harness = save_checkpoint(tmp_path / "best.safetensors", source.checkpoint_state(), source.config)
    again = PatchCraft().eval()
    again.load_weights(harness)
    with torch.no_grad():
        assert torch.equal(again(x), source(x))


def test_mismatched_checkpoint_is_a_clear_error(tmp_path):
    state = PatchCraft().state_dict()
    del state["group3.4.running_var"]
    torch.save({"netC": state}, tmp_path / "broken.pth")
    with pytest.raises(HarnessError, match="group3.4.running_var"):
        PatchCraft().load_weights(tmp_path / "broken.pth")


def test_tiling_equals_brute_force():
    rng = np.random.default_rng(0)
    arr = np.clip(rng.normal(128, 50, (40, 44, 3)) * np.linspace(0.1, 1.2, 44)[None, :, None], 0, 255).astype(np.uint8)
    image = Image.fromarray(arr)
    no_augment = {"blur_prob": 0.0, "jpeg_prob": 0.0}  # probability 0 draws nothing: the crops get seed 7
    model = PatchCraft({"grid": 2, "patch_size": 8, "factor": 3, "augment": no_augment})
    (x,) = model.preprocess([image], train=True, generator=torch.Generator().manual_seed(7))
    assert x.shape == (2, 3, 16, 16)
    order, tops, lefts = reference_ranking(image, 8, 12, 7)
    poor, rich = order[:4], order[::-1][:4]
    for view, chosen in ((0, poor), (1, rich)):
        for k, i in enumerate(chosen):
            r, c = divmod(k, 2)  # row-major
            crop = torch.from_numpy(arr[tops[i] : tops[i] + 8, lefts[i] : lefts[i] + 8]).permute(2, 0, 1) / 255
            assert torch.equal(x[view, :, r * 8 : (r + 1) * 8, c * 8 : (c + 1) * 8], crop)
    # Test time: seeded by the image content, reproducible.
    assert torch.equal(model.preprocess([image])[0], model.preprocess([image.copy()])[0])


def crop_positions(arr: np.ndarray, tile: np.ndarray) -> list[tuple[int, int]]:
    """Every (top, left) where ``tile`` [P, P, 3] occurs in ``arr`` [H, W, 3], by brute force."""
    p = tile.shape[0]
    windows = np.lib.stride_tricks.sliding_window_view(arr, (p, p), axis=(0, 1))  # [H-p+1, W-p+1, 3, p, p]
    hits = (windows == tile.transpose(2, 0, 1)).all(axis=(2, 3, 4))
    return [tuple(int(v) for v in pos) for pos in np.argwhere(hits)]


def test_training_blurs_and_compresses_before_the_crops():
    """AIGCDetectBenchmark's data_augment (blur, then JPEG) on the decoded image: every training
    tile is a crop of the augmented image, the pair's tiles come from the same places, and the
    ranking is that of the augmented crops. Test-time inputs are never augmented."""
    rng = np.random.default_rng(3)
    arr = np.clip(rng.normal(128, 50, (40, 44, 3)) * np.linspace(0.1, 1.2, 44)[None, :, None], 0, 255).astype(np.uint8)
    twin = (255 - arr).astype(np.uint8)
    always = {"blur_prob": 1.0, "blur_sigma": [1.5, 1.5], "jpeg_prob": 1.0, "jpeg_quality": [50, 50]}
    model = PatchCraft({"grid": 2, "patch_size": 8, "augment": always})
    x, y = model.preprocess([Image.fromarray(arr), Image.fromarray(twin)], train=True,
                            generator=torch.Generator().manual_seed(7))
    aug, aug_twin = pil_jpeg(official_blur(arr, 1.5), 50), pil_jpeg(official_blur(twin, 1.5), 50)
    scores = {}
    for view in (0, 1):
        for r in range(2):
            for c in range(2):
                cell = (view, slice(None), slice(r * 8, (r + 1) * 8), slice(c * 8, (c + 1) * 8))
                tile, pair = (np.array(TF.to_pil_image(t[cell])) for t in (x, y))
                places = crop_positions(aug, tile)
                assert places, (view, r, c)
                assert any(np.array_equal(aug_twin[t : t + 8, l : l + 8], pair) for t, l in places)
                scores[view, r, c] = complexity_by_loops(tile)
    poor = [scores[0, r, c] for r in range(2) for c in range(2)]
    rich = [scores[1, r, c] for r in range(2) for c in range(2)]
    assert poor == sorted(poor) and rich == sorted(rich, reverse=True) and max(poor) <= min(rich)
    # At test time the same configuration leaves the image alone.
    plain = PatchCraft({"grid": 2, "patch_size": 8, "augment": {"blur_prob": 0.0, "jpeg_prob": 0.0}})
    assert torch.equal(model.preprocess([Image.fromarray(arr)])[0], plain.preprocess([Image.fromarray(arr)])[0])


def test_recipe_is_aigcdetectbenchmark_early_stopping():
    """options.py / train.py: Adam 1e-4, batch 64, niter 1000 with early stopping after 5 epochs
    without a better val accuracy; blur and JPEG with p 0.1, sigma 0-3, quality 30-100."""
    cfg = train_config({"train": PatchCraft.training})
    assert (cfg["epochs"], cfg["batch_size"], cfg["lr"]) == (1000, 64, 1e-4)
    assert (cfg["patience"], cfg["select"], cfg["schedule"]) == (5, "acc", "constant")
    assert PatchCraft.defaults["augment"] == {"blur_prob": 0.1, "blur_sigma": [0.0, 3.0], "jpeg_prob": 0.1,
                                              "jpeg_quality": [30, 100]}
    mini = train_config({"train": merge(PatchCraft.training, PatchCraft.profiles["mini"]["train"])})
    assert mini["epochs"] == 2 and mini["patience"] is None


def test_small_images_are_resized_to_one_patch():
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (5, 30, 3), dtype=np.uint8))
    (x,) = PatchCraft({"grid": 2, "patch_size": 8}).preprocess([image])
    patch = torch.from_numpy(np.array(image.resize((8, 8), Image.BILINEAR))).permute(2, 0, 1) / 255
    assert torch.equal(x, patch.repeat(2, 1, 2, 2).reshape(2, 3, 16, 16))


def _batch(model, paths, train, seed=0):
    xs = []
    for i, p in enumerate(paths):
        gen = torch.Generator().manual_seed(seed * 100_003 + i) if train else None
        xs.append(model.preprocess([load_image(p)], train=train, generator=gen)[0])
    return torch.stack(xs)


def test_short_training_beats_chance(tmp_path):
    torch.manual_seed(0)
    train_pairs = write_pairs(tmp_path / "tr" / "real", tmp_path / "tr" / "fake", 48, size=32, seed=1)
    test_pairs = write_pairs(tmp_path / "te" / "real", tmp_path / "te" / "fake", 24, size=32, seed=2)
    model = PatchCraft({"grid": 2, "patch_size": 8})
    paths = [p for pair in train_pairs for p in pair]
    labels = torch.tensor([0, 1] * len(train_pairs))
    opt = model.configure_optimizer(model.parameters_to_train(), {"lr": 1e-3})
    model.train()
    batches = []
    for step in range(15):
        idx = torch.randperm(len(paths), generator=torch.Generator().manual_seed(step))[:32]
        x = _batch(model, [paths[i] for i in idx], True, step)
        loss = model.training_step({"x": x, "label": labels[idx]})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        batches.append(x)
    recalibrate_batchnorm(model, batches[-3:])
    test_paths = [p for pair in test_pairs for p in pair]
    with torch.no_grad():
        logits = model(_batch(model, test_paths, False)).numpy()
    acc = ((logits > 0) == np.array([0, 1] * len(test_pairs))).mean()
    assert acc >= 0.8, acc
