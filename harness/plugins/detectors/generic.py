"""Any timm or open_clip image model as a detector: ``tune`` (fine-tune it, whole or with LoRA) or ``probe`` (freeze
it and train a linear head on its pooled features, through the feature cache).

``--set detector.model=timm:swin_tiny_patch4_window7_224`` picks the model; ``resnet-50``, ``deit-s`` and ``swin-t``
are that detector preset to the three ImageNet classifiers of the PPL paper's Table 1 (rows sourced from GenImage,
Zhu et al. NeurIPS 2023, Table 3: ImageNet-pretrained timm models fine-tuned on GenImage's SDv1.4 subset).

Facts from GenImage-Dataset/GenImage @746781b (``Readme.md``): the classifiers were trained with timm's
``train.py`` (timm 0.6.12; DeiT-S and Swin-T from their official repositories), e.g.
``-b 64 --model resnet50 --sched cosine --epochs 200 --lr 0.05 --amp --remode pixel --reprob 0.6 --aug-splits 3
--aa rand-m9-mstd0.5-inc1 --resplit --jsd --dist-bn reduce --num-classes 2`` on 2 GPUs, with folders ``ai`` and
``nature`` (``ImageFolder`` order: class 0 = fake).

Evaluation follows each model's own timm/open_clip transform: shorter side to ``image_size / crop_pct``
(``interpolation``, bicubic for these models), centre crop ``image_size``, the model's mean and std.

Departures from that recipe (the harness's training engine runs what it can express):

- one logit (sigmoid = P(fake)) instead of a 2-way softmax over (fake, real);
- training augmentation is a random crop of the resized image and a horizontal flip: no RandAugment, random
  erasing, AugMix/JSD splits or mixup; no 5-epoch warm-up (``train.warmup_steps`` counts steps);
- SGD (momentum 0.9, weight decay 2e-5: timm 0.6's defaults) at lr 0.05 for a batch of 128 (64 on each of 2 GPUs),
  cosine over the epochs.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from harness import hookimpl
from harness.backbones import LORA_TARGETS, build_feature_model
from harness.checkpoints import state_digest
from harness.detector import Detector, InputPolicy
from harness.errors import HarnessError
from harness.weights import Checkpoint

_GENIMAGE = "Zhu et al., GenImage: A Million-Scale Benchmark for Detecting AI-Generated Image, NeurIPS 2023"


def _genimage_entry(name: str) -> tuple[Checkpoint, ...]:
    # GenImage's README publishes the data and the training command, no trained classifier; the ImageNet
    # initialisation comes from the hub through timm (detector.pretrained) or a local file (detector.backbone_weights).
    return (Checkpoint(name=f"{name}:genimage-sdv14", host="unpublished", paper=f"{_GENIMAGE}, Table 3",
                       trained_on="GenImage SD v1.4", notes="no trained weights published: train it with "
                       f"`harness run --detector {name} --suite genimage`"),)

MODES = ("tune", "probe")


class Backbone(Detector):
    name = "backbone"
    checkpoints = (Checkpoint(name="backbone:none", host="unpublished", paper="timm / open_clip model cards",
                              notes="a generic detector: its weights are the ones you train"),)
    description = ("Any timm or open_clip image model (detector.model) with a linear head: fine-tuned "
                   "(mode = tune, optionally LoRA) or a frozen linear probe (mode = probe, features cached)")
    reference = "timm (huggingface/pytorch-image-models), open_clip; baselines of GenImage (NeurIPS 2023) Table 3"
    defaults: dict[str, Any] = {
        "model": "timm:resnet50",
        "mode": "tune",
        "pretrained": "default",  # the hub weights; "none" = random init (recorded); or a local file:
        "backbone_weights": None,
        "model_kwargs": {},  # passed to timm.create_model (e.g. a smaller depth for a laptop profile)
        "image_size": None,  # None: the model's own input size
        "crop_pct": None,  # None: the model's own evaluation crop fraction
        "lora": False,  # mode tune: train LoRA adapters instead of the whole model
        "lora_rank": 8,
        "lora_alpha": 16,
        "lora_targets": None,  # None: the attention and MLP projections of timm transformers
        "cache_features": True,  # mode probe: frozen features computed once per image
        "feature_cache_dir": None,
    }
    settings = {
        "mode": {"enum": list(MODES)},
        "pretrained": {"type": ["string", "null"]},
        "backbone_weights": {"type": ["string", "null"]},
        "image_size": {"type": ["integer", "null"], "minimum": 16},
        "crop_pct": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1},
        "lora_rank": {"minimum": 1},
        "lora_targets": {"type": ["array", "null"], "items": {"type": "string"}},
        "feature_cache_dir": {"type": ["string", "null"]},
    }
    # GenImage's ResNet-50 command line (timm train.py), as far as the training engine expresses it.
    training: dict[str, Any] = {"epochs": 200, "batch_size": 128, "lr": 0.05, "optimizer": "sgd", "momentum": 0.9,
                                "weight_decay": 2e-5, "schedule": "cosine", "select": "acc"}
    profiles = {
        "mini": {
            "detector": {"_note": "scaled down for the mini suite: a random-init ResNet with one bottleneck per "
                         "stage on 64-px inputs (no pretrained weights offline)",
                         "pretrained": "none", "image_size": 64, "crop_pct": 1.0,
                         "model_kwargs": {"layers": [1, 1, 1, 1]}},
            "train": {"_note": "scaled down for the mini suite", "epochs": 6, "batch_size": 32, "lr": 0.05,
                      "max_steps_per_epoch": 60, "patience": 3, "warmup_steps": 20},
        }
    }

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__(config)
        cfg = self.config
        if cfg["mode"] not in MODES:
            raise HarnessError(f"{self.name}: detector.mode must be one of {', '.join(MODES)}, got {cfg['mode']!r}")
        self.backbone = build_feature_model(str(cfg["model"]), pretrained=cfg["pretrained"],
                                            weights=cfg["backbone_weights"], image_size=cfg["image_size"],
                                            model_kwargs=dict(cfg["model_kwargs"] or {}))
        self.head = nn.Linear(self.backbone.facts.dim, 1)
        if self.probing:
            self.backbone.requires_grad_(False)
            self.backbone.eval()
        elif cfg["lora"]:
            self._inject_lora()
        if not self.probing:
            self.config["cache_features"] = False  # the backbone trains: its features change every step

    @property
    def probing(self) -> bool:
        return self.config["mode"] == "probe"

    def _inject_lora(self) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        facts = self.backbone.facts
        targets = self.config["lora_targets"] or (LORA_TARGETS.get(facts.family) if self._is_transformer() else None)
        if not targets:
            raise HarnessError(f"{self.name}: LoRA on {self.config['model']} needs detector.lora_targets (module "
                               "names to adapt): the default targets are the projections of transformer models")
        lora = LoraConfig(r=int(self.config["lora_rank"]), lora_alpha=int(self.config["lora_alpha"]),
                          target_modules=list(targets))
        try:
            inject_adapter_in_model(lora, self.backbone.model)  # freezes the base weights
        except ValueError as exc:
            raise HarnessError(f"{self.name}: LoRA targets {list(targets)} do not fit {self.config['model']}: {exc}") \
                from None

    def _is_transformer(self) -> bool:
        names = {name.rsplit(".", 1)[-1] for name, _ in self.backbone.model.named_modules()}
        return {"qkv", "fc1"} <= names or self.backbone.facts.family == "open_clip"

    @property
    def provenance(self) -> dict[str, Any]:
        return self.backbone.facts.provenance

    # -- input -------------------------------------------------------------------------------
    def input_policy(self, train: bool = False) -> InputPolicy:
        facts = self.backbone.facts
        crop_pct = float(self.config["crop_pct"] or facts.crop_pct)
        size = facts.image_size
        resize_to = int(math.floor(size / crop_pct))
        return InputPolicy("resize_crop", size=size, resize_to=resize_to, mean=facts.mean, std=facts.std,
                           flip=train, interpolation=facts.interpolation,
                           description=f"shorter side to {resize_to} ({facts.interpolation}), "
                                       f"{'RandomCrop' if train else 'CenterCrop'}({size})" + (", flip" if train else ""))

    # -- model -------------------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        if self.probing:
            self.backbone.eval()  # frozen: batch norm statistics stay the pretrained ones
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(x))

    def head_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_logits(self.features(x))

    def feature_identity(self) -> dict[str, Any]:
        return {"model": self.config["model"], "sha256": state_digest(self.backbone)}

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        # A probe over pretrained weights stores its head; everything else (a tuned or random-init backbone) whole.
        if self.probing and not self.provenance.get("random_init"):
            return {f"head.{k}": v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}
        return super().checkpoint_state()

    def configure_optimizer(self, params, train_config: dict[str, Any]) -> torch.optim.Optimizer:
        lr, decay = float(train_config.get("lr", 0.05)), float(train_config.get("weight_decay", 0.0))
        if train_config.get("optimizer", "sgd") == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=float(train_config.get("momentum", 0.9)),
                                   weight_decay=decay)
        return torch.optim.AdamW(params, lr=lr, weight_decay=decay)


class ResNet50(Backbone):
    name = "resnet-50"
    checkpoints = _genimage_entry("resnet-50")
    description = "ResNet-50 (ImageNet, timm) fine-tuned with a linear head: GenImage's baseline, PPL Table 1 row"
    reference = "He et al., CVPR 2016; as trained by GenImage (Zhu et al., NeurIPS 2023) with timm"
    defaults = {**Backbone.defaults, "model": "timm:resnet50"}


class DeiTS(Backbone):
    name = "deit-s"
    checkpoints = _genimage_entry("deit-s")
    description = "DeiT-S (ImageNet, timm) fine-tuned with a linear head: GenImage's baseline, PPL Table 1 row"
    reference = "Touvron et al., ICML 2021; as trained by GenImage (Zhu et al., NeurIPS 2023)"
    defaults = {**Backbone.defaults, "model": "timm:deit_small_patch16_224"}
    profiles = {"mini": {
        "detector": {"_note": "scaled down for the mini suite: a random-init DeiT of depth 2 on 64-px inputs",
                     "pretrained": "none", "image_size": 64, "crop_pct": 1.0,
                     "model_kwargs": {"depth": 2, "patch_size": 8}},
        "train": {**Backbone.profiles["mini"]["train"], "optimizer": "adamw", "lr": 1e-3}}}


class SwinT(Backbone):
    name = "swin-t"
    checkpoints = _genimage_entry("swin-t")
    description = "Swin-T (ImageNet, timm) fine-tuned with a linear head: GenImage's baseline, PPL Table 1 row"
    reference = "Liu et al., ICCV 2021; as trained by GenImage (Zhu et al., NeurIPS 2023)"
    defaults = {**Backbone.defaults, "model": "timm:swin_tiny_patch4_window7_224"}
    profiles = {"mini": {
        "detector": {"_note": "scaled down for the mini suite: a random-init two-stage Swin on 64-px inputs",
                     "pretrained": "none", "image_size": 64, "crop_pct": 1.0,
                     "model_kwargs": {"depths": [1, 1], "num_heads": [2, 4], "embed_dim": 48, "window_size": 4}},
        "train": {**Backbone.profiles["mini"]["train"], "optimizer": "adamw", "lr": 1e-3}}}


@hookimpl
def register_detectors(register):
    for cls in (Backbone, ResNet50, DeiTS, SwinT):
        register(cls)
