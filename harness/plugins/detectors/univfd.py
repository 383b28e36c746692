"""UnivFD (Ojha et al., CVPR 2023): a linear probe on frozen CLIP image features.

Model: the image tower of an open_clip model (``ViT-L-14`` with OpenAI weights by default;
any open_clip model, or the ``tiny`` random-init ViT for tests and the mini profile), whose
``encode_image`` output (after ``ln_post`` and ``proj``: 768-d for ViT-L/14) feeds
``Linear(dim, 1)``; sigmoid of the logit = P(fake), as in the official code.

The backbone is frozen, so its features are cached (:mod:`harness.feature_cache`):
training the head and re-scoring read stored features instead of running CLIP again.

Activation: OpenAI's CLIP was trained with QuickGELU. ``quick_gelu`` (default true) builds an
open_clip tower with QuickGELU (open_clip's ``force_quick_gelu``) whatever ``pretrained`` says,
so that a tower built with ``pretrained="none"`` that receives OpenAI weights later (a local
``backbone_weights`` file, the ``model.visual.*`` of an official training checkpoint) computes
OpenAI CLIP's features. Set it to false only for an open_clip model whose weights were
trained with GELU (e.g. a LAION tag: a contradiction with a hub tag is refused). It does not
apply to timm or ``tiny`` backbones (always GELU). Provenance records the activation built.

Checkpoints accepted by :meth:`UnivFD.load_weights`:

- the official head file ``pretrained_weights/fc_weights.pth`` = ``{'weight': [1, 768], 'bias': [1]}``;
- the official training checkpoint ``{'model': state_dict, 'optimizer': ..., 'total_steps': ...}``
  (``model.*`` = the whole OpenAI CLIP, ``fc.*`` = the head): the head is loaded, and the
  ``model.visual.*`` weights replace the backbone's (the text tower is not used);
- a harness checkpoint (``head.weight``, ``head.bias``). When the backbone is randomly
  initialised (the ``mini`` profile, ``pretrained="none"`` without a weights file) the
  configuration does not identify it, so the checkpoint also holds its tensors
  (``backbone.*``) and loading restores them: the logits are the trained ones whatever seed
  built the detector. With a pretrained backbone only the head is stored.

Differences from the official recipe (train.py / options at 76a0e3e):

- With the default ``cache_features = true`` the head is trained on cached frozen features
  (:func:`harness.feature_cache.train_head`): those are the features of the *test* input
  policy (no resize to ``resize_to``, CenterCrop ``crop_size``, no flip and no blur/JPEG
  augmentation), so a training image smaller than ``crop_size`` is zero-padded instead of
  being resized to 256 first, and every epoch sees the same crop. The schedule there is the
  official one: no gain in validation accuracy for ``patience`` epochs -> lr / 10, stop
  below ``min_lr``.
- With ``cache_features = false`` training goes through the backbone with the official
  augmentations (resize, blur/JPEG, RandomCrop, flip), but in the generic engine
  (:mod:`harness.training`): its schedule (cosine by default, per step) replaces
  "patience 5 then lr / 10 down to 1e-6", ``min_lr`` is not read, and ``patience`` there
  stops training after that many epochs without a better validation score (AUC by
  default) instead of lowering the learning rate.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from harness import hookimpl
from harness.images import blur_jpeg
from harness.backbones import build_vit
from harness.checkpoints import check_state_fits, load_state, state_digest, strip_prefix
from harness.detector import Detector, InputPolicy, apply_policy
from harness.errors import HarnessError
from harness.weights import Checkpoint, Reported

log = logging.getLogger(__name__)


#: Published weights (``harness weights list``); facts from the official README, verified offline
#: where a note says so.
CHECKPOINTS = (
    Checkpoint(
        name="univfd:progan", host="url", filename="fc_weights.pth",
        url="https://github.com/WisconsinAIVision/UniversalFakeDetect/raw/main/pretrained_weights/fc_weights.pth",
        sha256="477100745713bcc957beb2b40859536859b6483fd6301b3b9293151b194c7847", size=4083, licence="MIT",
        trained_on="ForenSynths (CNNDetection) ProGAN training set, 20 LSUN classes; head only, on frozen "
                   "CLIP ViT-L/14 (OpenAI) features",
        paper="Ojha, Li, Lee, Towards Universal Fake Image Detectors that Generalize Across Generative Models, "
              "CVPR 2023, Tables 1-3",
        reported=(Reported(
            source="NPR README, AIGCDetectBenchmark table, UnivFD column (the table does not name the checkpoint)",
            metric="acc", protocol="univfd-aigcdetect",
            values={"progan": 99.81, "stylegan": 84.93, "biggan": 95.08, "cyclegan": 98.33, "stargan": 95.75,
                    "gaugan": 99.47, "stylegan2": 74.96, "whichfaceisreal": 86.90, "ADM": 66.87, "Glide": 62.46,
                    "Midjourney": 56.13, "stable_diffusion_v_1_4": 63.66, "stable_diffusion_v_1_5": 63.49,
                    "VQDM": 85.31, "wukong": 70.93, "DALLE2": 50.75},
            mean=78.43),),
        keys={"weight": (1, 768), "bias": (1,)},
        notes="sha256 and size computed from the file in the official repository (pretrained_weights/, the "
              "fixture of this project). The paper's own Table 1-3 numbers are not in the README and could not "
              "be read offline; the backbone is clip:vit-l-14-openai.",
    ),
)


class UnivFD(Detector):
    name = "univfd"
    checkpoints = CHECKPOINTS  # published weights (harness.weights.Checkpoint)
    description = "UnivFD: frozen CLIP ViT-L/14 image features + a linear head (features cached)"
    reference = "Ojha, Li, Lee. Towards Universal Fake Image Detectors that Generalize Across Generative Models. CVPR 2023"

    defaults = {
        # A harness backbone spec (harness.backbones): open_clip:<model>, timm:<model> or tiny.
        "backbone": "open_clip:ViT-L-14",
        "pretrained": "openai",
        # Local backbone weights (safetensors or a torch state dict): no hub download.
        "backbone_weights": None,
        # Build an open_clip tower with QuickGELU, as OpenAI CLIP was trained (ignored by timm / tiny).
        "quick_gelu": True,
        # Sizes of the ``tiny`` backbone (img_size comes from crop_size).
        "tiny": {"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2},
        "crop_size": 224,
        # Training only: shorter side resized to this before RandomCrop (the test policy never resizes).
        "resize_to": 256,
        "blur_prob": 0.5,
        "blur_sigma": [0.0, 3.0],
        "jpeg_prob": 0.5,
        "jpeg_quality": [30, 100],
        # Train the head and score through the frozen-feature cache (no augmentation on that path).
        "cache_features": True,
        "feature_cache_dir": None,
        "head_init_std": 0.02,
    }
    settings = {
        "backbone_weights": {"type": ["string", "null"]},
        "crop_size": {"minimum": 1},
        "resize_to": {"minimum": 1},
        "blur_prob": {"minimum": 0, "maximum": 1},
        "jpeg_prob": {"minimum": 0, "maximum": 1},
        "feature_cache_dir": {"type": ["string", "null"]},
    }
    # The published recipe (train.py, options/*.py at 76a0e3e); early stopping on validation
    # accuracy with patience 5, then lr / 10, down to 1e-6.
    training = {
        "epochs": 100,
        "batch_size": 256,
        "lr": 1e-4,
        "weight_decay": 0.0,
        "patience": 5,
        "min_lr": 1e-6,
    }
    # No pretrained CLIP can be fetched offline: the mini profile's frozen features come from a
    # random-init tiny ViT. With local CLIP weights, override it, e.g.
    # --set detector.backbone=open_clip:ViT-B-16 --set detector.backbone_weights=PATH.
    profiles = {
        "mini": {
            "detector": {
                "backbone": "tiny",
                "pretrained": "none",
                "tiny": {"patch_size": 8, "embed_dim": 96, "depth": 2, "num_heads": 3},
                "crop_size": 64,
                "resize_to": 64,
            },
            "train": {"epochs": 100, "batch_size": 64, "lr": 1e-2, "patience": 10, "min_lr": 1e-5},
        }
    }

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__(config)
        cfg = self.config
        self.backbone = build_vit(
            str(cfg["backbone"]),
            pretrained=cfg.get("pretrained"),
            weights=cfg.get("backbone_weights"),
            image_size=int(cfg["crop_size"]),
            tiny=cfg.get("tiny"),
            quick_gelu=cfg.get("quick_gelu"),
        )
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.feature_dim = int(self.backbone.facts.pooled_dim)
        self.head = nn.Linear(self.feature_dim, 1)
        nn.init.normal_(self.head.weight, 0.0, float(cfg["head_init_std"]))

    @property
    def provenance(self) -> dict[str, Any]:
        """Where the frozen backbone's weights came from (recorded by the training engine)."""
        return self.backbone.facts.provenance

    # -- input ---------------------------------------------------------------------------------
    def input_policy(self, train: bool = False) -> InputPolicy:
        facts = self.backbone.facts
        size = int(self.config["crop_size"])
        common = dict(size=size, pad_value=0, mean=facts.mean, std=facts.std, patch_grid=size // facts.patch_size)
        if train:
            return InputPolicy(
                geometry="resize_crop", resize_to=int(self.config["resize_to"]), flip=True,
                description="shorter side to resize_to, blur/JPEG augmentation, RandomCrop, flip", **common,
            )
        return InputPolicy(geometry="center_crop", description="no resize; CenterCrop (pads smaller images with 0)", **common)

    def preprocess(self, images, *, train: bool = False, generator: torch.Generator | None = None):
        if not train:
            return super().preprocess(images, train=False, generator=generator)
        # Official order: resize, then blur/JPEG, then crop and flip.
        target = int(self.config["resize_to"])
        resized = []
        for img in images:
            w, h = img.size
            scale = target / min(w, h)
            if scale != 1:
                img = img.resize((max(target, round(w * scale)), max(target, round(h * scale))), Image.BILINEAR)
            resized += blur_jpeg([img], generator, blur_prob=self.config["blur_prob"],
                                 blur_sigma=self.config["blur_sigma"], jpeg_prob=self.config["jpeg_prob"],
                                 jpeg_quality=self.config["jpeg_quality"])
        return apply_policy(self.input_policy(True), resized, train=True, generator=generator)

    # -- model ---------------------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # frozen: never in training mode
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen CLIP image feature ``[B, dim]`` of inputs in [0, 1]."""
        pooled, _ = self.backbone(self.normalize(x))
        return pooled

    def head_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_logits(self.features(x))

    def feature_identity(self) -> dict[str, Any]:
        """The frozen backbone's identity for the feature cache: a hash of its tensors."""
        return {"backbone": self.config["backbone"], "sha256": state_digest(self.backbone)}

    # -- checkpoints ---------------------------------------------------------------------------
    def _random_backbone(self) -> bool:
        return bool(self.backbone.facts.provenance.get("random_init"))

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        # Only the head is trained. A pretrained backbone is identified by the configuration;
        # a random-init one is not (another seed draws another one), so its tensors go along.
        state = {f"head.{k}": v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        if self._random_backbone():
            state.update({f"backbone.{k}": v.detach().cpu().contiguous()
                          for k, v in self.backbone.model.state_dict().items()})
        return state

    def _check_head(self, weight, bias, path) -> None:
        if not isinstance(weight, torch.Tensor) or not isinstance(bias, torch.Tensor):
            raise HarnessError(f"checkpoint {path}: the head weight and bias must be tensors")
        if tuple(weight.shape) != (1, self.feature_dim) or tuple(bias.shape) != (1,):
            raise HarnessError(
                f"checkpoint {path} holds a head of weight {list(weight.shape)} and bias {list(bias.shape)}, "
                f"but backbone '{self.config['backbone']}' gives {self.feature_dim}-d features, so the head must be "
                f"weight [1, {self.feature_dim}] and bias [1] (the official fc_weights.pth is for ViT-L-14, 768-d)"
            )

    def _load_head(self, weight, bias, path) -> None:
        self._check_head(weight, bias, path)
        with torch.no_grad():
            self.head.weight.copy_(weight.to(self.head.weight.dtype))
            self.head.bias.copy_(bias.to(self.head.bias.dtype))

    def _load_visual(self, visual: dict[str, torch.Tensor], path, what: str) -> None:
        tower = self.backbone.model
        check_state_fits(tower.state_dict(), visual, path, f"UnivFD backbone '{self.config['backbone']}' ({what})")
        tower.load_state_dict(visual, strict=True)

    def load_weights(self, path: str | Path) -> None:
        state = load_state(path)
        if not isinstance(state, dict):
            raise HarnessError(f"checkpoint {path} is not a state dict (got {type(state).__name__})")
        if isinstance(state.get("model"), dict):  # official train.py: {'model', 'optimizer', 'total_steps'}
            state = state["model"]
        state = strip_prefix(state, "module.")
        if set(state) == {"weight", "bias"}:  # official pretrained_weights/fc_weights.pth
            self._load_head(state["weight"], state["bias"], path)
        elif "fc.weight" in state and "fc.bias" in state:  # the official model's state dict
            visual = {k[len("model.visual."):]: v for k, v in state.items() if k.startswith("model.visual.")}
            self._check_head(state["fc.weight"], state["fc.bias"], path)  # before anything is replaced
            if visual:
                self._load_visual(visual, path, "the CLIP visual weights model.visual.*")
            self._load_head(state["fc.weight"], state["fc.bias"], path)
        elif "head.weight" in state and "head.bias" in state:  # harness checkpoint
            backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
            other = sorted(set(state) - {"head.weight", "head.bias"} - {f"backbone.{k}" for k in backbone})
            if other:
                raise HarnessError(f"checkpoint {path}: unexpected keys {other[:6]} in a UnivFD harness checkpoint")
            self._check_head(state["head.weight"], state["head.bias"], path)  # before anything is replaced
            if backbone:  # saved from a random-init backbone: restore it
                self._load_visual(backbone, path, "the stored random-init backbone backbone.*")
            elif self._random_backbone():
                log.warning(
                    "checkpoint %s holds only the head, but this detector's backbone is randomly initialised: "
                    "the head was trained on another backbone unless the seed and configuration are the same", path)
            self._load_head(state["head.weight"], state["head.bias"], path)
        else:
            raise HarnessError(
                f"checkpoint {path} is not a UnivFD checkpoint: expected the official head file "
                "{'weight', 'bias'}, the official training checkpoint {'model': {..., 'fc.weight', 'fc.bias'}} "
                f"or a harness checkpoint (head.weight, head.bias); found keys {sorted(state)[:6]}"
            )


@hookimpl
def register_detectors(register):
    register(UnivFD)
