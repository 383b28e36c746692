"""UnivFD: official checkpoint forms, input policy, the P(fake) convention, augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.checkpoints import save_checkpoint
from harness.detector import CLIP_MEAN, CLIP_STD
from harness.errors import HarnessError
from harness.registry import get_detector
from harness.plugins.detectors.univfd import UnivFD

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "univfd" / "fc_weights.pth"

# A ViT of width 768 (cheap: one block at 32 px) so that the official 768-d head fits.
WIDE = {"backbone": "tiny", "pretrained": "none", "crop_size": 32,
        "tiny": {"patch_size": 16, "embed_dim": 768, "depth": 1, "num_heads": 12}}
SMALL = {"backbone": "tiny", "pretrained": "none", "crop_size": 32,
         "tiny": {"patch_size": 8, "embed_dim": 64, "depth": 1, "num_heads": 2}}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> str:
    """An open_clip model config of OpenAI-CLIP layout, small enough for a test."""
    import open_clip

    name = "univfd-test-tiny-clip"
    path = tmp_path_factory.mktemp("clipcfg") / f"{name}.json"
    path.write_text(json.dumps({
        "embed_dim": 48,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
    }))
    open_clip.add_model_config(path)
    return name


def test_registered_through_entry_point():
    assert get_detector("univfd") is UnivFD


def test_official_head_file_loads_into_a_768_wide_backbone():
    official = torch.load(FIXTURE, map_location="cpu", weights_only=True)
    det = UnivFD(WIDE)
    det.load_weights(FIXTURE)
    assert torch.equal(det.head.weight, official["weight"])
    assert torch.equal(det.head.bias, official["bias"])
    # The logit is the head applied to the feature, nothing else.
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        feats = det.features(x)
        expected = feats @ official["weight"][0] + official["bias"][0]
        assert torch.allclose(det(x), expected, atol=1e-5)


def test_official_head_is_sized_for_vit_l_14():
    import open_clip

    # The default backbone's encode_image width is the official head's input width.
    assert open_clip.get_model_config("ViT-L-14")["embed_dim"] == 768
    assert UnivFD.defaults["backbone"] == "open_clip:ViT-L-14" and UnivFD.defaults["pretrained"] == "openai"


def test_head_of_the_wrong_width_is_a_clear_error():
    det = UnivFD(SMALL)
    with pytest.raises(HarnessError, match=r"weight \[1, 768\].*64-d features"):
        det.load_weights(FIXTURE)


def test_official_training_checkpoint_loads_head_and_visual_tower(tmp_path, tiny_clip):
    import open_clip

    torch.manual_seed(0)
    det = UnivFD({"backbone": f"open_clip:{tiny_clip}", "pretrained": "none", "crop_size": 32})
    # The official train.py saves the whole OpenAI CLIP under model.* and the head as fc.*;
    # OpenAI's CLIP runs QuickGELU, so the reference is built with open_clip's force_quick_gelu.
    donor = open_clip.create_model(tiny_clip, pretrained=None, force_quick_gelu=True)
    for p in donor.parameters():
        torch.nn.init.normal_(p, 0.0, 0.3)  # large enough for GELU and QuickGELU to differ
    state = {f"model.{k}": v for k, v in donor.state_dict().items()}
    weight, bias = torch.randn(1, 48), torch.randn(1)
    state.update({"fc.weight": weight, "fc.bias": bias})
    assert any(k.startswith("model.transformer.") for k in state)  # the text tower is there too
    path = tmp_path / "model_epoch_best.pth"
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": []}, "total_steps": 1234}, path)

    before = det.feature_identity()
    det.load_weights(path)
    assert det.feature_identity() != before  # the feature cache sees the new backbone
    assert torch.equal(det.head.weight, weight) and torch.equal(det.head.bias, bias)
    donor_visual = donor.visual.state_dict()
    for key, value in det.backbone.model.state_dict().items():
        assert torch.equal(value, donor_visual[key]), key
    # Independent reference: OpenAI preprocessing + encode_image + fc, by hand.
    x = torch.rand(3, 3, 32, 32)
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    with torch.no_grad():
        expected = donor.encode_image((x - mean) / std) @ weight[0] + bias[0]
        assert torch.allclose(det(x), expected, atol=1e-4)
        # The same weights in a GELU tower (open_clip's default without the flag) score otherwise.
        gelu = UnivFD({"backbone": f"open_clip:{tiny_clip}", "pretrained": "none", "crop_size": 32,
                       "quick_gelu": False})
        gelu.load_weights(path)
        assert not torch.allclose(gelu(x), expected, atol=1e-3)


def test_openai_tower_is_built_with_quick_gelu_and_provenance_says_so(tiny_clip):
    from open_clip.transformer import QuickGELU

    det = UnivFD({"backbone": f"open_clip:{tiny_clip}", "pretrained": "none", "crop_size": 32})
    assert UnivFD.defaults["quick_gelu"] is True
    acts = [m for m in det.backbone.modules() if isinstance(m, (QuickGELU, torch.nn.GELU))]
    assert acts and all(isinstance(m, QuickGELU) for m in acts)
    assert det.provenance["quick_gelu"] is True


def test_training_checkpoint_with_mismatched_tower_names_the_keys(tmp_path, tiny_clip):
    det = UnivFD({"backbone": f"open_clip:{tiny_clip}", "pretrained": "none", "crop_size": 32})
    state = {f"model.visual.{k}": v.clone() for k, v in det.backbone.model.state_dict().items()}
    del state["model.visual.proj"]
    state["model.visual.extra.weight"] = torch.zeros(1)
    state.update({"fc.weight": torch.zeros(1, 48), "fc.bias": torch.zeros(1)})
    path = tmp_path / "ckpt.pth"
    torch.save({"model": state, "optimizer": {}, "total_steps": 1}, path)
    with pytest.raises(HarnessError, match=r"missing keys \['proj'\].*unexpected keys \['extra.weight'\]"):
        det.load_weights(path)
    # A tower of another patch size (ViT-B/32 weights for ViT-B/16): both shapes are named.
    state = {f"model.visual.{k}": v.clone() for k, v in det.backbone.model.state_dict().items()}
    state["model.visual.conv1.weight"] = torch.zeros(64, 3, 16, 16)
    state.update({"fc.weight": torch.zeros(1, 48), "fc.bias": torch.zeros(1)})
    torch.save({"model": state, "optimizer": {}, "total_steps": 1}, path)
    with pytest.raises(HarnessError, match=r"conv1\.weight \[64, 3, 16, 16\] != \[64, 3, 8, 8\]"):
        det.load_weights(path)


def test_harness_checkpoint_of_a_pretrained_backbone_holds_the_head_only(tmp_path, tiny_clip):
    import open_clip

    # A backbone from a weights file is identified by the configuration: only the head is stored.
    weights = tmp_path / "clip.pt"
    torch.save(open_clip.create_model(tiny_clip, pretrained=None).state_dict(), weights)
    cfg = {"backbone": f"open_clip:{tiny_clip}", "pretrained": "none", "backbone_weights": str(weights),
           "crop_size": 32}
    det = UnivFD(cfg)
    torch.nn.init.normal_(det.head.weight, 0, 1.0)
    assert set(det.checkpoint_state()) == {"head.weight", "head.bias"}
    path = save_checkpoint(tmp_path / "best.safetensors", det.checkpoint_state(), det.config)
    other = UnivFD(cfg)
    other.load_weights(path)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(other(x), det(x))


def test_mini_checkpoint_restores_its_random_backbone_under_another_seed(tmp_path, caplog):
    mini = UnivFD.profiles["mini"]["detector"]
    torch.manual_seed(0)
    det = UnivFD(mini).eval()
    assert det.provenance["random_init"] is True
    with torch.no_grad():
        torch.nn.init.normal_(det.head.weight, 0, 1.0)
    saved = det.checkpoint_state()
    backbone_keys = {f"backbone.{k}" for k in det.backbone.model.state_dict()}
    assert set(saved) == {"head.weight", "head.bias"} | backbone_keys
    path = save_checkpoint(tmp_path / "best.safetensors", saved, det.config)

    torch.manual_seed(1)  # another seed draws another random backbone
    other = UnivFD(mini).eval()
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        original = det(x)
        assert not torch.allclose(other.features(x), det.features(x))
        other.load_weights(path)
        assert torch.allclose(other(x), original, atol=1e-6)
    # The feature cache sees the restored backbone as the original one.
    assert other.feature_identity() == det.feature_identity()

    # A head-only checkpoint on a random backbone still loads, with a warning.
    head_only = save_checkpoint(tmp_path / "head.safetensors",
                                {k: v for k, v in saved.items() if k.startswith("head.")}, det.config)
    with caplog.at_level("WARNING"):
        UnivFD(mini).load_weights(head_only)
    assert "holds only the head" in caplog.text

    # A stored backbone of another size is named, never a raw torch error.
    wide = UnivFD({**mini, "tiny": {**mini["tiny"], "depth": 1}})
    with pytest.raises(HarnessError, match=r"12 unexpected keys \['blocks\.1\."):
        wide.load_weights(path)


def test_unknown_checkpoint_layout_is_a_clear_error(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(HarnessError, match="not a UnivFD checkpoint"):
        UnivFD(SMALL).load_weights(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(HarnessError, match="not a state dict"):
        UnivFD(SMALL).load_weights(path)


def test_test_policy_pads_and_centre_crops_without_resizing(tiny_clip):
    det = UnivFD({"backbone": f"open_clip:{tiny_clip}", "pretrained": "none", "crop_size": 32})
    policy = det.input_policy(False)
    assert (policy.geometry, policy.size, policy.pad_value) == ("center_crop", 32, 0)
    assert policy.mean == pytest.approx(CLIP_MEAN) and policy.std == pytest.approx(CLIP_STD)
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    small = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    out_big = det.preprocess([Image.fromarray(big)])[0]
    # CenterCrop 32 of 40x50 starts at (4, 9); no interpolation anywhere.
    assert torch.allclose(out_big, torch.from_numpy(big[4:36, 9:41]).permute(2, 0, 1).float() / 255, atol=1e-6)
    out_small = det.preprocess([Image.fromarray(small)])[0]
    assert out_small.shape == (3, 32, 32)
    assert torch.allclose(out_small[:, 6:26, 4:28], torch.from_numpy(small).permute(2, 0, 1).float() / 255, atol=1e-6)
    assert out_small[:, :6].abs().sum() == 0 and out_small[:, :, :4].abs().sum() == 0


def test_training_preprocess_resizes_augments_and_is_reproducible():
    det = UnivFD({**SMALL, "resize_to": 40, "blur_prob": 1.0, "jpeg_prob": 1.0})
    policy = det.input_policy(True)
    assert (policy.geometry, policy.resize_to, policy.flip) == ("resize_crop", 40, True)
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 60, 3), dtype=np.uint8))
    a = det.preprocess([img], train=True, generator=torch.Generator().manual_seed(5))[0]
    b = det.preprocess([img], train=True, generator=torch.Generator().manual_seed(5))[0]
    c = det.preprocess([img], train=True, generator=torch.Generator().manual_seed(6))[0]
    assert a.shape == (3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    # Blur and JPEG both on: the crop is smoother than the same crop of the clean resized image.
    clean = UnivFD({**SMALL, "resize_to": 40, "blur_prob": 0.0, "jpeg_prob": 0.0})
    d = clean.preprocess([img], train=True, generator=torch.Generator().manual_seed(5))[0]
    tv = lambda t: (t[:, 1:] - t[:, :-1]).abs().mean()  # noqa: E731
    assert tv(a) < 0.7 * tv(d)


def test_backbone_stays_frozen_and_in_eval_mode():
    det = UnivFD(SMALL)
    det.train()
    assert not det.backbone.training and det.head.training
    assert [n for n, p in det.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]
    assert det.head.weight.std().item() == pytest.approx(0.02, rel=0.5)
