"""Hub backbones and the weights store: offline is decided at once, a stored file is used."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from harness import backbones, weights
from harness.backbones import build_vit
from harness.errors import HarnessError
from harness.weights import Checkpoint

SMALL = "vit_tiny_patch16_224.augreg_in21k"


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))  # an empty hub cache


def test_offline_default_clip_fails_before_building_anything(store, monkeypatch):
    import open_clip

    def no_build(*args, **kwargs):
        raise AssertionError("the model must not be built (or downloaded) when offline with nothing cached")

    monkeypatch.setattr(open_clip, "create_model", no_build)
    with pytest.raises(HarnessError, match=r"offline \(HF_HUB_OFFLINE is set\).*harness weights import FILE "
                                           r"--as clip:vit-l-14-openai") as info:
        build_vit("open_clip:ViT-L-14")
    assert "\n" not in str(info.value)


def test_offline_ppl_with_default_settings_is_one_line(store):
    from harness.registry import get_detector

    with pytest.raises(HarnessError, match="harness weights import FILE --as clip:vit-l-14-openai"):
        get_detector("ppl")({})


def test_a_backbone_in_the_store_is_loaded_from_it_offline(store, tmp_path, monkeypatch):
    import timm

    entry = Checkpoint(name="vit:tiny-test", host="huggingface", repo="timm/" + SMALL, filename="model.safetensors",
                       keys={"patch_embed.proj.weight": (192, 3, 16, 16)})
    monkeypatch.setattr(weights, "BACKBONES", weights.BACKBONES + (entry,))
    monkeypatch.setitem(backbones.HUB_ENTRIES, ("timm", SMALL, "hub"), "vit:tiny-test")
    torch.manual_seed(0)
    reference = timm.create_model(SMALL, pretrained=False, num_classes=0)
    file = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(file))
    stored = weights.import_file(file, "vit:tiny-test")
    vit = build_vit(f"timm:{SMALL}")
    assert vit.provenance["weights"] == str(stored) and vit.provenance["random_init"] is False
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(vit.model.forward_features(x), reference.eval().forward_features(x), atol=1e-6)


def test_offline_generic_timm_detector_fails_before_building_anything(store, monkeypatch):
    import timm

    from harness.backbones import build_feature_model

    def no_build(*args, **kwargs):
        raise AssertionError("the model must not be built (or downloaded) when offline with nothing cached")

    monkeypatch.setattr(timm, "create_model", no_build)
    with pytest.raises(HarnessError, match=r"offline \(HF_HUB_OFFLINE is set\).*timm resnet18"):
        build_feature_model("timm:resnet18")
