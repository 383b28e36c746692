"""DRCT: official key layouts, the 2-way -> P(fake) conversion, pairs in the training step."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from torch import nn

from harness.checkpoints import save_checkpoint
from harness.detector import IMAGENET_MEAN, IMAGENET_STD
from harness.errors import HarnessError
from harness.registry import get_detector
from harness.plugins.detectors.drct import DRCT, contrastive_loss

TINY_CONVNEXT = {"depths": [1, 1, 1, 1], "dims": [8, 16, 24, 32]}
CONVNEXT = {"variant": "convnext", "convnext": "convnext_atto", "convnext_kwargs": TINY_CONVNEXT,
            "pretrained": "none", "embedding_size": 16, "crop_size": 32}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> str:
    """An open_clip config with OpenAI CLIP's layout; its image feature is 48-d."""
    import open_clip

    name = "drct-test-tiny-clip"
    path = tmp_path_factory.mktemp("clipcfg") / f"{name}.json"
    path.write_text(json.dumps({
        "embed_dim": 48,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
    }))
    open_clip.add_model_config(path)
    return name


def clip_config(name: str) -> dict:
    return {"variant": "clip", "clip_model": name, "pretrained": "none", "embedding_size": 16, "crop_size": 32}


def imagenet_normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)


def randomise(module: nn.Module, std: float = 0.1) -> nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
    return module


def test_registered_through_entry_point():
    assert get_detector("drct") is DRCT and DRCT.needs_pairs


def test_full_size_layouts_match_the_published_keys():
    with torch.device("meta"):  # shapes only: no memory, no time
        convb = DRCT({"pretrained": "none"})
    shapes = {k: tuple(v.shape) for k, v in convb.state_dict().items()}
    assert shapes["model.stem.0.weight"] == (128, 3, 4, 4)
    assert shapes["model.head.fc.weight"] == (1024, 1024)
    assert shapes["fc.weight"] == (2, 1024) and shapes["fc.bias"] == (2,)
    assert all(k.startswith(("model.", "fc.")) for k in shapes)


def test_official_convnext_checkpoint_and_label_direction(tmp_path):
    # The official model, rebuilt independently: timm ConvNeXt with head.fc -> embedding, fc -> 2 classes.
    torch.manual_seed(1)
    backbone = randomise(timm.create_model("convnext_atto", pretrained=False, num_classes=16,
                                           depths=(1, 1, 1, 1), dims=(8, 16, 24, 32)))
    fc = randomise(nn.Linear(16, 2), 1.0)
    state = {f"model.{k}": v for k, v in backbone.state_dict().items()}
    state.update({f"fc.{k}": v for k, v in fc.state_dict().items()})
    assert "model.head.fc.weight" in state and "model.stem.0.weight" in state
    path = tmp_path / "14_acc0.9996.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)  # a DataParallel save

    det = DRCT(CONVNEXT)
    det.load_weights(path)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        backbone.eval()
        z = fc(backbone(imagenet_normalise(x)))
        p_fake = 1 - torch.softmax(z, dim=1)[:, 0]  # the official score
        assert torch.allclose(torch.sigmoid(det.eval()(x)), p_fake, atol=1e-5)
        assert torch.allclose(det.class_logits(x), z, atol=1e-5)


