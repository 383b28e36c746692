"""IPD-Net: dependency matrix vs an explicit loop, shapes per truncation, input policy, adapter, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from harness.checkpoints import save_checkpoint
from harness.errors import HarnessError
from harness.images import load_image
from harness.registry import get_detector
from harness.plugins.detectors.ipdnet import DependencyHead, IPDNet, feature_side, reflect_pad
from tests.fakedata import write_pairs

TINY = {"layer": 2, "pad": 8, "crop": 32, "size": 32, "hidden": 8}


def test_dependency_matrix_matches_explicit_loop():
    torch.manual_seed(0)
    b, c, h, w = 2, 6, 3, 4
    head = DependencyHead(c, h * w, num_linear=1, hidden=4, mode="matrix")
    feat = torch.randn(b, c, h, w, dtype=torch.float64)
    head = head.double()
    wq, bq = head.theta.weight[:, :, 0, 0], head.theta.bias
    wk, bk = head.phi.weight[:, :, 0, 0], head.phi.bias
    ref = torch.zeros(b, h * w, h * w, dtype=torch.float64)
    for n in range(b):
        cells = [feat[n, :, i // w, i % w] for i in range(h * w)]  # row-major patch order
        for i in range(h * w):
            for j in range(h * w):
                qi = sum(wq[:, ch] * cells[i][ch] for ch in range(c)) + bq
                kj = sum(wk[:, ch] * cells[j][ch] for ch in range(c)) + bk
                ref[n, i, j] = sum(qi[m] * kj[m] for m in range(c // 2))
    with torch.no_grad():
        dep = head.dependency_matrix(feat)
        assert dep.shape == (b, h * w, h * w)
        assert torch.allclose(dep, ref, atol=1e-10)
        # Pooled vector: for patch j the mean over all i of its dependency scores.
        pooled = head.pooled(feat)
        assert torch.allclose(pooled, ref.mean(dim=1), atol=1e-10)
        # The O(HW) factored form gives the same numbers.
        head.mode = "factored"
        assert torch.allclose(head.pooled(feat), pooled, atol=1e-10)


@pytest.mark.parametrize("layer,size", [(2, 32), (3, 48), (4, 64), (2, 37)])
def test_forward_shapes_per_truncation(layer, size):
    model = IPDNet({"layer": layer, "pad": 8, "crop": size, "size": size}).eval()
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        feat = model.feature_map(x)
        side = feature_side(size, layer)
        assert feat.shape == (2, {2: 512, 3: 1024, 4: 2048}[layer], side, side)
        assert model(x).shape == (2,)
    linears = [m for m in model.head.classifier if isinstance(m, torch.nn.Linear)]
    # The paper: two linear layers after layer2, one after layer3 / layer4; input = H*W cells.
    assert len(linears) == (2 if layer == 2 else 1)
    assert linears[0].in_features == side * side
    assert model.head.theta.out_channels == feat.shape[1] // 2


def test_backbone_is_torchvision_resnet50_truncated():
    from torchvision.models import resnet50

    full = {k: tuple(v.shape) for k, v in resnet50(weights=None).state_dict().items()}
    for layer in (2, 4):
        model = IPDNet({"layer": layer, "size": 64, "crop": 64})
        ours = {k[len("backbone."):]: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("backbone.")}
        kept = ("conv1.", "bn1.") + tuple(f"layer{i}." for i in range(1, layer + 1))
        assert ours == {k: s for k, s in full.items() if k.startswith(kept)}


def test_defaults_and_wrong_input_size():
    model = IPDNet()
    assert model.config["size"] == 256 and model.head.num_patches == 8 * 8  # layer4 at 256 px
    assert "(HW)^2" in IPDNet.description
    assert get_detector("ipdnet") is IPDNet
    tiny = IPDNet(TINY).eval()
    with pytest.raises(HarnessError, match="detector.size"):
        tiny(torch.rand(1, 3, 64, 64))
    with pytest.raises(HarnessError, match="layer"):
        IPDNet({"layer": 1})


def test_mini_profile_fits_mini_crops():
    profile = IPDNet.profiles["mini"]
    model = IPDNet(profile["detector"]).eval()
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    x = torch.stack(model.preprocess([img]) + model.preprocess([img], train=True, generator=torch.Generator()))
    with torch.no_grad():
        assert model(x).shape == (2,)
    assert model.head.num_patches == 8 * 8
    assert "scaled down" in profile["detector"]["_note"] and "scaled down" in profile["train"]["_note"]


def test_reflect_pad_matches_numpy_for_any_pad():
    rng = np.random.default_rng(0)
    for shape, pad in [((3, 5, 7), 20), ((3, 1, 4), 6), ((2, 30, 40), 224), ((1, 3, 3), 1)]:
        a = rng.random(shape)
        ref = np.pad(a, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
        assert np.array_equal(reflect_pad(torch.from_numpy(a), pad).numpy(), ref)


def test_preprocess_geometry_and_augmentation():
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (20, 26, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    # crop == size: no resize, so the test output is the exact centre of the reflect-padded image.
    model = IPDNet({"layer": 2, "pad": 30, "crop": 40, "size": 40, "augment": {"blur_prob": 0.0, "jpeg_prob": 0.0}})
    (x,) = model.preprocess([img])
    padded = np.pad(arr, ((30, 30), (30, 30), (0, 0)), mode="reflect")
    top, left = (80 - 40) // 2, (86 - 40) // 2
    ref = padded[top : top + 40, left : left + 40].transpose(2, 0, 1) / 255.0
    assert np.allclose(x.numpy(), ref, atol=1e-6)
    # The paper's geometry: pad 224, crop 224, resize 256.
    assert IPDNet().preprocess([img])[0].shape == (3, 256, 256)
    # Training: a random crop of the padded image, the same draw for every image of the call.
    a, b = model.preprocess([img, img], train=True, generator=torch.Generator().manual_seed(5))
    (c,) = model.preprocess([img], train=True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and torch.equal(a, c)
    got = a.numpy()
    windows = [padded[t : t + 40, l : l + 40].transpose(2, 0, 1) / 255.0 for t in range(41) for l in range(47)]
    assert any(np.allclose(got, win, atol=1e-6) or np.allclose(got, win[:, :, ::-1], atol=1e-6) for win in windows)
    # Blur and JPEG always on: the output changes but keeps its shape and range.
    always = IPDNet({"layer": 2, "pad": 30, "crop": 40, "size": 40,
                     "augment": {"blur_prob": 1.0, "blur_sigma": [1.0, 2.0], "jpeg_prob": 1.0, "jpeg_quality": [30, 40]}})
    (d,) = always.preprocess([img], train=True, generator=torch.Generator().manual_seed(5))
    assert d.shape == c.shape and not torch.equal(d, c) and 0 <= float(d.min()) and float(d.max()) <= 1
    # Blurring lowers the high-frequency energy of the crop.
    assert float(d.diff(dim=-1).abs().mean()) < float(c.diff(dim=-1).abs().mean())


def _perturbed_state(model, seed):
    gen = torch.Generator().manual_seed(seed)
    return {k: (v if v.dtype == torch.long else v + 0.01 * torch.randn(v.shape, generator=gen))
            for k, v in model.state_dict().items()}


def test_checkpoints_load_and_mismatch_is_an_error(tmp_path):
    source = IPDNet(TINY).eval()
    source.load_state_dict(_perturbed_state(source, 0))
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, tmp_path / "ddp.pth")
    path = save_checkpoint(tmp_path / "best.safetensors", source.checkpoint_state(), source.config)
    x = torch.rand(2, 3, 32, 32)
    for file in (tmp_path / "ddp.pth", path):
        target = IPDNet(TINY).eval()
        target.load_weights(file)
        with torch.no_grad():
            assert torch.equal(target(x), source(x))
    # A checkpoint of another truncation depth or input size does not fit.
    with pytest.raises(HarnessError, match="layer=3"):
        IPDNet(dict(TINY, layer=3)).load_weights(path)
    with pytest.raises(HarnessError, match=r"1 wrong shapes \(file != model\) \['head.classifier.0.weight \[8, 16\] != \[8, 64\]'\]"):
        IPDNet(dict(TINY, size=64, crop=64)).load_weights(path)


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
    model = IPDNet(TINY)
    paths = [p for pair in train_pairs for p in pair]
    labels = torch.tensor([0, 1] * len(train_pairs))
    opt = model.configure_optimizer(model.parameters_to_train(), IPDNet.training)
    assert not model.srm.kernel.requires_grad  # fixed SRM filters
    model.train()
    for step in range(20):
        idx = torch.randperm(len(paths), generator=torch.Generator().manual_seed(step))[:32]
        x = torch.stack([model.preprocess([load_image(paths[i])], train=True,
                                          generator=torch.Generator().manual_seed(step * 1000 + int(i)))[0]
                         for i in idx])
        loss = model.training_step({"x": x, "label": labels[idx]})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    # After 20 steps from scratch the BN running averages still lag the weights (the raw,
    # unnormalised dot products amplify that); recompute them on training images, as a
    # long run's would have settled, before testing in eval mode.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    with torch.no_grad():
        model(torch.stack([model.preprocess([load_image(p)])[0] for p in paths[:64]]))
    model.eval()
    test_paths = [p for pair in test_pairs for p in pair]
    test_labels = np.array([0, 1] * len(test_pairs))
    with torch.no_grad():
        x = torch.stack([model.preprocess([load_image(p)])[0] for p in test_paths])
        logits = model(x).numpy()
    acc = ((logits > 0) == test_labels).mean()
    assert acc >= 0.8, acc
