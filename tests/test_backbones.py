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


# -- QuickGELU --------------------------------------------------------------------------------
def _tiny_clip_config(tmp_path, name: str, patch_size: int = 8, width: int = 64, image_size: int = 32) -> str:
    """Register an open_clip config with OpenAI CLIP's layout, small enough for a test."""
    import json

    import open_clip

    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({
        "embed_dim": 48,
        "vision_cfg": {"image_size": image_size, "layers": 1, "width": width, "patch_size": patch_size},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
    }))
    open_clip.add_model_config(path)
    return name


def _openai_like_file(tmp_path, name: str):
    """A full CLIP state dict (as OpenAI's files hold) of a QuickGELU model whose MLP inputs are
    large enough for GELU and QuickGELU to differ clearly; returns (reference model, path)."""
    import open_clip

    torch.manual_seed(0)
    reference = open_clip.create_model(name, pretrained=None, force_quick_gelu=True)
    with torch.no_grad():
        for p in reference.parameters():
            p.normal_(0.0, 0.3)
    path = tmp_path / "openai_like.pt"
    torch.save(reference.state_dict(), path)
    return reference.eval(), path


def test_quick_gelu_tower_matches_an_open_clip_reference_built_with_force_quick_gelu(tmp_path):
    from open_clip.transformer import QuickGELU

    name = _tiny_clip_config(tmp_path, "bb-test-qgelu")
    reference, path = _openai_like_file(tmp_path, name)
    # What the offline advice leads to: pretrained='none' plus the OpenAI file.
    quick = build_vit(f"open_clip:{name}", pretrained="none", weights=path, quick_gelu=True)
    act = quick.model.transformer.resblocks[0].mlp.gelu
    assert isinstance(act, QuickGELU) and quick.provenance["quick_gelu"] is True
    z = torch.linspace(-4, 4, 33)
    assert torch.allclose(act(z), z * torch.sigmoid(1.702 * z))  # QuickGELU by its formula
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        expected = reference.encode_image(x)
        assert torch.allclose(quick(x)[0], expected, atol=1e-5)
        # Without the flag open_clip builds GELU: the same weights give other features.
        plain = build_vit(f"open_clip:{name}", pretrained="none", weights=path)
        assert plain.provenance["quick_gelu"] is False
        assert isinstance(plain.model.transformer.resblocks[0].mlp.gelu, torch.nn.GELU)
        assert not torch.allclose(plain(x)[0], expected, atol=1e-3)


def test_quick_gelu_contradicting_a_hub_tag_is_refused_before_any_download(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HarnessError, match=r"trained with QuickGELU.*quick_gelu=true"):
        build_vit("open_clip:ViT-B-32", pretrained="openai", quick_gelu=False)
    with pytest.raises(HarnessError, match=r"trained with GELU.*quick_gelu=false"):
        build_vit("open_clip:ViT-B-32", pretrained="laion2b_s34b_b79k", quick_gelu=True)
    # timm and tiny ViTs are GELU models: the flag does not apply to them.
    assert build_vit("tiny", quick_gelu=True, tiny={"embed_dim": 32, "depth": 1}).facts.family == "timm"


# -- weights of the wrong shapes ---------------------------------------------------------------
def test_open_clip_file_of_another_patch_size_or_image_size_names_the_keys(tmp_path):
    import open_clip

    b16 = _tiny_clip_config(tmp_path, "bb-test-p8", patch_size=8)
    b32 = _tiny_clip_config(tmp_path, "bb-test-p16", patch_size=16)
    path = tmp_path / "p16.pt"
    torch.save(open_clip.create_model(b32, pretrained=None).state_dict(), path)
    # A /16 file for a /8 model (as ViT-B-32 weights for ViT-B-16): the patch kernel differs.
    with pytest.raises(HarnessError, match=r"does not fit open_clip bb-test-p8.*wrong shapes.*"
                                           r"conv1\.weight \[64, 3, 16, 16\] != \[64, 3, 8, 8\]"):
        build_vit(f"open_clip:{b16}", pretrained="none", weights=path)
    # A file saved for 64-px inputs, read without asking for that size: the position table differs.
    big = _tiny_clip_config(tmp_path, "bb-test-64px", image_size=64)
    path64 = tmp_path / "p8_64px.pt"
    torch.save(open_clip.create_model(big, pretrained=None).state_dict(), path64)
    with pytest.raises(HarnessError, match=r"positional_embedding \[65, 64\] != \[17, 64\]"):
        build_vit(f"open_clip:{b16}", pretrained="none", weights=path64)
    # Another width: every block's tensors are named, with both shapes, and no raw torch error.
    wide = _tiny_clip_config(tmp_path, "bb-test-wide", width=96)
    pathw = tmp_path / "wide.pt"
    torch.save(open_clip.create_model(wide, pretrained=None).state_dict(), pathw)
    with pytest.raises(HarnessError, match=r"wrong shapes \(file != model\) \['class_embedding \[96\] != \[64\]'"):
        build_vit(f"open_clip:{b16}", pretrained="none", weights=pathw)


def test_timm_file_of_another_patch_size_or_width_is_refused_not_resampled(tmp_path):
    sizes = {"img_size": 32, "embed_dim": 32, "depth": 1, "num_heads": 2}
    path = tmp_path / "p16.pt"
    torch.save(build_vit("tiny", tiny={**sizes, "patch_size": 16}).model.state_dict(), path)
    with pytest.raises(HarnessError, match=r"patch_embed\.proj\.weight \[32, 3, 16, 16\] != \[32, 3, 8, 8\]"):
        build_vit("tiny", weights=path, tiny={**sizes, "patch_size": 8})
    torch.save(build_vit("tiny", tiny={**sizes, "patch_size": 8, "embed_dim": 48}).model.state_dict(), path)
    with pytest.raises(HarnessError, match=r"patch_embed\.proj\.weight \[48, 3, 8, 8\] != \[32, 3, 8, 8\]"):
        build_vit("tiny", weights=path, tiny={**sizes, "patch_size": 8})


def test_check_state_fits_lists_wrong_shapes_missing_and_unexpected_keys():
    from harness.checkpoints import check_state_fits

    own = {"a": torch.zeros(2, 3), "b": torch.zeros(4), "c": torch.zeros(1)}
    state = {"a": torch.zeros(3, 2), "b": torch.zeros(4), "d": torch.zeros(1)}
    with pytest.raises(HarnessError) as info:
        check_state_fits(own, state, "f.pt", "model X")
    message = str(info.value)
    assert "f.pt does not fit model X" in message
    assert "1 wrong shapes (file != model) ['a [3, 2] != [2, 3]']" in message
    assert "1 missing keys ['c']" in message and "1 unexpected keys ['d']" in message
    check_state_fits(own, {k: v.clone() for k, v in own.items()}, "f.pt", "model X")  # fits: no error