def test_wrong_checkpoints_name_the_keys(tmp_path):
    det = DRCT(CONVNEXT)
    state = dict(det.state_dict())
    state["fc.weight"] = torch.zeros(2, 1024)  # the full-size head in a small model
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    with pytest.raises(HarnessError, match=r"1 wrong shapes \(file != model\) \['fc.weight \[2, 1024\] != \[2, 16\]'\]"):
        det.load_weights(path)
    state = dict(det.state_dict())
    del state["model.head.fc.bias"]
    state["model.head.extra"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(HarnessError, match=r"1 missing keys \['model.head.fc.bias'\], 1 unexpected keys \['model.head.extra'\]"):
        det.load_weights(path)


def test_official_clip_checkpoint_with_text_tower(tmp_path, tiny_clip):
    import open_clip

    torch.manual_seed(2)
    # DRCT-CLIP checkpoints hold OpenAI CLIP, a QuickGELU model: the reference is built so.
    clip = randomise(open_clip.create_model(tiny_clip, pretrained=None, force_quick_gelu=True), 0.3)
    proj = randomise(nn.Linear(48, 16), 0.2)
    fc = randomise(nn.Linear(16, 2), 1.0)
    # CLIPModelV2 keeps the whole CLIP as model.model and its Linear(768, 1024) as model.fc.
    state = {f"model.model.{k}": v for k, v in clip.state_dict().items()}
    state.update({f"model.fc.{k}": v for k, v in proj.state_dict().items()})
    state.update({f"fc.{k}": v for k, v in fc.state_dict().items()})
    assert any(k.startswith("model.model.transformer.") for k in state)
    path = tmp_path / "13_acc0.9664.pth"
    torch.save(state, path)

    det = DRCT(clip_config(tiny_clip))
    det.load_weights(path)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        # DRCT feeds CLIP ImageNet-normalised inputs (its transforms use ImageNet statistics).
        z = fc(proj(clip.encode_image(imagenet_normalise(x))))
        p_fake = 1 - torch.softmax(z, dim=1)[:, 0]
        assert torch.allclose(torch.sigmoid(det.eval()(x)), p_fake, atol=1e-5)
        assert torch.allclose(det.class_logits(x), z, atol=1e-4)
        # The same file in a GELU tower (open_clip's default) gives other logits.
        gelu = DRCT({**clip_config(tiny_clip), "quick_gelu": False})
        gelu.load_weights(path)
        assert not torch.allclose(gelu.eval().class_logits(x), z, atol=1e-3)
    assert det.provenance["quick_gelu"] is True and gelu.provenance["quick_gelu"] is False

    # This tower was built with pretrained='none': the configuration cannot rebuild it, so a
    # harness checkpoint stores it with the trained layers, and another seed gets it back.
    saved = det.checkpoint_state()
    assert {"model.fc.weight", "model.fc.bias", "fc.weight", "fc.bias"} < set(saved)
    assert {k for k in saved if not k.startswith("model.model.visual.")} == {
        "model.fc.weight", "model.fc.bias", "fc.weight", "fc.bias"}
    ckpt = save_checkpoint(tmp_path / "best.safetensors", saved, det.config)
    torch.manual_seed(3)
    other = DRCT(clip_config(tiny_clip))
    other.load_weights(ckpt)
    with torch.no_grad():
        assert torch.allclose(other.eval()(x), det(x), atol=1e-6)

    # A tower from a weights file is identified by the configuration: only the trained layers go.
    weights = tmp_path / "openai_clip.pt"
    torch.save(clip.state_dict(), weights)
    from_file = DRCT({**clip_config(tiny_clip), "backbone_weights": str(weights)})
    assert not from_file.provenance["random_init"]
    from_file.load_weights(ckpt)  # the stored tower is accepted as well
    assert set(from_file.checkpoint_state()) == {"model.fc.weight", "model.fc.bias", "fc.weight", "fc.bias"}
    with torch.no_grad():
        assert torch.allclose(from_file.eval()(x), det(x), atol=1e-6)

    # A text-tower key that is not CLIP's is still an error.
    state["model.model.not_clip"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(HarnessError, match=r"unexpected keys \['model.model.not_clip'\]"):
        DRCT(clip_config(tiny_clip)).load_weights(path)


def test_clip_variant_trains_only_the_projection_and_head(tiny_clip):
    det = DRCT(clip_config(tiny_clip))
    det.train()
    trainable = {n for n, p in det.named_parameters() if p.requires_grad}
    assert trainable == {"model.fc.weight", "model.fc.bias", "fc.weight", "fc.bias"}
    assert not det.model.model.training


def brute_force_contrastive(emb: np.ndarray, labels: list[int], pos_margin: float, neg_margin: float) -> float:
    unit = [e / math.sqrt(sum(v * v for v in e)) for e in emb]
    pos, neg = [], []
    for i in range(len(unit)):
        for j in range(len(unit)):
            if i == j:
                continue
            d = math.sqrt(sum((a - b) ** 2 for a, b in zip(unit[i], unit[j])))
            if labels[i] == labels[j]:
                pos.append(max(0.0, d - pos_margin))
            else:
                neg.append(max(0.0, neg_margin - d))
    mean_nonzero = lambda xs: (sum(x for x in xs if x > 0) / sum(1 for x in xs if x > 0)) if any(x > 0 for x in xs) else 0.0  # noqa: E731
    return mean_nonzero(pos) + mean_nonzero(neg)


@pytest.mark.parametrize("pos_margin,neg_margin", [(0.0, 1.0), (0.2, 1.5)])
def test_contrastive_loss_matches_brute_force(pos_margin, neg_margin):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(7, 5))
    labels = [0, 1, 1, 0, 1, 0, 0]
    got = contrastive_loss(torch.tensor(emb, dtype=torch.float32), torch.tensor(labels), pos_margin, neg_margin)
    assert float(got) == pytest.approx(brute_force_contrastive(emb, labels, pos_margin, neg_margin), rel=1e-5)


def test_contrastive_loss_has_finite_gradients_for_identical_embeddings():
    emb = torch.ones(4, 3, requires_grad=True)
    loss = contrastive_loss(emb, torch.tensor([0, 0, 1, 1]))
    loss.backward()
    assert torch.isfinite(emb.grad).all() and float(loss.detach()) == pytest.approx(1.0, abs=1e-4)


def test_training_step_adds_fakes_sources_as_reals_and_reals_reconstructions_as_fakes():
    torch.manual_seed(3)
    det = DRCT(CONVNEXT)
    x, pair = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    # row 0: a real with its reconstruction; row 1: a fake with its real source; rows 2-3: no pair
    batch = {"x": x, "label": torch.tensor([0, 1, 1, 0]), "pair": pair,
             "has_pair": torch.tensor([True, True, False, False])}
    det.eval()  # no randomness in the forward: compare with a hand-built batch
    out = det.training_step(batch)
    xs = torch.cat([x, pair[0:1], pair[1:2]])
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    emb = det.model(imagenet_normalise(xs))
    z = det.fc(emb)
    expected = 0.7 * nn.functional.cross_entropy(z, labels) + 0.3 * contrastive_loss(emb, labels)
    assert torch.allclose(out["loss"], expected, atol=1e-5)
    assert torch.allclose(out["contrastive"], contrastive_loss(emb, labels).detach(), atol=1e-5)


def test_training_data_decodes_reconstructions_of_reals_only_for_detectors_that_ask(tmp_path):
    from harness.data import SampleDataset
    from harness.suite import Sample

    rng = np.random.default_rng(0)
    paths = {}
    for name in ("real", "recon", "fake"):
        paths[name] = tmp_path / f"{name}.png"
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(paths[name])
    samples = [Sample(str(paths["real"]), 0, "g", "train", pair=str(paths["recon"])),
               Sample(str(paths["fake"]), 1, "g", "train", pair=str(paths["real"]))]
    det = DRCT({**CONVNEXT, "jpeg_prob": 0.0, "blur_prob": 0.0})
    assert det.needs_pairs and det.needs_reconstructions
    both = SampleDataset(samples, det, train=True, with_pairs=True, with_reconstructions=True, seed=1)
    fakes_only = SampleDataset(samples, det, train=True, with_pairs=True, seed=1)
    for index, source in ((0, "recon"), (1, "real")):
        item = both[index]
        assert item["has_pair"]
        # the pair gets the very crop and flips of its row: decode it alone with the same generator
        alone = det.preprocess([Image.open(paths[source]).convert("RGB")], train=True,
                               generator=both._generator(index))[0]
        assert torch.equal(item["pair"], alone)
    assert not fakes_only[0]["has_pair"] and fakes_only[1]["has_pair"]


def test_a_few_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(4)
    det = DRCT(CONVNEXT)
    batch = {"x": torch.rand(4, 3, 32, 32), "label": torch.tensor([0, 1] * 2),
             "pair": torch.rand(4, 3, 32, 32), "has_pair": torch.tensor([False, True] * 2)}
    opt = det.configure_optimizer(det.parameters_to_train(), {"lr": 1e-2})
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["weight_decay"] == 4e-5
    det.train()
    first = float(det.training_step(batch)["loss"].detach())
    for _ in range(8):
        loss = det.training_step(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(det.training_step(batch)["loss"].detach()) < 0.8 * first


def test_input_policy_pads_with_zero_and_uses_imagenet_statistics(tiny_clip):
    for det in (DRCT(CONVNEXT), DRCT(clip_config(tiny_clip))):
        policy = det.input_policy(False)
        assert (policy.geometry, policy.size, policy.pad_value) == ("center_crop", 32, 0)
        assert policy.mean == IMAGENET_MEAN and policy.std == IMAGENET_STD
    img = Image.fromarray(np.full((20, 40, 3), 200, dtype=np.uint8))
    out = DRCT(CONVNEXT).preprocess([img])[0]
    assert out.shape == (3, 32, 32)
    assert out[:, :6].abs().sum() == 0 and out[:, 26:].abs().sum() == 0  # zero padding rows
    assert torch.allclose(out[:, 6:26], torch.full((3, 20, 32), 200 / 255))


def test_training_augmentation_treats_image_and_pair_alike():
    det = DRCT({**CONVNEXT, "jpeg_prob": 1.0, "rot90_prob": 1.0, "blur_prob": 1.0, "gray_prob": 0.0})
    rng = np.random.default_rng(5)
    img = Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
    a, b = det.preprocess([img, img.copy()], train=True, generator=torch.Generator().manual_seed(9))
    assert a.shape == (3, 32, 32) and torch.equal(a, b)
    c, _ = det.preprocess([img, img], train=True, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, c)


def test_clip_variant_tower_uses_quick_gelu(tiny_clip):
    from open_clip.transformer import QuickGELU

    assert DRCT.defaults["quick_gelu"] is True
    det = DRCT(clip_config(tiny_clip))
    acts = [m for m in det.model.model.visual.modules() if isinstance(m, (QuickGELU, nn.GELU))]
    assert acts and all(isinstance(m, QuickGELU) for m in acts)


def test_centre_crop_floors_like_albumentations(tiny_clip):
    # 35 x 39 to 32: excesses 3 and 7 (3 mod 4). albumentations' CenterCrop starts at
    # (3 // 2, 7 // 2) = (1, 3); torchvision's rounding would start at (2, 4).
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, (35, 39, 3), dtype=np.uint8)
    expected = torch.from_numpy(pixels[1:33, 3:35]).permute(2, 0, 1).float() / 255
    shifted = torch.from_numpy(pixels[2:34, 4:36]).permute(2, 0, 1).float() / 255
    for det in (DRCT(CONVNEXT), DRCT(clip_config(tiny_clip))):
        assert det.input_policy(False).center_rounding == "floor"
        out = det.preprocess([Image.fromarray(pixels)])[0]
        assert torch.allclose(out, expected, atol=1e-6)
        assert not torch.allclose(out, shifted, atol=1e-3)


def test_clip_variant_patch_grid_is_the_token_grid_of_the_built_tower(tmp_path):
    import open_clip

    from harness.patchgrid import resolve_grid

    name = "drct-test-clip-patch16"
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({
        "embed_dim": 48,
        "vision_cfg": {"image_size": 48, "layers": 1, "width": 64, "patch_size": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
    }))
    open_clip.add_model_config(path)
    for crop, grid in ((48, 3), (64, 4)):
        det = DRCT({**clip_config(name), "crop_size": crop})
        assert det.model.model.visual.patch_size == (16, 16)
        assert det.input_policy(False).patch_grid == grid == resolve_grid(det)
        # One grid cell is one token: the tower sees grid x grid patches (+ the class token).
        assert det.model.model.visual.positional_embedding.shape[0] == grid * grid + 1
    # The ConvNeXt has no token grid: the analyses keep their default.
    assert DRCT(CONVNEXT).input_policy(False).patch_grid is None


def test_convnext_backbone_file_of_other_shapes_names_the_keys(tmp_path):
    other = timm.create_model("convnext_atto", pretrained=False, num_classes=16,
                              depths=(1, 1, 1, 1), dims=(16, 16, 24, 32))
    path = tmp_path / "convnext.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(HarnessError, match=r"does not fit timm convnext_atto: 16 wrong shapes.*"
                       r"stages\.0\.blocks\.0\.conv_dw\.weight \[16, 1, 7, 7\] != \[8, 1, 7, 7\]"):
        DRCT({**CONVNEXT, "backbone_weights": str(path)})
    # The right shapes load (the ImageNet classifier is replaced by DRCT's embedding layer).
    same = timm.create_model("convnext_atto", pretrained=False, num_classes=1000,
                             depths=(1, 1, 1, 1), dims=(8, 16, 24, 32))
    torch.save(same.state_dict(), path)
    det = DRCT({**CONVNEXT, "backbone_weights": str(path)})
    assert torch.equal(det.model.stem[0].weight, same.stem[0].weight)
