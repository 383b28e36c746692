"""SEP: exposed patch + frequency view packing, attention, DWT branch, 2-way head, checkpoints and
their provenance, loaded weights surviving the start of training, no grid analyses, training."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import pywt
import torch
from PIL import Image
from torch.nn import functional as F
from torchvision.transforms import Resize

from harness.checkpoints import save_checkpoint
from harness.errors import HarnessError
from harness.images import load_image
from harness.patchgrid import resolve_grid
from harness.registry import get_detector
from harness.plugins.detectors.patchops import content_generator, to_uint8_tensor
from harness.plugins.detectors.sep import SEP, GuidedBidirectionalAttention
from tests.fakedata import write_pairs
from tests.test_patchops import recalibrate_batchnorm, reference_ranking
from tests.test_ssp import fake_imagenet_resnet18, perturbed, resnet50_keys

SMALL = {"patch_size": 8, "freq_size": 32, "upsample": 32, "candidates": 8, "train_candidates": 4,
         "arch": "resnet10", "pretrained": "none"}


def official_keys() -> dict[str, tuple[int, ...]]:
    """The official SEP state-dict keys and shapes, enumerated by hand from models/model.py."""
    keys: dict[str, tuple[int, ...]] = {"srm.kernel": (3, 3, 5, 5)}

    def bn(name, c):
        for part in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{name}.{part}"] = (c,)
        keys[f"{name}.num_batches_tracked"] = ()

    for name in ("q_conv_h", "k_conv_w", "v_conv_w", "q_conv_w", "k_conv_h", "v_conv_h"):
        keys[f"spalAtten.{name}.weight"] = (3, 3, 1, 1)
    for name in ("q_conv_h_srm", "q_conv_w_srm"):
        keys[f"spalAtten.{name}.0.weight"] = (3, 3, 1, 1)
        keys[f"spalAtten.{name}.2.weight"] = (3, 3, 1, 1)
    keys["spalAtten.projection.0.weight"] = (3, 6, 1, 1)
    bn("spalAtten.projection.1", 3)
    for i, (cin, cout) in enumerate(((3, 32), (32, 64), (64, 64), (64, 64))):
        keys[f"dwt.{4 * i}.weight"] = (cout, cin, 3, 3)
        keys[f"dwt.{4 * i}.bias"] = (cout,)
        bn(f"dwt.{4 * i + 1}", cout)
    for g in range(16):
        p = f"dwt_piex.group_encoders.{g}"
        keys[f"{p}.0.weight"], keys[f"{p}.0.bias"] = (32, 4, 3, 3), (32,)
        keys[f"{p}.2.weight"], keys[f"{p}.2.bias"] = (32, 32, 3, 3), (32,)
        keys[f"{p}.4.weight"], keys[f"{p}.4.bias"] = (3, 32, 1, 1), (3,)
    keys.update(resnet50_keys("disc.", 2))
    return keys


def test_official_layout_forward_shape_and_registration():
    model = SEP().eval()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == official_keys()
    with torch.no_grad():
        z = model.class_scores(torch.rand(1, 2, 3, 256, 256))
    assert z.shape == (1, 2)
    assert get_detector("sep") is SEP


def attention_by_loops(att: GuidedBidirectionalAttention, x: torch.Tensor, srm: torch.Tensor) -> torch.Tensor:
    """Row/column attention written out per head, query and key position (eval-mode BN)."""
    b, c, h, w = x.shape
    heads, hd = att.num_heads, c // att.num_heads

    def lin(conv, t):  # 1x1 conv on a [C, L] matrix
        return conv.weight[:, :, 0, 0] @ t

    def guide(seq, t):
        return torch.relu(lin(seq[2], torch.relu(lin(seq[0], t))))

    out = torch.empty_like(x)
    for n in range(b):
        col_summary = x[n].mean(dim=1)  # [C, W]: mean over rows
        row_summary = x[n].mean(dim=2)  # [C, H]: mean over columns
        q1 = lin(att.q_conv_h, col_summary) * (1 + guide(att.q_conv_h_srm, srm[n].mean(dim=1)))  # [C, W]
        k1, v1 = lin(att.k_conv_w, row_summary), lin(att.v_conv_w, row_summary)  # [C, H]
        q2 = lin(att.q_conv_w, row_summary) * (1 + guide(att.q_conv_w_srm, srm[n].mean(dim=2)))  # [C, H]
        k2, v2 = lin(att.k_conv_h, col_summary), lin(att.v_conv_h, col_summary)  # [C, W]
        along_w = torch.empty(c, w)
        along_h = torch.empty(c, h)
        for g in range(heads):
            ch = slice(g * hd, (g + 1) * hd)
            for j in range(w):
                scores = torch.tensor([float((q1[ch, j] * k1[ch, i]).sum()) / math.sqrt(hd) for i in range(h)])
                along_w[ch, j] = (torch.softmax(scores, 0)[None, :] * v1[ch]).sum(dim=1)
            for i in range(h):
                scores = torch.tensor([float((q2[ch, i] * k2[ch, j]).sum()) / math.sqrt(hd) for j in range(w)])
                along_h[ch, i] = (torch.softmax(scores, 0)[None, :] * v2[ch]).sum(dim=1)
        fused = torch.cat([along_w[:, None, :].expand(c, h, w), along_h[:, :, None].expand(c, h, w)])
        conv, norm = att.projection[0], att.projection[1]
        proj = torch.einsum("oc,chw->ohw", conv.weight[:, :, 0, 0], fused)
        proj = (proj - norm.running_mean[:, None, None]) / torch.sqrt(norm.running_var[:, None, None] + norm.eps)
        proj = torch.relu(proj * norm.weight[:, None, None] + norm.bias[:, None, None])
        out[n] = x[n] + proj * x[n]
    return out


@pytest.mark.parametrize("channels,heads", [(3, 3), (6, 2)])
def test_attention_equals_loops(channels, heads):
    torch.manual_seed(channels)
    att = GuidedBidirectionalAttention(channels, heads).eval()
    with torch.no_grad():
        for p in att.parameters():
            p.copy_(torch.randn_like(p))
        att.projection[1].running_mean.copy_(torch.randn(channels))
        att.projection[1].running_var.copy_(torch.rand(channels) + 0.5)
        x, srm = torch.randn(2, channels, 5, 7), torch.randn(2, channels, 5, 7)
        assert torch.allclose(att(x, srm), attention_by_loops(att, x, srm), atol=1e-4)


def test_frequency_view_is_the_tiled_pywavelets_transform():
    model = SEP(SMALL)
    crop = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    ca, (ch, cv, cd) = pywt.dwt2(crop.numpy(), "bior1.3", mode="symmetric")
    tiled = np.concatenate([np.concatenate([ca, ch], -1), np.concatenate([cv, cd], -1)], -2)
    assert tiled.shape[-1] == 36  # (32 + 6 - 1) // 2 = 18 per band
    # The official resize: torchvision Resize on a tensor, which antialiases when it shrinks.
    ref = Resize([32, 32])(torch.from_numpy(tiled).float())
    assert torch.allclose(model.frequency_image(crop.float()), ref, atol=1e-5)


def test_packing_holds_the_exposed_patch_and_the_zero_padded_centre_crop():
    rng = np.random.default_rng(0)
    arr = np.clip(rng.normal(128, 40, (20, 44, 3)) * np.linspace(0.1, 1.3, 44)[None, :, None], 0, 255).astype(np.uint8)
    image = Image.fromarray(arr)
    model = SEP(SMALL)
    (x,) = model.preprocess([image])
    assert x.shape == (2, 3, 32, 32)
    # View 0: the simplest of `candidates` crops drawn from the content-seeded generator, enlarged x4.
    order, tops, lefts = reference_ranking(image, 8, 8, content_generator(to_uint8_tensor(image), 0))
    t, l = tops[order[0]], lefts[order[0]]
    patch = torch.from_numpy(arr[t : t + 8, l : l + 8]).permute(2, 0, 1).float() / 255
    assert torch.equal(x[0], patch.repeat_interleave(4, 1).repeat_interleave(4, 2))
    # View 1: centre crop 32 of a 20 x 44 image, zero-padded vertically (6 above, 6 below).
    ref = torch.zeros(3, 32, 32)
    ref[:, 6:26] = torch.from_numpy(arr[:, 6:38]).permute(2, 0, 1).float() / 255
    assert torch.allclose(x[1], ref, atol=1e-6)
    assert torch.equal(model.preprocess([image.copy()])[0], x)
    # Training draws its own crops (fewer patch candidates) from the generator it is given.
    a = model.preprocess([image], train=True, generator=torch.Generator().manual_seed(1))[0]
    b = model.preprocess([image], train=True, generator=torch.Generator().manual_seed(1))[0]
    assert a.shape == x.shape and torch.equal(a, b)
    with pytest.raises(HarnessError, match="multiple"):
        SEP({"patch_size": 12, "freq_size": 32})


def test_two_way_head_gives_p_fake_as_class_zero():
    model = SEP(SMALL).eval()
    with torch.no_grad():
        model.disc.fc.weight.zero_()
        model.disc.fc.bias.copy_(torch.tensor([0.5, -1.0]))
        x = torch.rand(2, 2, 3, 32, 32)
        logit = model(x)
        assert torch.allclose(logit, torch.full((2,), 1.5))
        assert torch.allclose(torch.sigmoid(logit), torch.softmax(model.class_scores(x), 1)[:, 0])
    # The cross-entropy over (ai, nature) equals BCE on the harness logit with label 1 = fake.
    model.disc.fc.weight.data.normal_()
    label = torch.tensor([1, 0])
    ce = model.training_step({"x": x, "label": label})["loss"]
    model.eval()
    with torch.no_grad():
        z = model.class_scores(x)
    assert torch.allclose(F.cross_entropy(z, torch.tensor([0, 1])), F.binary_cross_entropy_with_logits(z[:, 0] - z[:, 1], label.float()), atol=1e-6)
    assert torch.isfinite(ce)


def test_official_checkpoint_loads(tmp_path):
    source = SEP(SMALL).eval()
    state = perturbed(source, 5)
    state["srm.kernel"] = source.state_dict()["srm.kernel"]
    source.load_state_dict(state)
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "sep.pth")
    x = torch.rand(2, 2, 3, 32, 32)
    target = SEP(SMALL).eval()
    target.load_weights(tmp_path / "sep.pth")
    harness = save_checkpoint(tmp_path / "best.safetensors", source.checkpoint_state(), source.config)
    again = SEP(SMALL).eval()
    again.load_weights(harness)
    with torch.no_grad():
        assert torch.equal(target(x), source(x)) and torch.equal(again(x), source(x))
    del state["dwt_piex.group_encoders.15.4.bias"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(HarnessError, match="group_encoders.15.4.bias"):
        SEP(SMALL).load_weights(tmp_path / "broken.pth")


def _batch(model, paths, train, seed=0):
    xs = []
    for i, p in enumerate(paths):
        gen = torch.Generator().manual_seed(seed * 100_003 + i) if train else None
        xs.append(model.preprocess([load_image(p)], train=train, generator=gen)[0])
    return torch.stack(xs)


def test_short_training_beats_chance_on_its_images(tmp_path):
    """A few steps on one fixed batch of fake-data images: SEP's RGB path has no fixed high-pass
    front end (SRM only guides the attention), so from random init it needs far more steps than
    SSP to generalise; here it must at least fit its images, judged in eval mode."""
    torch.manual_seed(0)
    pairs = write_pairs(tmp_path / "real", tmp_path / "fake", 12, size=32, seed=1)
    model = SEP(dict(SMALL, patch_size=16, upsample=16))
    paths = [p for pair in pairs for p in pair]
    labels = torch.tensor([0, 1] * len(pairs))
    x = _batch(model, paths, True, 0)
    opt = model.configure_optimizer(model.parameters_to_train(), {"lr": 3e-4})
    assert isinstance(opt, torch.optim.AdamW)
    model.train()
    losses = []
    for _ in range(10):
        loss = model.training_step({"x": x, "label": labels})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    recalibrate_batchnorm(model, [x])
    with torch.no_grad():
        logits = model(x).numpy()
    acc = ((logits > 0) == labels.numpy()).mean()
    assert losses[-1] < losses[0] and acc >= 0.8, (losses, acc)


def test_fused_enhancer_equals_running_each_group():
    model = SEP(SMALL).eval()
    freq = torch.randn(2, 64, 5, 6)
    with torch.no_grad():
        for p in model.dwt_piex.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        per_group = [enc(chunk) for enc, chunk in zip(model.dwt_piex.group_encoders, freq.split(4, dim=1))]
        reference = torch.stack(per_group).mean(dim=0)
        assert torch.allclose(model.dwt_piex.channel_weights(freq), reference, atol=1e-5)
        patch = torch.rand(2, 3, 8, 8)
        assert torch.allclose(model.dwt_piex(patch, freq), patch * (1 + 0.2 * reference), atol=1e-5)


def test_loaded_weights_win_over_the_imagenet_init_when_training_starts(tmp_path):
    imagenet = fake_imagenet_resnet18(tmp_path / "resnet18.pth")
    config = dict(SMALL, arch="resnet18", pretrained="imagenet", backbone_weights=str(tmp_path / "resnet18.pth"))
    fresh = SEP(config)
    fresh.configure_optimizer(fresh.parameters_to_train(), {"lr": 1e-3})
    assert torch.equal(fresh.disc.layer4[0].conv1.weight, imagenet["layer4.0.conv1.weight"])

    source = SEP(config)
    state = perturbed(source, 9)
    state["srm.kernel"] = source.state_dict()["srm.kernel"]
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "sep.pth")
    model = SEP(config)
    model.load_weights(tmp_path / "sep.pth")
    model.configure_optimizer(model.parameters_to_train(), {"lr": 0.0})
    changed = [name for name, t in model.state_dict().items() if not torch.equal(t, state[name])]
    assert not changed, changed[:5]
    assert model.provenance["weights"] == str(tmp_path / "sep.pth")


def test_provenance_names_the_loaded_weights(tmp_path):
    source = SEP(SMALL)
    source.load_state_dict(perturbed(source, 4))
    torch.save(source.state_dict(), tmp_path / "official.pth")
    model = SEP(SMALL)
    assert model.provenance["random_init"] is True
    model.load_weights(tmp_path / "official.pth")
    assert model.provenance == {
        "family": "torchvision", "name": "resnet10", "pretrained": None, "weights": str(tmp_path / "official.pth"),
        "weights_sha256": hashlib.sha256((tmp_path / "official.pth").read_bytes()).hexdigest(), "random_init": False,
    }
    init = {"family": "torchvision", "name": "resnet10", "pretrained": None, "weights": None, "random_init": True}
    ckpt = save_checkpoint(tmp_path / "best.safetensors", source.checkpoint_state(), source.config, {"backbone": init})
    model.load_weights(ckpt)
    assert model.provenance["weights"] == str(ckpt) and model.provenance["init"] == init
    assert model.provenance["weights_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()


def test_grid_analyses_are_refused():
    """The two views are at different scales: cell (i, j) of the enlarged patch and of the centre
    crop are unrelated regions of the image, so no plane grid is an image grid."""
    assert SEP.spatial_input is False
    with pytest.raises(HarnessError, match="sep"):
        resolve_grid(SEP(SMALL))
