"""PPL: Random Patch Replacement, the patch-wise contrastive loss, LoRA checkpoints, and a tiny
model that learns the fake trace of tests/fakedata.py."""

from __future__ import annotations

import itertools

import pytest
import torch
from safetensors.torch import load_file, save_file

from fakedata import write_pairs
from harness.backbones import build_vit
from harness.suite import Sample
from harness.training import train, validation_logits, validation_metrics
from harness.plugins.detectors.ppl import PPL, Naive, patch_contrastive_loss, random_patch_replacement, rpr_masks

TINY = {"patch_size": 4, "embed_dim": 32, "depth": 1, "num_heads": 2}


def tiny_config(**overrides):
    return {"backbone": "tiny", "pretrained": "none", "image_size": 16, "tiny": dict(TINY), **overrides}


def cells_equal(a: torch.Tensor, b: torch.Tensor, grid: int) -> torch.Tensor:
    """[grid, grid] bools: cell (i, j) of image a equals that of image b, pixel for pixel."""
    s = a.shape[-1] // grid
    return torch.tensor([[torch.equal(a[:, i * s:(i + 1) * s, j * s:(j + 1) * s], b[:, i * s:(i + 1) * s, j * s:(j + 1) * s])
                          for j in range(grid)] for i in range(grid)])


def test_rpr_masks_have_exactly_the_ratio():
    masks = rpr_masks(50, 4, 0.5, torch.Generator().manual_seed(0))
    assert masks.shape == (50, 4, 4)
    assert (masks.view(50, -1).sum(1) == 8).all()
    assert len({tuple(m.flatten().tolist()) for m in masks}) > 40  # random, not one fixed mask


def test_rpr_replaces_exactly_the_masked_patches_and_labels_them():
    torch.manual_seed(0)
    grid, b = 4, 6
    x = torch.rand(b, 3, 16, 16)
    pair = torch.rand(b, 3, 16, 16)
    label = torch.tensor([1, 1, 1, 0, 1, 0])
    has_pair = torch.tensor([True, True, False, False, False, False])
    out, patch_labels, counts = random_patch_replacement(
        x, label, pair, has_pair, grid=grid, ratio=0.5, prob=1.0, generator=torch.Generator().manual_seed(1))
    assert counts == {"n_rpr_pair": 2, "n_rpr_batch_real": 2, "n_rpr_no_source": 0}
    for i in range(b):
        kept = cells_equal(out[i], x[i], grid)
        if label[i] == 0:  # real images are never touched and all their patches are real
            assert kept.all() and (patch_labels[i] == 0).all()
            continue
        replaced = ~kept
        assert int(replaced.sum()) == 8
        if has_pair[i]:
            source = pair[i]
        else:  # the replacing patches come from one real image of the batch
            source = next(x[r] for r in (3, 5) if cells_equal(out[i], x[r], grid)[replaced].all())
        assert cells_equal(out[i], source, grid)[replaced].all()
        # Patch labels (row-major like the ViT tokens): 0 exactly where a real patch went in.
        assert patch_labels[i].tolist() == (~replaced).long().flatten().tolist()


def test_rpr_probability_and_missing_sources():
    x, pair = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    label = torch.tensor([1, 1, 1, 1])
    out, patch_labels, counts = random_patch_replacement(
        x, label, pair, torch.tensor([False] * 4), grid=4, ratio=0.5, prob=1.0)
    # All fakes, no pairs: nothing real to use, so nothing changes and the count says so.
    assert torch.equal(out, x) and (patch_labels == 1).all() and counts["n_rpr_no_source"] == 4
    out, _, counts = random_patch_replacement(x, label, pair, torch.tensor([True] * 4), grid=4, ratio=0.5, prob=0.0)
    assert torch.equal(out, x) and counts["n_rpr_pair"] == 0
    gen = torch.Generator().manual_seed(0)
    hits = sum(random_patch_replacement(x, label, pair, torch.tensor([True] * 4), grid=4, ratio=0.5, prob=0.9,
                                        generator=gen)[2]["n_rpr_pair"] for _ in range(100))
    assert 320 < hits < 400  # 0.9 of 400 fakes


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_contrastive_loss_equals_a_brute_force_double_loop(reduction):
    torch.manual_seed(0)
    emb = torch.randn(13, 5) * 0.4
    labels = torch.randint(0, 2, (13,))
    alpha = 1.0
    total, pairs = 0.0, 0
    for i, j in itertools.product(range(13), repeat=2):
        if i == j:
            continue
        d2 = float(((emb[i] - emb[j]) ** 2).sum())
        total += d2 if labels[i] == labels[j] else max(0.0, alpha - d2)
        pairs += 1
    expected = total if reduction == "sum" else total / pairs
    got = patch_contrastive_loss(emb, labels, alpha, reduction)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # Some negative pairs must fall inside the margin, or the hinge branch went untested.
    d2 = torch.cdist(emb, emb) ** 2
    assert ((labels[:, None] != labels[None]) & (d2 < alpha)).any()


