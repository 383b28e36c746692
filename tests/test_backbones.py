import pytest
import torch
from safetensors.torch import save_file

from harness.backbones import build_vit, load_open_clip_visual
from harness.errors import HarnessError


def test_tiny_vit_tokens_follow_the_patch_grid():
    backbone = build_vit("tiny", tiny={"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2})
    assert backbone.facts.grid == 4
    assert backbone.provenance["random_init"] is True
    x = torch.zeros(2, 3, 32, 32)
    # Change one 8x8 patch of image 0: at depth 1 with attention every token may move,
    # but the first patch-embedding row must change only at that token.
    x2 = x.clone()
    x2[0, :, 8:16, 16:24] = 1.0
    emb = backbone.model.patch_embed
    a, b = emb(x), emb(x2)  # [B, N, D]
    changed = (a - b).abs().sum(-1)[0] > 0
    assert changed.nonzero().flatten().tolist() == [1 * 4 + 2]
    pooled, tokens = backbone(x)
    assert pooled.shape == (2, 32) and tokens.shape == (2, 16, 32)


def test_open_clip_local_file_reproduces_the_model(tmp_path):
    source = build_vit("open_clip:ViT-S-32", pretrained="none", image_size=64)
    state = {f"visual.{k}": v.contiguous() for k, v in source.model.state_dict().items()}
    path = tmp_path / "clip.safetensors"
    save_file(state, str(path))
    loaded = build_vit("open_clip:ViT-S-32", pretrained="none", weights=path, image_size=64)
    assert loaded.provenance["random_init"] is False and loaded.provenance["weights_sha256"]
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        p1, t1 = source(x)
        p2, t2 = loaded(x)
    assert torch.equal(p1, p2) and torch.equal(t1, t2)
    assert t1.shape == (2, 4, source.facts.token_dim)
    visual, dim, facts = load_open_clip_visual("ViT-S-32", pretrained="none", weights=path, image_size=64)
    assert dim == facts.pooled_dim == visual.output_dim
    # A file saved at another grid is resampled to the requested image size.
    bigger = build_vit("open_clip:ViT-S-32", pretrained="none", weights=path, image_size=96)
    assert bigger(torch.rand(1, 3, 96, 96))[1].shape[1] == 9


def test_timm_local_file_and_mismatch(tmp_path):
    source = build_vit("tiny", tiny={"img_size": 32, "embed_dim": 32, "depth": 1})
    path = tmp_path / "tiny.pt"
    torch.save(source.model.state_dict(), path)
    loaded = build_vit("tiny", weights=path, tiny={"img_size": 32, "embed_dim": 32, "depth": 1})
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(source(x)[1], loaded(x)[1])
    with pytest.raises(HarnessError, match="does not fit"):
        build_vit("tiny", weights=path, tiny={"img_size": 32, "embed_dim": 32, "depth": 2})


def test_hub_failure_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HarnessError, match="local weights file"):
        build_vit("open_clip:ViT-S-32", pretrained="laion400m_e32")
    with pytest.raises(HarnessError, match="unknown backbone"):
        build_vit("resnet50")
    with pytest.raises(HarnessError, match="does not exist"):
        build_vit("tiny", weights="/nonexistent.safetensors")
