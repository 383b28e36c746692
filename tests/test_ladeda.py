"""LaDeDa and Tiny-LaDeDa: the official layout, patch locality, pooling and the input transforms."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from harness.checkpoints import save_checkpoint
from harness.errors import HarnessError
from harness.plugins.detectors.ladeda import GRADIENT_KERNELS, LaDeDa, TinyLaDeDa, input_transform

# Counted on the official classes (barcavia/RealTime-DeepfakeDetection-in-the-RealWorld @e734562):
# LaDeDa(Bottleneck, [3, 4, 6, 3], strides=[2, 2, 2, 1], kernel3=[1, 1, 0, 0]) with fc Linear(2048, 1), and
# tiny_ladeda("right_diag") with fc Linear(8, 1).
OFFICIAL = {"ladeda": (13_641_793, 321), "tiny-ladeda": (1_297, 21)}


def randomise_batch_norm(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))


@pytest.mark.parametrize("cls", [LaDeDa, TinyLaDeDa])
def test_sizes_and_key_layout_match_the_official_models(cls):
    model = cls()
    params, keys = OFFICIAL[cls.name]
    assert sum(p.numel() for p in model.parameters()) == params
    assert len(model.state_dict()) == keys


def test_official_key_names_and_kernel_sizes_of_ladeda9():
    shapes = {k: tuple(v.shape) for k, v in LaDeDa().state_dict().items()}
    assert shapes["conv1.weight"] == (64, 3, 1, 1) and shapes["conv2.weight"] == (64, 64, 3, 3)
    # kernel3 = [1, 1, 0, 0]: 3x3 only in the first block of stages 1 and 2.
    assert shapes["layer1.0.conv2.weight"] == (64, 64, 3, 3) and shapes["layer1.1.conv2.weight"] == (64, 64, 1, 1)
    assert shapes["layer2.0.conv2.weight"] == (128, 128, 3, 3) and shapes["layer3.0.conv2.weight"] == (256, 256, 1, 1)
    assert shapes["layer4.0.downsample.0.weight"] == (2048, 1024, 1, 1) and shapes["fc.weight"] == (1, 2048)
    tiny = {k: tuple(v.shape) for k, v in TinyLaDeDa().state_dict().items()}
    assert tiny["layer1.0.conv2.weight"] == (8, 8, 3, 3) and tiny["fc.weight"] == (1, 8)


@pytest.mark.parametrize("cls, side", [(LaDeDa, 9), (TinyLaDeDa, 7)])
def test_each_patch_score_sees_only_its_own_patch(cls, side):
    """The input pixels that reach one patch score form a side x side square (LaDeDa9: the paper's 9x9)."""
    model = cls().eval()
    x = torch.rand(1, 3, 48, 48, requires_grad=True)
    scores = model.patch_logits(x)
    i, j = scores.shape[1] // 2, scores.shape[2] // 2
    scores[0, i, j].backward()
    rows, cols = x.grad[0].abs().sum(0).nonzero(as_tuple=True)
    assert int(rows.max() - rows.min()) + 1 == side and int(cols.max() - cols.min()) + 1 == side


@pytest.mark.parametrize("cls", [LaDeDa, TinyLaDeDa])
def test_image_logit_is_the_mean_of_the_patch_logits(cls):
    model = cls({"width": 16, "layers": [1, 1, 1, 1]} if cls is LaDeDa else None).eval()
    randomise_batch_norm(model)
    x = torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        patches = model.patch_logits(x)
        assert model(x) == pytest.approx(patches.mean(dim=(1, 2)), abs=1e-4)


def test_gradient_inputs_are_per_channel_cross_correlations():
    x = torch.rand(1, 3, 6, 7)
    padded = F.pad(x, (1, 1, 1, 1))
    for kind, kernel in GRADIENT_KERNELS.items():
        got = input_transform(x, kind)
        for c in range(3):
            for r in range(6):
                for s in range(7):
                    window = padded[0, c, r:r + 3, s:s + 3]
                    expected = sum(kernel[a][b] * float(window[a, b]) for a in range(3) for b in range(3))
                    assert float(got[0, c, r, s]) == pytest.approx(expected, abs=1e-5)
    # NPR: pixel minus the top-left pixel of its 2x2 block.
    npr = input_transform(x[..., :6], "NPR")
    assert float(npr[0, 1, 3, 5]) == pytest.approx(float(x[0, 1, 3, 5] - x[0, 1, 2, 4]))


def test_official_files_load_and_mismatches_are_one_clear_error(tmp_path):
    source = TinyLaDeDa().eval()
    randomise_batch_norm(source, seed=3)
    official = tmp_path / "WildRF_Tiny_LaDeDa.pth"
    torch.save(source.state_dict(), official)  # the released files are plain state dicts
    loaded = TinyLaDeDa().eval()
    loaded.load_weights(official)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))
    with pytest.raises(HarnessError, match="does not fit detector .ladeda.*wrong shapes"):
        LaDeDa({"width": 16, "layers": [1, 1, 1, 1]}).load_weights(official)
    harness_file = save_checkpoint(tmp_path / "tiny.safetensors", source.checkpoint_state(), source.config)
    again = TinyLaDeDa().eval()
    again.load_weights(harness_file)
    with torch.no_grad():
        assert torch.equal(again(x), source(x))


def test_official_test_geometry_and_bad_settings():
    from PIL import Image

    model = TinyLaDeDa()
    policy = model.input_policy(False)
    assert (policy.geometry, policy.size, policy.mean) == ("resize", 256, (0.485, 0.456, 0.406))
    out = model.preprocess([Image.new("RGB", (300, 170), (10, 20, 30))])
    assert out[0].shape == (3, 256, 256)
    train = model.preprocess([Image.new("RGB", (300, 170))], train=True, generator=torch.Generator().manual_seed(0))
    assert train[0].shape == (3, 224, 224)
    with pytest.raises(HarnessError, match="detector.input"):
        TinyLaDeDa({"input": "sobel"})
    with pytest.raises(HarnessError, match="4 entries"):
        LaDeDa({"layers": [3, 4, 6]})


@pytest.mark.parametrize("cls", [LaDeDa, TinyLaDeDa])
def test_registry_entries_describe_the_model_they_load_into(cls):
    shapes = {k: tuple(v.shape) for k, v in cls().state_dict().items()}
    assert cls.checkpoints
    for entry in cls.checkpoints:
        assert entry.keys and all(shapes[k] == tuple(v) for k, v in entry.keys.items()), entry.name
        if entry.host == "url":  # the released Tiny-LaDeDa files: hashed from the official commit's blobs
            assert len(entry.sha256) == 64 and entry.size