def test_lora_leaves_the_base_untouched_and_saves_adapters_and_head(tmp_path):
    base_file = tmp_path / "tiny_base.safetensors"
    base = build_vit("tiny", image_size=16, tiny=TINY)
    save_file({k: v.contiguous() for k, v in base.model.state_dict().items()}, str(base_file))
    config = tiny_config(backbone_weights=str(base_file), lora_rank=2, lora_alpha=4)
    det = PPL(config)
    assert det.provenance["random_init"] is False
    before = {k: v.clone() for k, v in det.state_dict().items() if "lora_" not in k and not k.startswith("head.")}
    trainable = {n for n, p in det.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    opt = torch.optim.AdamW(det.parameters_to_train(), lr=1e-2)
    batch = {"x": torch.rand(4, 3, 16, 16), "label": torch.tensor([0, 1, 0, 1]),
             "pair": torch.rand(4, 3, 16, 16), "has_pair": torch.tensor([False, True, False, True])}
    for _ in range(3):
        opt.zero_grad()
        det.training_step(batch)["loss"].backward()
        opt.step()
    after = det.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(v, 0 * v) for k, v in after.items() if "lora_B" in k)  # the adapters did train

    state = det.checkpoint_state()
    assert set(state) == trainable
    path = tmp_path / "ppl.safetensors"
    save_file(state, str(path))
    assert set(load_file(str(path))) == trainable
    fresh = PPL(config)
    fresh.load_weights(path)
    x = torch.rand(3, 3, 16, 16)
    det.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.allclose(det(x), fresh(x))


def test_adapters_refuse_a_base_other_than_the_one_they_were_trained_on(tmp_path):
    from harness.checkpoints import save_checkpoint
    from harness.errors import HarnessError

    for seed, name in ((0, "a"), (1, "b")):
        torch.manual_seed(seed)
        base = build_vit("tiny", image_size=16, tiny=TINY)
        save_file({k: v.contiguous() for k, v in base.model.state_dict().items()}, str(tmp_path / f"{name}.safetensors"))
    trained = PPL(tiny_config(backbone_weights=str(tmp_path / "a.safetensors")))
    assert trained._stores_adapters_only()
    # as the training engine writes it: the adapters and head, the base's provenance beside them
    ckpt = save_checkpoint(tmp_path / "ppl.safetensors", trained.checkpoint_state(), trained.config,
                           {"backbone": trained.provenance})
    other = PPL(tiny_config(backbone_weights=str(tmp_path / "b.safetensors")))
    with pytest.raises(HarnessError, match="adapters trained on another base"):
        other.load_weights(ckpt)
    same = PPL(tiny_config(backbone_weights=str(tmp_path / "a.safetensors")))
    same.load_weights(ckpt)
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(same.eval()(x), trained.eval()(x))


def test_random_base_or_full_finetuning_is_saved_whole():
    # Without a reproducible base the adapters alone could not be reloaded.
    assert any("lora_" not in k and not k.startswith("head.") for k in PPL(tiny_config()).checkpoint_state())
    full = PPL(tiny_config(lora=False))
    assert all(p.requires_grad for p in full.parameters())
    assert set(full.checkpoint_state()) == set(full.state_dict())


def test_a_checkpoint_of_another_shape_is_a_clear_error_and_changes_nothing(tmp_path):
    from harness.checkpoints import save_checkpoint
    from harness.errors import HarnessError

    wide = PPL(tiny_config(tiny={**TINY, "embed_dim": 48}))
    path = save_checkpoint(tmp_path / "wide.safetensors", wide.checkpoint_state(), wide.config)
    narrow = PPL(tiny_config())
    before = {k: v.clone() for k, v in narrow.state_dict().items()}
    with pytest.raises(HarnessError) as err:
        narrow.load_weights(path)
    message = str(err.value)
    assert "wrong shapes (file != model)" in message and "[48] != [32]" in message
    assert '; it was saved with detector.tiny={"depth": 1, "embed_dim": 48' in message  # the settings it was saved with, to rebuild the detector
    assert all(torch.equal(before[k], v) for k, v in narrow.state_dict().items())


