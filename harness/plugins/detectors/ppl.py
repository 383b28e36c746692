"""PPL — Panoptic Patch Learning (Yang et al., "All Patches Matter, More Patches Better", 2025).

No public code: built from the paper's section 4 and ../shared/specs/detectors.md.
A pretrained ViT (CLIP ViT-L/14 by default, or DINOv2 through timm) fine-tuned with LoRA, a
linear head on the pooled feature, and two training-time components:

- Random Patch Replacement (RPR): with probability ``rpr_prob`` a fake image gets a random
  ``rpr_ratio`` of its ViT-grid patches replaced by the same patches of its paired real image
  (or, without a pair, of a real image of the batch — counted as ``n_rpr_batch_real`` in
  ``training.json``). Patch labels follow the mask: replaced patches are real (0).
- Patch-wise Contrastive Learning (PCL): the margin loss of eq. 3 over the patch tokens of the
  batch, ``Y d^2 + (1 - Y) max(0, alpha - d^2)`` over all ordered pairs i != j, vectorised.

Total loss ``pcl_lambda * L_con + (1 - pcl_lambda) * L_ce`` (L_ce = BCE on the image logit).

Training data: where the suite has a real image's reconstruction (DRCT-2M's ``DR/MSCOCO``),
it joins the batch as a fake paired with that real image ("we add reconstructed images to the
training set, following DRCT"), in every row of Table 4 (``naive`` too). A fake's own pair is
the real image the suite pairs it with: on ``mini`` its exact source, on DRCT-2M the MSCOCO
photo of the same stem, which is not pixel-aligned with a text-to-image fake (resized to the
fake's size when they differ), much like the batch-real fallback. Augmentation: only the
random crop; the paper's "basic data augmentation (cropping, rotation, JPEG compression,
etc.)" is not specified further and its rotation and JPEG parts are not implemented.

Configuration (``[detector]``), the ablation switches of Table 4 first:

- ``rpr`` / ``pcl`` / ``lora`` (bool): the components; ``lora = false`` fine-tunes the whole ViT.
- ``backbone``: ``open_clip:ViT-L-14`` (default), ``timm:vit_large_patch14_dinov2.lvd142m``, ``tiny``, ...
- ``pretrained``: ``default`` (hub: OpenAI CLIP weights), an open_clip tag, or ``none`` (random, recorded);
  ``backbone_weights``: a local weights file instead of the hub.
- ``quick_gelu``: open_clip towers only. None (default) follows the weights' tag (``openai``
  is QuickGELU); set true when ``backbone_weights`` holds OpenAI CLIP weights with
  ``pretrained = none``, or the tower computes with the wrong activation.
- ``image_size`` (224), ``tiny`` (sizes of the tiny ViT: patch_size, embed_dim, depth, num_heads).
- ``lora_rank`` (8), ``lora_alpha`` (16), ``lora_dropout`` (0), ``lora_targets`` (default: the
  family's attention + MLP projections, see ``harness.backbones.LORA_TARGETS``).
- ``rpr_ratio`` (0.5), ``rpr_prob`` (0.9): paper notes, unverified.
- ``pcl_lambda`` (0.3), ``pcl_alpha`` (1.0): paper notes, unverified.
- ``pcl_normalize`` (true): patch embeddings are L2-normalised before distances, so that the
  margin alpha = 1 is on the scale of d^2 in [0, 4] (the paper does not say; a harness choice).
- ``pcl_reduction`` (``mean``): eq. 3 is written as a sum; the mean over pairs keeps lambda's
  weighting independent of the batch and token count (``sum`` gives eq. 3 literally).
- ``pcl_max_tokens`` (4096): above this many patch tokens in a batch, a random subset of that
  size is used (all pairs among it) and the run log says so; bounds memory at O(max_tokens^2).

Checkpoints store only the LoRA adapters and the head when the base weights can be rebuilt
(hub or a local file, whose SHA-256 the checkpoint JSON records); a randomly initialised
base, or ``lora = false``, is stored whole.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from harness import hookimpl
from harness.backbones import build_vit
from harness.checkpoints import checkpoint_meta
from harness.detector import Detector, InputPolicy
from harness.errors import HarnessError
from harness.patchgrid import cells_to_mask
from harness.weights import Checkpoint

log = logging.getLogger(__name__)


def rpr_masks(n: int, m: int, ratio: float, generator: torch.Generator | None = None,
              device: torch.device | str = "cpu") -> torch.Tensor:
    """``[n, m, m]`` boolean masks, each with exactly ``round(ratio * m * m)`` cells set, at random."""
    cells = m * m
    k = int(round(ratio * cells))
    scores = torch.rand(n, cells, generator=generator, device=device)
    chosen = scores.argsort(dim=1)[:, :k]
    mask = torch.zeros(n, cells, dtype=torch.bool, device=device)
    mask.scatter_(1, chosen, True)
    return mask.view(n, m, m)


def random_patch_replacement(
    x: torch.Tensor,
    label: torch.Tensor,
    pair: torch.Tensor | None,
    has_pair: torch.Tensor | None,
    *,
    grid: int,
    ratio: float,
    prob: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, int]]:
    """Apply RPR to a batch of inputs in [0, 1].

    Returns the new inputs, patch labels ``[B, grid*grid]`` (1 = fake patch, row-major like
    the ViT tokens) and counts: fakes replaced from their pair, from a real image of the
    batch, and fakes left whole for want of any real source.
    """
    b, _, h, w = x.shape
    device = x.device
    fake = label.bool()
    patch_labels = fake[:, None].expand(b, grid * grid).clone().long()
    chosen = fake & (torch.rand(b, generator=generator, device=device) < prob)
    with_pair = has_pair.bool() & chosen if has_pair is not None else torch.zeros_like(chosen)
    source = pair.clone() if pair is not None else torch.zeros_like(x)
    without = chosen & ~with_pair
    reals = (~fake).nonzero().flatten()
    if without.any() and len(reals):
        picks = reals[torch.randint(len(reals), (int(without.sum()),), generator=generator, device=device)]
        source[without] = x[picks]
    elif without.any():
        chosen = chosen & with_pair  # nothing real to take patches from
    counts = {
        "n_rpr_pair": int(with_pair.sum()),
        "n_rpr_batch_real": int((chosen & ~with_pair).sum()),
        "n_rpr_no_source": int((without & ~chosen).sum()),
    }
    if not chosen.any():
        return x, patch_labels, counts
    cells = rpr_masks(b, grid, ratio, generator, device) & chosen[:, None, None]
    pixels = cells_to_mask(cells, h, w)
    out = torch.where(pixels[:, None], source, x)
    patch_labels = patch_labels.masked_fill(cells.view(b, -1), 0)
    return out, patch_labels, counts


def patch_contrastive_loss(emb: torch.Tensor, labels: torch.Tensor, alpha: float = 1.0,
                           reduction: str = "mean") -> torch.Tensor:
    """Eq. 3 over every ordered pair i != j of the rows of ``emb`` [T, D] with ``labels`` [T].

    ``Y d^2 + (1 - Y) max(0, alpha - d^2)``, d the Euclidean distance, Y = same label.
    ``reduction``: ``sum`` (eq. 3 as written) or ``mean`` over the T (T - 1) pairs.
    """
    t = emb.shape[0]
    if t < 2:
        return emb.sum() * 0.0
    emb = emb.float()
    sq = (emb * emb).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * emb @ emb.T).clamp_min(0.0)
    same = labels[:, None] == labels[None, :]
    terms = torch.where(same, d2, (alpha - d2).clamp_min(0.0))
    terms = terms.masked_fill(torch.eye(t, dtype=torch.bool, device=emb.device), 0.0)
    total = terms.sum()
    return total if reduction == "sum" else total / (t * (t - 1))


#: PPL has no public code or weights; its backbones are the clip:/dinov2: entries.
CHECKPOINTS = (
    Checkpoint(name="ppl:paper", host="unpublished",
               paper="Yang et al., All Patches Matter, More Patches Better (2025), arXiv:2504.01396",
               notes="no public code or weights: train it with `harness train --detector ppl`"),
)


class PPL(Detector):
    name = "ppl"
    checkpoints = CHECKPOINTS  # published weights (harness.weights.Checkpoint)
    description = ("Panoptic Patch Learning: LoRA-tuned ViT (CLIP ViT-L/14 or DINOv2) with Random Patch "
                   "Replacement and Patch-wise Contrastive Learning")
    reference = "Yang et al., All Patches Matter, More Patches Better (2025), arXiv:2504.01396"
    needs_pairs = True
    needs_reconstructions = True
    defaults: dict[str, Any] = {
        "backbone": "open_clip:ViT-L-14",
        "pretrained": "default",
        "backbone_weights": None,
        "quick_gelu": None,
        "image_size": 224,
        "tiny": {"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2},
        "lora": True,
        "lora_rank": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "lora_targets": None,
        "rpr": True,
        "rpr_ratio": 0.5,
        "rpr_prob": 0.9,
        "pcl": True,
        "pcl_lambda": 0.3,
        "pcl_alpha": 1.0,
        "pcl_normalize": True,
        "pcl_reduction": "mean",
        "pcl_max_tokens": 4096,
    }
    settings = {
        "backbone_weights": {"type": ["string", "null"]},
        "quick_gelu": {"type": ["boolean", "null"]},
        "image_size": {"minimum": 1},
        "lora_rank": {"minimum": 1},
        "lora_alpha": {"type": "number", "exclusiveMinimum": 0},
        "lora_dropout": {"minimum": 0, "exclusiveMaximum": 1},
        "lora_targets": {"type": ["array", "null"], "items": {"type": "string"}},
        "rpr_ratio": {"minimum": 0, "maximum": 1},
        "rpr_prob": {"minimum": 0, "maximum": 1},
        "pcl_lambda": {"minimum": 0},
        "pcl_reduction": {"enum": ["mean", "sum"]},
        "pcl_max_tokens": {"minimum": 1},
    }
    # The paper omits its optimiser settings; these are the harness's (DRCT-like) choices.
    training: dict[str, Any] = {
        "epochs": 5, "batch_size": 32, "lr": 1e-4, "weight_decay": 0.0, "schedule": "cosine",
        "warmup_steps": 100, "clip_grad": 1.0, "patience": 2, "select": "auc",
    }
    profiles = {
        # A tiny ViT at the mini suite's crop size: minutes on 2 CPU cores. No pretrained tiny ViT
        # exists, so the whole (random-init) ViT is fine-tuned: LoRA on random weights learns little.
        "mini": {
            "detector": {"backbone": "tiny", "pretrained": "none", "image_size": 64, "lora": False,
                         "tiny": {"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 4}},
            "train": {"epochs": 8, "batch_size": 32, "lr": 1e-3, "warmup_steps": 20,
                      "max_steps_per_epoch": 100, "patience": None},
        },
    }

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__(config)
        cfg = self.config
        self.backbone = build_vit(
            cfg["backbone"], pretrained=cfg["pretrained"], weights=cfg["backbone_weights"],
            image_size=int(cfg["image_size"]), tiny=cfg.get("tiny"), quick_gelu=cfg["quick_gelu"],
        )
        self.facts = self.backbone.facts
        if self.facts.image_size % self.facts.patch_size:
            log.warning("image size %d is not a multiple of the patch size %d: RPR cells will not match tokens",
                        self.facts.image_size, self.facts.patch_size)
        self.provenance = dict(self.facts.provenance)
        # Pairs are decoded only when RPR will use them (the ablation rows without RPR skip them).
        self.needs_pairs = bool(cfg["rpr"])
        if cfg["lora"]:
            from peft import LoraConfig, inject_adapter_in_model

            targets = cfg["lora_targets"] or self.backbone.lora_targets
            lora = LoraConfig(r=int(cfg["lora_rank"]), lora_alpha=int(cfg["lora_alpha"]),
                              lora_dropout=float(cfg["lora_dropout"]), target_modules=list(targets))
            # Injection freezes the base weights; only lora_A / lora_B train.
            inject_adapter_in_model(lora, self.backbone.model)
        self.head = nn.Linear(self.facts.pooled_dim, 1)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self._warned_sampling = False

    # -- input -----------------------------------------------------------------------------
    def input_policy(self, train: bool = False) -> InputPolicy:
        size = self.facts.image_size
        return InputPolicy(
            geometry="center_crop", size=size, pad_value=0, mean=self.facts.mean, std=self.facts.std,
            patch_grid=self.facts.grid,
            description=f"{'RandomCrop' if train else 'CenterCrop'} {size} (zero-pad smaller images)",
        )

    # -- model -----------------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs in [0, 1] -> (pooled [B, P], patch tokens [B, N, D])."""
        return self.backbone(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled, _ = self.features(x)
        return self.head(pooled).squeeze(-1)

    # -- training --------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        cfg = self.config
        x, label = batch["x"], batch["label"]
        pair, has_pair = batch.get("pair"), batch.get("has_pair")
        out: dict[str, Any] = {}
        if pair is not None and has_pair is not None:
            recon = has_pair.bool() & (label == 0)
            # Reconstructed images join the training set as fakes (the paper follows DRCT), each
            # paired with its real image: the aligned pair RPR takes real patches from.
            x, pair = torch.cat([x, pair[recon]]), torch.cat([pair, x[recon]])
            has_pair = torch.cat([has_pair.bool() & (label == 1), torch.ones_like(recon[recon])])
            label = torch.cat([label, torch.ones_like(label[recon])])
            out["n_reconstructions"] = torch.tensor(float(recon.sum()))
        patch_labels = label[:, None].expand(-1, self.facts.grid ** 2).long()
        if cfg["rpr"]:
            x, patch_labels, counts = random_patch_replacement(
                x, label, pair, has_pair, grid=self.facts.grid,
                ratio=float(cfg["rpr_ratio"]), prob=float(cfg["rpr_prob"]))
            out.update({k: torch.tensor(float(v)) for k, v in counts.items()})
        pooled, tokens = self.features(x)
        logits = self.head(pooled).squeeze(-1)
        ce = F.binary_cross_entropy_with_logits(logits.float(), label.float())
        out["loss_ce"] = ce.detach()
        if not cfg["pcl"]:
            out["loss"] = ce
            return out
        emb = tokens.reshape(-1, tokens.shape[-1])
        flat_labels = patch_labels.reshape(-1)
        limit = int(cfg["pcl_max_tokens"])
        if emb.shape[0] > limit:
            if not self._warned_sampling:
                log.info("PCL: %d patch tokens in a batch exceed pcl_max_tokens=%d; using a random %d-token "
                         "subset (all pairs among it) per step", emb.shape[0], limit, limit)
                self._warned_sampling = True
            keep = torch.randperm(emb.shape[0], device=emb.device)[:limit]
            emb, flat_labels = emb[keep], flat_labels[keep]
        if cfg["pcl_normalize"]:
            emb = F.normalize(emb.float(), dim=-1)
        con = patch_contrastive_loss(emb, flat_labels, float(cfg["pcl_alpha"]), str(cfg["pcl_reduction"]))
        lam = float(cfg["pcl_lambda"])
        out["loss_con"] = con.detach()
        out["loss"] = lam * con + (1.0 - lam) * ce
        return out

    # -- checkpoints -----------------------------------------------------------------------
    def load_weights(self, path: str | Path) -> None:
        """A harness checkpoint. Adapters fit only the base they were trained on: when the
        checkpoint's JSON names that base, another base is refused instead of loaded under them."""
        saved = _saved_base(Path(path))
        if saved and self._stores_adapters_only() and not _same_base(saved, self.provenance):
            def describe(p: dict) -> str:
                source = f"file sha256 {str(p['weights_sha256'])[:12]}" if p.get("weights_sha256") else \
                    f"tag {p.get('pretrained')}"
                return f"{p.get('family')}:{p.get('name')} ({source})"

            raise HarnessError(f"checkpoint {path} holds LoRA adapters trained on another base: {describe(saved)}, "
                               f"while this detector's base is {describe(self.provenance)}; pass the same "
                               "detector.backbone / pretrained / backbone_weights as in training")
        super().load_weights(path)

    def _stores_adapters_only(self) -> bool:
        return bool(self.config["lora"]) and not self.provenance["random_init"]

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        if self._stores_adapters_only():
            state = {k: v for k, v in state.items() if "lora_" in k or k.startswith("head.")}
        return state


def _saved_base(path: Path) -> dict | None:
    """The backbone provenance the training engine wrote beside a harness checkpoint, if any."""
    saved = checkpoint_meta(path).get("backbone")
    return saved if isinstance(saved, dict) else None


def _same_base(a: dict, b: dict) -> bool:
    """Same architecture, and the same weights file, or the same hub tag when neither used a file."""
    if (a.get("family"), a.get("name")) != (b.get("family"), b.get("name")):
        return False
    if a.get("weights_sha256") and b.get("weights_sha256"):
        return a["weights_sha256"] == b["weights_sha256"]
    if not a.get("weights_sha256") and not b.get("weights_sha256"):
        return a.get("pretrained") == b.get("pretrained")
    return True  # a hub tag on one side, a file on the other: the file may hold the tag's weights


class Naive(PPL):
    """The plain fine-tuned ViT PPL is compared with (Table 4's first row: LoRA only)."""

    name = "naive"
    description = "Plain LoRA fine-tuned ViT (CLIP ViT-L/14 or DINOv2) with a linear head: PPL without RPR and PCL"
    needs_pairs = False
    defaults = {**PPL.defaults, "rpr": False, "pcl": False}


@hookimpl
def register_detectors(register):
    register(PPL)
    register(Naive)
