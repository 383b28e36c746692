"""SSP: patch rule, official key layout and label inversion, checkpoints and their provenance,
loaded weights surviving the start of training, a short training run."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch.nn import functional as F

from harness.checkpoints import save_checkpoint
from harness.errors import HarnessError
from harness.images import load_image
from harness.registry import get_detector
from harness.suite import Sample
from harness.training import train
from harness.plugins.detectors.ssp import SSP
from tests.fakedata import write_pairs
from tests.test_patchops import recalibrate_batchnorm, reference_ranking


def resnet50_keys(prefix: str, num_classes: int) -> dict[str, tuple[int, ...]]:
    """Torchvision ResNet-50 state-dict keys and shapes, enumerated from the architecture by hand."""
    keys: dict[str, tuple[int, ...]] = {f"{prefix}conv1.weight": (64, 3, 7, 7)}

    def bn(name, c):
        for part in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{prefix}{name}.{part}"] = (c,)
        keys[f"{prefix}{name}.num_batches_tracked"] = ()

    bn("bn1", 64)
    inplanes = 64
    for stage, (planes, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], start=1):
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            cin = inplanes if b == 0 else planes * 4
            keys[f"{prefix}{p}.conv1.weight"] = (planes, cin, 1, 1)
            bn(f"{p}.bn1", planes)
            keys[f"{prefix}{p}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{p}.bn2", planes)
            keys[f"{prefix}{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            bn(f"{p}.bn3", planes * 4)
            if b == 0:
                keys[f"{prefix}{p}.downsample.0.weight"] = (planes * 4, cin, 1, 1)
                bn(f"{p}.downsample.1", planes * 4)
        inplanes = planes * 4
    keys[f"{prefix}fc.weight"] = (num_classes, 2048)
    keys[f"{prefix}fc.bias"] = (num_classes,)
    return keys


def perturbed(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The model's state with every float tensor replaced by random values (BN variances positive)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in model.state_dict().items():
        if v.dtype == torch.long:
            out[k] = v
        elif "running_var" in k:
            out[k] = torch.rand(v.shape, generator=gen) + 0.5
        else:
            out[k] = torch.randn(v.shape, generator=gen) * 0.05
    return out


def test_official_layout_and_registration():
    state = SSP().state_dict()
    expected = {"srm.kernel": (3, 3, 5, 5), **resnet50_keys("disc.", 1)}
    assert len(state) == 321 == len(expected)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert get_detector("ssp") is SSP


def test_forward_matches_the_official_pipeline_and_inverts_labels(tmp_path):
    """An official checkpoint, run through an independent torchvision pipeline, gives z with
    sigmoid(z) = P(real); the harness logit must be -z."""
    source = SSP()
    state = perturbed(source, 0)
    state["srm.kernel"] = source.state_dict()["srm.kernel"]  # the official file stores the fixed SRM bank
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "ssp.pth")
    model = SSP().eval()
    model.load_weights(tmp_path / "ssp.pth")

    reference = torchvision.models.resnet50(num_classes=1).eval()
    reference.load_state_dict({k[len("disc."):]: v for k, v in state.items() if k.startswith("disc.")})
    x = torch.rand(1, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    big = F.interpolate((x - mean) / std, size=(256, 256), mode="bilinear")
    srm = F.hardtanh(F.conv2d(big, state["srm.kernel"], padding=2), -3, 3)
    with torch.no_grad():
        z = reference(srm).squeeze(1)
        logit = model(x)
    assert logit.shape == (1,)
    assert torch.allclose(logit, -z, atol=1e-4)
    assert torch.allclose(torch.sigmoid(logit), 1 - torch.sigmoid(z), atol=1e-5)


def test_label_inversion_pinned_on_the_head():
    model = SSP({"arch": "resnet10", "upsample": 32}).eval()
    with torch.no_grad():
        model.disc.fc.weight.zero_()
        model.disc.fc.bias.fill_(2.0)  # official output 2.0: the model is sure the image is real
        logit = model(torch.rand(3, 3, 32, 32))
    assert torch.allclose(logit, torch.full((3,), -2.0))
    assert (torch.sigmoid(logit) < 0.5).all()


def test_checkpoint_wrappers_and_errors(tmp_path):
    source = SSP({"arch": "resnet10", "upsample": 32}).eval()
    source.load_state_dict(perturbed(source, 1))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = source(x)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "wrapped.pth")
    harness_ckpt = save_checkpoint(tmp_path / "best.safetensors", source.checkpoint_state(), source.config)
    for path in (tmp_path / "wrapped.pth", harness_ckpt):
        target = SSP({"arch": "resnet10", "upsample": 32}).eval()
        target.load_weights(path)
        with torch.no_grad():
            assert torch.equal(target(x), expected)
    # A ResNet-50 checkpoint does not fit a ResNet-10 configuration: the error names keys.
    torch.save(SSP().state_dict(), tmp_path / "r50.pth")
    with pytest.raises(HarnessError, match="unexpected keys"):
        SSP({"arch": "resnet10"}).load_weights(tmp_path / "r50.pth")
    state = dict(source.state_dict(), **{"disc.fc.weight": torch.zeros(2, 512)})
    torch.save(state, tmp_path / "two_way.pth")
    with pytest.raises(HarnessError, match="disc.fc.weight"):
        SSP({"arch": "resnet10"}).load_weights(tmp_path / "two_way.pth")
    torch.save({"a": 1}, tmp_path / "junk.pth")
    with pytest.raises(HarnessError, match="state dict"):
        SSP({"arch": "resnet10"}).load_weights(tmp_path / "junk.pth")


def test_preprocess_takes_the_brute_force_simplest_patch():
    rng = np.random.default_rng(0)
    arr = np.clip(rng.normal(120, 30, (48, 60, 3)) * np.linspace(0.2, 1.5, 60)[None, :, None], 0, 255).astype(np.uint8)
    image = Image.fromarray(arr)
    model = SSP()
    (patch,) = model.preprocess([image], train=True, generator=torch.Generator().manual_seed(4))
    order, tops, lefts = reference_ranking(image, 32, 64, 4)
    t, l = tops[order[0]], lefts[order[0]]
    assert patch.shape == (3, 32, 32) and patch.dtype == torch.float32
    assert torch.equal(patch, torch.from_numpy(arr[t : t + 32, l : l + 32]).permute(2, 0, 1).float() / 255)
    # Test time: seeded by content, so two calls (or a copy of the image) agree.
    a = model.preprocess([image])[0]
    b = model.preprocess([Image.fromarray(arr.copy())])[0]
    assert torch.equal(a, b)
    # A fake and its pair get the same crop.
    twin = Image.fromarray(255 - arr)
    p1, p2 = model.preprocess([image, twin], train=True, generator=torch.Generator().manual_seed(4))
    assert torch.equal(p1, patch) and torch.allclose(p2, 1 - patch)


def test_small_images_are_resized_to_256_first():
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (20, 40, 3), dtype=np.uint8)
    image = Image.fromarray(arr)
    (patch,) = SSP().preprocess([image], train=True, generator=torch.Generator().manual_seed(2))
    big = image.resize((256, 256), Image.BILINEAR)
    order, tops, lefts = reference_ranking(big, 32, 64, 2)
    t, l = tops[order[0]], lefts[order[0]]
    assert torch.equal(patch, torch.from_numpy(np.array(big)[t : t + 32, l : l + 32]).permute(2, 0, 1).float() / 255)


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
    config = {"arch": "resnet10", "pretrained": "none", "patch_size": 16, "candidates": 8, "upsample": 32}
    model = SSP(config)
    paths = [p for pair in train_pairs for p in pair]
    labels = torch.tensor([0, 1] * len(train_pairs))
    opt = model.configure_optimizer(model.parameters_to_train(), {"lr": 1e-3})
    assert isinstance(opt, torch.optim.Adam) and model.provenance["random_init"]
    model.train()
    batches = []
    for step in range(12):
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


def fake_imagenet_resnet18(path) -> dict[str, torch.Tensor]:
    """A torchvision ResNet-18 state dict standing in for the ImageNet download (``backbone_weights``)."""
    torch.manual_seed(123)
    state = torchvision.models.resnet18().state_dict()
    torch.save(state, path)
    return state


def engine_samples(root, n=2) -> list[Sample]:
    out = []
    for real, fake in write_pairs(root / "real", root / "fake", n, size=32, seed=3):
        out += [Sample(str(real), 0, "g", "train"), Sample(str(fake), 1, "g", "train")]
    return out


def test_loaded_weights_win_over_the_imagenet_init_when_training_starts(tmp_path):
    """``harness train --weights X``: the checkpoint is loaded before the engine calls
    configure_optimizer, which must not replace its backbone with the ImageNet init."""
    imagenet = fake_imagenet_resnet18(tmp_path / "resnet18.pth")
    config = {"arch": "resnet18", "patch_size": 16, "candidates": 4, "upsample": 32, "pretrained": "imagenet",
              "backbone_weights": str(tmp_path / "resnet18.pth")}
    # Without loaded weights, training starts from the ImageNet file (the head excepted).
    fresh = SSP(config)
    fresh.configure_optimizer(fresh.parameters_to_train(), {"lr": 1e-4})
    assert torch.equal(fresh.disc.layer3[1].conv2.weight, imagenet["layer3.1.conv2.weight"])
    assert fresh.provenance["weights"] == str(tmp_path / "resnet18.pth")

    source = SSP(config)
    state = perturbed(source, 7)
    state["srm.kernel"] = source.state_dict()["srm.kernel"]
    torch.save(state, tmp_path / "ssp.pth")
    model = SSP(config)
    model.load_weights(tmp_path / "ssp.pth")
    # One engine step at lr 0: every parameter must still be the checkpoint's.
    train(model, engine_samples(tmp_path / "data"), [], run_dir=tmp_path / "run", device="cpu",
          config={"run": {"seed": 0}, "train": {"epochs": 1, "batch_size": 4, "lr": 0.0, "amp": False}})
    params = dict(model.named_parameters())
    changed = [name for name, p in params.items() if not torch.equal(p.detach().cpu(), state[name])]
    assert params and not changed, changed[:5]
    assert not torch.equal(model.disc.layer3[1].conv2.weight.detach().cpu(), imagenet["layer3.1.conv2.weight"])
    backbone = json.loads((tmp_path / "run" / "training.json").read_text())["backbone"]
    assert backbone["weights"] == str(tmp_path / "ssp.pth") and backbone["random_init"] is False


def test_provenance_names_the_loaded_weights(tmp_path):
    config = {"arch": "resnet10", "upsample": 32}
    source = SSP(config)
    source.load_state_dict(perturbed(source, 2))
    torch.save(source.state_dict(), tmp_path / "official.pth")
    model = SSP(config)
    assert model.provenance["random_init"] is True and model.provenance["weights"] is None
    model.load_weights(tmp_path / "official.pth")
    assert model.provenance == {
        "family": "torchvision", "name": "resnet10", "pretrained": None, "weights": str(tmp_path / "official.pth"),
        "weights_sha256": hashlib.sha256((tmp_path / "official.pth").read_bytes()).hexdigest(), "random_init": False,
    }
    # A harness checkpoint written by the engine also says what its training started from.
    init = {"family": "torchvision", "name": "resnet10", "pretrained": None, "weights": None, "random_init": True}
    ckpt = save_checkpoint(tmp_path / "best.safetensors", source.checkpoint_state(), source.config, {"backbone": init})
    model.load_weights(ckpt)
    assert model.provenance["weights"] == str(ckpt) and model.provenance["random_init"] is False
    assert model.provenance["weights_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert model.provenance["init"] == init
