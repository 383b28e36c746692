"""Any timm model as a detector: the model's own evaluation transform, probe vs tune, LoRA, local weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from harness.config import merge
from harness.errors import HarnessError
from harness.feature_cache import uses_feature_cache
from harness.plugins.detectors.generic import Backbone, DeiTS, ResNet50, SwinT

SMALL = {"model": "timm:resnet18", "pretrained": "none", "model_kwargs": {"layers": [1, 1, 1, 1]}}


def photo(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_evaluation_input_is_timms_own_transform():
    import timm
    from timm.data import create_transform, resolve_model_data_config

    detector = Backbone(SMALL).eval()
    reference = create_transform(**resolve_model_data_config(detector.backbone.model), is_training=False)
    for size in ((301, 257), (240, 400)):
        img = photo(*size)
        (ours,) = detector.preprocess([img])
        torch.testing.assert_close(detector.normalize(ours), reference(img), rtol=0, atol=1e-5)
    policy = detector.input_policy()
    assert (policy.size, policy.resize_to, policy.interpolation) == (224, 235, "bicubic")  # floor(224 / 0.95)
    assert timm.__version__


def test_probe_freezes_the_backbone_and_goes_through_the_feature_cache():
    probe = Backbone({**SMALL, "mode": "probe"})
    assert uses_feature_cache(probe)
    assert {n for n, p in probe.named_parameters() if p.requires_grad} == {"head.weight", "head.bias"}
    probe.train()
    assert not probe.backbone.training  # frozen batch-norm statistics
    tune = Backbone(SMALL)
    assert not uses_feature_cache(tune)
    assert all(p.requires_grad for p in tune.parameters())
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        probe.eval()
        assert torch.allclose(probe(x), probe.head(probe.backbone(probe.normalize(x))).squeeze(-1))


def test_lora_trains_only_adapters_and_needs_targets_on_a_cnn():
    deit = DeiTS(merge(DeiTS.defaults, {**DeiTS.profiles["mini"]["detector"], "lora": True}))
    trainable = {n for n, p in deit.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    assert any(n.startswith("head.") for n in trainable) and any("lora_A" in n for n in trainable)
    with pytest.raises(HarnessError, match="lora_targets"):
        Backbone({**SMALL, "lora": True})
    with pytest.raises(HarnessError, match="do not fit"):
        Backbone({**SMALL, "lora": True, "lora_targets": ["no_such_layer"]})


def test_local_timm_weights_load_without_their_classifier(tmp_path):
    import timm

    source = timm.create_model("resnet18", pretrained=False, num_classes=1000, layers=[1, 1, 1, 1])
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    detector = Backbone({**SMALL, "pretrained": "default", "backbone_weights": str(path)}).eval()
    assert detector.provenance["random_init"] is False and detector.provenance["weights_sha256"]
    x = torch.rand(2, 3, 64, 64)
    source.reset_classifier(0)
    with torch.no_grad():
        torch.testing.assert_close(detector.backbone(x), source.eval()(x))
    other = tmp_path / "deit.pth"
    torch.save(timm.create_model("deit_tiny_patch16_224", pretrained=False).state_dict(), other)
    with pytest.raises(HarnessError, match="does not fit timm resnet18"):
        Backbone({**SMALL, "backbone_weights": str(other)})


def test_checkpoints_round_trip(tmp_path):
    from harness.checkpoints import save_checkpoint

    source = Backbone(SMALL).eval()
    path = save_checkpoint(tmp_path / "tuned.safetensors", source.checkpoint_state(), source.config)
    loaded = Backbone(SMALL).eval()
    loaded.load_weights(path)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))


@pytest.mark.parametrize("cls", [ResNet50, DeiTS, SwinT])
def test_table_one_presets_build_their_models_and_mini_profiles(cls):
    full = cls.defaults["model"]
    assert full in {"timm:resnet50", "timm:deit_small_patch16_224", "timm:swin_tiny_patch4_window7_224"}
    detector = cls(merge(cls.defaults, cls.profiles["mini"]["detector"])).eval()
    assert detector.backbone.facts.name == full.split(":", 1)[1] and detector.provenance["random_init"]
    with torch.no_grad():
        out = detector(torch.rand(2, 3, 64, 64))
    assert out.shape == (2,) and torch.isfinite(out).all()


def test_bad_settings_are_one_clear_error():
    with pytest.raises(HarnessError, match="detector.mode"):
        Backbone({**SMALL, "mode": "finetune"})
    with pytest.raises(HarnessError, match="unknown timm model"):
        Backbone({**SMALL, "model": "timm:resnet5000"})
    with pytest.raises(HarnessError, match="cannot be built"):
        Backbone({**SMALL, "model_kwargs": {"layers": "many"}})