def test_ablation_switches_change_the_loss():
    torch.manual_seed(0)
    batch = {"x": torch.rand(4, 3, 16, 16), "label": torch.tensor([0, 1, 0, 1]),
             "pair": torch.rand(4, 3, 16, 16), "has_pair": torch.tensor([False, True, False, True])}
    torch.manual_seed(1)
    det = PPL(tiny_config(rpr=False, pcl=True, pcl_lambda=0.3))
    out = det.training_step(batch)
    assert out["loss"].item() == pytest.approx(0.3 * out["loss_con"].item() + 0.7 * out["loss_ce"].item(), rel=1e-5)
    assert "n_rpr_pair" not in out
    naive = Naive(tiny_config())
    assert naive.needs_pairs is False and not naive.config["rpr"] and not naive.config["pcl"]
    out = naive.training_step(batch)
    assert set(out) == {"loss", "loss_ce", "n_reconstructions"} and out["n_reconstructions"] == 0
    assert PPL(tiny_config()).needs_pairs is True


def test_reconstructions_of_reals_join_the_batch_as_fakes_paired_with_their_real():
    torch.manual_seed(0)
    x, pair = torch.rand(3, 3, 16, 16), torch.rand(3, 3, 16, 16)
    # row 0: a real with its reconstruction in pair[0]; row 1: a fake with its source; row 2: a real alone
    batch = {"x": x, "label": torch.tensor([0, 1, 0]), "pair": pair, "has_pair": torch.tensor([True, True, False])}
    det = PPL(tiny_config(rpr=False, pcl=False)).eval()
    assert det.needs_reconstructions and Naive(tiny_config()).needs_reconstructions
    out = det.training_step(batch)
    assert out["n_reconstructions"] == 1
    with torch.no_grad():  # by hand: the batch plus the reconstruction, labelled fake
        logits = det(torch.cat([x, pair[:1]]))
        expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor([0.0, 1.0, 0.0, 1.0]))
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    # with RPR always on, the reconstruction takes its replaced patches from its own real image
    det = PPL(tiny_config(rpr=True, rpr_prob=1.0, pcl=False))
    out = det.training_step({**batch, "label": torch.tensor([0, 0, 0]), "has_pair": torch.tensor([True, False, False])})
    assert (out["n_rpr_pair"], out["n_rpr_batch_real"]) == (1, 0)


def test_pcl_samples_tokens_above_the_limit(caplog):
    det = PPL(tiny_config(rpr=False, pcl_max_tokens=20))
    batch = {"x": torch.rand(4, 3, 16, 16), "label": torch.tensor([0, 1, 0, 1])}
    with caplog.at_level("INFO"):
        out = det.training_step(batch)
    assert torch.isfinite(out["loss"])
    assert "exceed pcl_max_tokens=20" in caplog.text  # 4 images x 16 tokens = 64 > 20


def _samples(root, split, n, seed):
    out = []
    for real, fake in write_pairs(root / split / "real", root / split / "fake", n, size=16, seed=seed):
        out += [Sample(str(real), 0, "g", split), Sample(str(fake), 1, "g", split, pair=str(real))]
    return out


@pytest.fixture
def one_thread():
    # Hundreds of tiny steps: a second thread only adds synchronisation cost.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_tiny_ppl_beats_chance_on_its_training_generator(tmp_path, one_thread):
    # A ViT from scratch needs a few hundred steps to find the 2x2 nearest-neighbour trace.
    train_set, val_set = _samples(tmp_path, "train", 256, 0), _samples(tmp_path, "val", 16, 1)
    test_set = _samples(tmp_path, "test", 48, 2)
    torch.manual_seed(0)
    det = PPL(tiny_config(lora=False, pcl_max_tokens=512, tiny={**TINY, "embed_dim": 64}))
    config = {"run": {"seed": 0}, "train": {"epochs": 20, "batch_size": 32, "lr": 1e-3, "warmup_steps": 10,
                                             "schedule": "constant", "select": "auc"}}
    best = train(det, train_set, val_set, config=config, run_dir=tmp_path / "run", device="cpu")
    det.load_weights(best)
    labels, logits, _ = validation_logits(det, test_set, device=torch.device("cpu"), batch_size=64)
    metrics = validation_metrics(labels, logits)
    # AUC: the head's threshold lags the ranking early in training; the ranking is what was learned.
    assert metrics["auc"] > 0.8, metrics
