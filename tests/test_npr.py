"""NPR: residual, official key layout and size, adapter, input policy, a short training run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from harness.checkpoints import save_checkpoint
from harness.errors import HarnessError
from harness.images import load_image
from harness.registry import get_detector
from harness.plugins.detectors.npr import NPR, npr_residual
from tests.fakedata import write_pairs


def official_keys() -> dict[str, tuple[int, ...]]:
    """The official state-dict keys and shapes, enumerated from the architecture by hand:
    3x3 stem conv (3 -> 64), bn1, ResNet-50 layer1 (3 bottlenecks, planes 64) and layer2
    (4 bottlenecks, planes 128, stride 2), fc1 Linear(512, 1)."""
    keys: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 3, 3)}

    def bn(prefix, c):
        for name in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{prefix}.{name}"] = (c,)
        keys[f"{prefix}.num_batches_tracked"] = ()

    bn("bn1", 64)
    inplanes = 64
    for stage, (planes, blocks) in enumerate([(64, 3), (128, 4)], start=1):
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            cin = inplanes if b == 0 else planes * 4
            keys[f"{p}.conv1.weight"] = (planes, cin, 1, 1)
            bn(f"{p}.bn1", planes)
            keys[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{p}.bn2", planes)
            keys[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            bn(f"{p}.bn3", planes * 4)
            if b == 0:
                keys[f"{p}.downsample.0.weight"] = (planes * 4, cin, 1, 1)
                bn(f"{p}.downsample.1", planes * 4)
        inplanes = planes * 4
    keys["fc1.weight"] = (1, 512)
    keys["fc1.bias"] = (1,)
    return keys


def test_residual_matches_per_pixel_reference():
    x = torch.randn(2, 3, 8, 6)
    ref = torch.empty_like(x)
    for b in range(2):
        for c in range(3):
            for i in range(8):
                for j in range(6):
                    ref[b, c, i, j] = x[b, c, i, j] - x[b, c, 2 * (i // 2), 2 * (j // 2)]
    assert torch.equal(npr_residual(x), ref)
    # The official double interpolation gives the same on even sizes.
    official = x - F.interpolate(F.interpolate(x, scale_factor=0.5, mode="nearest"), scale_factor=2.0, mode="nearest")
    assert torch.equal(npr_residual(x), official)
    # A nearest-upsampled image has no residual at all; odd sizes keep their shape.
    up = x[..., ::2, ::2].repeat_interleave(2, -1).repeat_interleave(2, -2)
    assert torch.count_nonzero(npr_residual(up)) == 0
    assert npr_residual(torch.randn(1, 3, 7, 9)).shape == (1, 3, 7, 9)


def test_official_layout_size_and_forward_shape():
    model = NPR()
    state = model.state_dict()
    expected = official_keys()
    assert len(state) == 146 == len(expected)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    n_params = sum(p.numel() for p in model.parameters())
    # Parameters = every key except BN running statistics, counted from the hand enumeration.
    by_hand = sum(int(np.prod(s)) for k, s in expected.items()
                  if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert n_params == by_hand
    assert abs(n_params - 1.45e6) < 0.02e6
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(3, 3, 32, 32)).shape == (3,)
        assert model.features(torch.rand(2, 3, 32, 32)).shape == (2, 512)
    assert get_detector("npr") is NPR


def _perturbed(model: NPR, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in model.state_dict().items():
        out[k] = v if v.dtype == torch.long else torch.randn(v.shape, generator=gen) * 0.05 + (1.0 if "running_var" in k else 0.0)
    return out


@pytest.mark.parametrize("wrap", ["plain", "module", "model_dict"])
def test_official_checkpoint_loads(tmp_path, wrap):
    source = NPR().eval()
    state = _perturbed(source, 1)
    source.load_state_dict(state)
    if wrap == "module":
        state = {f"module.{k}": v for k, v in state.items()}
    elif wrap == "model_dict":
        state = {"model": state, "total_steps": torch.tensor(7)}
    path = tmp_path / "NPR.pth"
    torch.save(state, path)
    target = NPR().eval()
    target.load_weights(path)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(target(x), source(x))


def test_harness_checkpoint_roundtrip(tmp_path):
    source = NPR().eval()
    source.load_state_dict(_perturbed(source, 2))
    path = save_checkpoint(tmp_path / "best.safetensors", source.checkpoint_state(), source.config)
    target = NPR().eval()
    target.load_weights(path)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(target(x), source(x))


def test_mismatched_checkpoints_are_clear_errors(tmp_path):
    state = NPR().state_dict()
    missing = {k: v for k, v in state.items() if k != "layer2.3.conv3.weight"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(HarnessError, match="layer2.3.conv3.weight"):
        NPR().load_weights(tmp_path / "missing.pth")
    wrong = dict(state, **{"fc1.weight": torch.zeros(1, 2048)})
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(HarnessError, match="fc1.weight"):
        NPR().load_weights(tmp_path / "wrong.pth")
    torch.save({"fc.weight": torch.zeros(1, 2048)}, tmp_path / "other.pth")
    with pytest.raises(HarnessError, match="unexpected"):
        NPR().load_weights(tmp_path / "other.pth")
    with pytest.raises(HarnessError):
        NPR().load_weights(tmp_path / "absent.pth")


def test_input_policies():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    model = NPR()
    (test_x,) = model.preprocess([img])
    assert test_x.shape == (3, 256, 256)
    assert model.input_policy().geometry == "resize"
    # Training: square resize -> random crop -> flip; one draw per call, reproducible per seed.
    a = model.preprocess([img, img], train=True, generator=torch.Generator().manual_seed(3))
    b = model.preprocess([img], train=True, generator=torch.Generator().manual_seed(3))
    assert a[0].shape == (3, 224, 224) and torch.equal(a[0], a[1]) and torch.equal(a[0], b[0])
    # GenImage setting: tile the small image, centre-crop 224 (pixels copied, not resampled).
    tiled = NPR({"tile_crop": True})
    (t,) = tiled.preprocess([img])
    assert t.shape == (3, 224, 224)
    top, left = (240 - 224) // 2, (250 - 224) // 2  # 6 x 5 tiles of 40 x 50 -> 240 x 250
    ref = np.tile(arr, (6, 5, 1))[top : top + 224, left : left + 224].transpose(2, 0, 1) / 255.0
    assert np.allclose(t.numpy(), ref, atol=1e-6)


def test_mini_profile_fits_mini_crops():
    profile = NPR.profiles["mini"]
    model = NPR(profile["detector"]).eval()
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    (test_x,) = model.preprocess([img])
    (train_x,) = model.preprocess([img], train=True, generator=torch.Generator().manual_seed(0))
    # 64x64 crops stay at their own size (no resampling of the 2x2 trace) at test.
    assert torch.allclose(test_x, torch.from_numpy(np.array(img)).permute(2, 0, 1) / 255.0, atol=1e-6)
    assert train_x.shape == (3, 56, 56)
    with torch.no_grad():
        assert model(torch.stack([test_x])).shape == (1,)
    assert "scaled down" in profile["detector"]["_note"] and "scaled down" in profile["train"]["_note"]


def _tensors(model, paths, train, seed=0):
    xs = []
    for i, p in enumerate(paths):
        gen = torch.Generator().manual_seed(seed * 100_003 + i) if train else None
        xs.append(model.preprocess([load_image(p)], train=train, generator=gen)[0])
    return torch.stack(xs)


@pytest.fixture
def one_thread():
    """Train on one thread: with two OpenMP threads on a busy 2-core machine, spinning
    threads made each step 15-25x slower in wall time and CPU time."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_short_training_beats_chance(tmp_path, one_thread):
    torch.manual_seed(0)
    train_pairs = write_pairs(tmp_path / "tr" / "real", tmp_path / "tr" / "fake", 48, size=32, seed=1)
    test_pairs = write_pairs(tmp_path / "te" / "real", tmp_path / "te" / "fake", 24, size=32, seed=2)
    model = NPR({"load_size": 32, "crop_size": 28})
    paths = [p for pair in train_pairs for p in pair]
    labels = torch.tensor([0, 1] * len(train_pairs))
    opt = model.configure_optimizer(model.parameters_to_train(), NPR.training)
    model.train()
    for step in range(25):
        idx = torch.randperm(len(paths), generator=torch.Generator().manual_seed(step))[:32]
        x = _tensors(model, [paths[i] for i in idx], train=True, seed=step)
        loss = model.training_step({"x": x, "label": labels[idx]})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    test_paths = [p for pair in test_pairs for p in pair]
    test_labels = np.array([0, 1] * len(test_pairs))
    with torch.no_grad():
        logits = model(_tensors(model, test_paths, train=False)).numpy()
    acc = ((logits > 0) == test_labels).mean()
    assert acc >= 0.8, acc
