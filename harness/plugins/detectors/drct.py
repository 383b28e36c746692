"""DRCT (Chen et al., ICML 2024): diffusion-reconstruction contrastive training.

Model (official ``ContrastiveModels``): backbone -> embedding (1024-d) -> ``fc = Linear(1024, 2)``.

- ``variant = "convnext"``: timm ``convnext_base`` (ImageNet-22k weights, ``fb_in22k``) whose
  ``head.fc`` is ``Linear(1024, 1024)``; state-dict keys ``model.stem.*`` ... ``model.head.fc.*``, ``fc.*``.
- ``variant = "clip"``: the OpenAI CLIP ViT-L/14 image tower (frozen) + ``Linear(768, 1024)``;
  keys ``model.model.visual.*``, ``model.fc.*``, ``fc.*``.

Labels: class 0 = real. P(fake) = 1 - softmax(z)[:, 0] = softmax(z)[:, 1], so the harness
logit (sigmoid = P(fake)) is ``z[:, 1] - z[:, 0]``.

Training: 0.7 cross-entropy + 0.3 margin contrastive loss on the embeddings
(:func:`contrastive_loss`, positive margin 0, negative margin 1). DRCT's hard examples are
diffusion reconstructions: a real image's reconstruction is labelled fake. In the harness a
``Sample`` may carry a ``pair``, decoded into ``batch["pair"]`` with the same crop: a fake's
pair is the real image it was made from, a real's pair its reconstruction. The training step
appends every pair to the batch with the opposite label of its row, so each (real,
reconstruction) pair is contrasted inside the batch. The ``mini`` suite's fakes are
autoencoder reconstructions of its real crops, paired as fakes. On ``drct2m`` a fake's pair
is the MSCOCO image of the same stem, and a real's pair its ``DR/MSCOCO`` reconstruction
when that folder exists: both kinds are used. DRCT's reconstructions of fakes
(``DR/DRCT-2M/...``) are not read.

Input: official ``create_val_transforms(is_crop=True)`` = albumentations ``PadIfNeeded``
(value 0, centred) then ``CenterCrop``. albumentations places the crop at
``(h - size) // 2`` (floor), torchvision at ``round((h - size) / 2)``: the test policy sets
``center_rounding="floor"``, which matters when ``h - size`` is 3 mod 4. For the CLIP variant
the policy's ``patch_grid`` is the ViT token grid (``crop_size // patch size`` of the built
tower: 16 for ViT-L/14 at 224), so TDE and masking cells are the model's patches.

CLIP variant activation: OpenAI's CLIP was trained with QuickGELU. ``quick_gelu`` (default
true) builds the tower with it (open_clip's ``force_quick_gelu``) also when it is built with
``pretrained="none"`` and the OpenAI weights come from ``backbone_weights`` or an official
DRCT-CLIP checkpoint (``model.model.visual.*``). A random-init CLIP tower is not identified by
the configuration, so a harness checkpoint then stores it too (as it does the ConvNeXt).

Training augmentation (official ``create_train_transforms(is_crop=True)``): implemented are
JPEG (p 0.5, quality 30-100), horizontal flip, Gaussian blur (p 0.1; PIL radius U(0.5, 1.5)
stands in for albumentations' 3-7 px kernel), RandomRotate90 (p 0.5; albumentations may draw
a 0-degree turn, the harness always turns 90, 180 or 270), pad with 0 + RandomCrop, ToGray
(p 0.2), each drawn once for an image and its pair. Not implemented: ``RandomScale``
(+-50 %, p 0.2), ``GaussNoise`` (p 0.1), ``OneOf(RandomBrightnessContrast, FancyPCA,
HueSaturationValue)`` (p 0.5), ``OneOf(CoarseDropout, GridDropout)`` (p 0.5) and
``ShiftScaleRotate`` (shift 0.1, scale 0.2, rotate 10 degrees, p 0.5).

Batch: ``train_contrastive.py`` multiplies ``--batch_size`` by the GPU count. The README's
ConvNeXt-B run is 64 x 2 GPUs = 128 (``training["batch_size"]``); its CLIP run is 256 per GPU
x 2 GPUs = 512, while ``training`` keeps 128 for both variants (set ``train.batch_size=512``
for the CLIP recipe).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageFilter, ImageOps
from torch import nn
from torch.nn import functional as F

from harness import hookimpl
from harness.images import jpeg_roundtrip
from harness.backbones import IMAGENET_MEAN, IMAGENET_STD, load_open_clip_visual
from harness.checkpoints import check_state_fits, load_state, strip_prefix
from harness.detector import Detector, InputPolicy, apply_policy
from harness.errors import HarnessError
from harness.weights import Checkpoint

log = logging.getLogger(__name__)

# Keys of OpenAI CLIP's text tower: an official CLIP-variant checkpoint holds them under
# ``model.model.`` (the whole CLIP was saved); the detector does not use them.
_CLIP_TEXT_PREFIXES = ("transformer.", "token_embedding.", "ln_final.")
_CLIP_TEXT_KEYS = ("positional_embedding", "text_projection", "logit_scale")
_RANDOM = ("none", "random", "", None, False)


def contrastive_loss(embeddings: torch.Tensor, labels: torch.Tensor, pos_margin: float = 0.0,
                     neg_margin: float = 1.0, eps: float = 1e-12) -> torch.Tensor:
    """Margin contrastive loss over every pair of a batch (pytorch-metric-learning's
    ``ContrastiveLoss`` with its defaults, as DRCT uses it).

    Distances are Euclidean between L2-normalised embeddings. Positive pairs (same label,
    i != j) cost ``relu(d - pos_margin)``, negative pairs ``relu(neg_margin - d)``; each
    family is averaged over its non-zero terms and the two averages are added.
    """
    e = F.normalize(embeddings.float(), dim=1)
    sq = (2.0 - 2.0 * e @ e.T).clamp_min(0.0)
    dist = torch.sqrt(sq.clamp_min(eps))  # clamp: a finite gradient at zero distance
    same = labels.view(-1, 1) == labels.view(1, -1)
    not_self = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    total = embeddings.new_zeros((), dtype=torch.float32)
    for mask, terms in ((same & not_self, F.relu(dist - pos_margin)), (~same, F.relu(neg_margin - dist))):
        values = terms[mask]
        nonzero = values[values > 0]
        if nonzero.numel():
            total = total + nonzero.mean()
    return total


def drct_augment(images: list[Image.Image], config: dict[str, Any], generator: torch.Generator | None):
    """The photometric/geometric part of DRCT's training augmentation that the harness
    implements, drawn once and applied identically to an image and its pair: JPEG
    (p ``jpeg_prob``, quality 30-100), RandomRotate90 (p ``rot90_prob``), Gaussian blur
    (p ``blur_prob``), grey (p ``gray_prob``). Flip and the crop come from the input policy."""

    def draw() -> float:
        return float(torch.rand((), generator=generator))

    if draw() < float(config["jpeg_prob"]):
        low, high = map(int, config["jpeg_quality"])
        quality = int(torch.randint(low, high + 1, (1,), generator=generator))
        images = [jpeg_roundtrip(img, quality) for img in images]
    if draw() < float(config["rot90_prob"]):
        turns = int(torch.randint(1, 4, (1,), generator=generator))
        images = [img.rotate(90 * turns, expand=True) for img in images]
    if draw() < float(config["blur_prob"]):
        radius = 0.5 + draw()
        images = [img.filter(ImageFilter.GaussianBlur(radius=radius)) for img in images]
    if draw() < float(config["gray_prob"]):
        images = [ImageOps.grayscale(img).convert("RGB") for img in images]
    return images


class _ClipTower(nn.Module):
    """Holds the CLIP image tower as ``visual`` so that keys read ``model.model.visual.*``."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual


class _ClipEmbedder(nn.Module):
    """DRCT's ``CLIPModelV2``: frozen CLIP image feature -> ``fc = Linear(dim, embedding)``."""

    def __init__(self, visual: nn.Module, feature_dim: int, embedding_size: int, frozen: bool):
        super().__init__()
        self.model = _ClipTower(visual)
        self.fc = nn.Linear(feature_dim, embedding_size)
        self.frozen = frozen
        if frozen:
            self.model.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.model.visual(x))


def _timm_convnext(config: dict[str, Any], embedding_size: int) -> nn.Module:
    import timm

    name = str(config["convnext"])
    kwargs = dict(config.get("convnext_kwargs") or {})
    for key in ("depths", "dims"):
        if key in kwargs:
            kwargs[key] = tuple(int(v) for v in kwargs[key])
    weights = config.get("backbone_weights")
    tag = config.get("pretrained")
    tag = "fb_in22k" if tag == "default" else tag
    if not timm.is_model(name):
        raise HarnessError(f"unknown timm model '{name}'; DRCT's is convnext_base")
    use_hub = weights is None and tag not in _RANDOM
    if use_hub:
        try:
            return timm.create_model(f"{name}.{tag}", pretrained=True, num_classes=embedding_size, **kwargs)
        except Exception as exc:  # offline, unknown tag: the user needs the same advice
            raise HarnessError(
                f"could not load the pretrained weights of timm {name}.{tag} from the hub ({type(exc).__name__}: {exc}). "
                "Pass a local file (detector.backbone_weights=PATH) or set detector.pretrained='none' "
                "to train from random initialisation on purpose."
            ) from None
    model = timm.create_model(name, pretrained=False, num_classes=embedding_size, **kwargs)
    if weights is not None:
        from timm.models.convnext import checkpoint_filter_fn

        path = Path(weights)
        state = strip_prefix(load_state(path), "module.")
        try:
            state = checkpoint_filter_fn(state, model)  # also reads Facebook's original key names
        except (RuntimeError, ValueError, KeyError) as exc:
            raise HarnessError(f"backbone weights {path} do not fit timm {name}: {exc}") from None
        # The ImageNet classifier is replaced by DRCT's embedding layer.
        state = {k: v for k, v in state.items() if not k.startswith("head.fc.")}
        # Names and shapes first (a bare load_state_dict raises a RuntimeError on a shape).
        check_state_fits(model.state_dict(), state, path, f"timm {name}",
                         allow_missing=lambda k: k.startswith("head.fc."))
        model.load_state_dict(state, strict=False)
    else:
        log.warning("DRCT backbone timm:%s is randomly initialised (asked for explicitly)", name)
    return model


_DRCT_PAGE = "https://modelscope.cn/datasets/BokingChen/DRCT-2M/files"
_DRCT_NOTE = ("Inside pretrained.zip on ModelScope (unzip it, then import the .pth); path from the README's test "
              "commands. sha256 and size unknown offline; the reported numbers are in the README's figures "
              "(Intra.png), not in text, so none are recorded; the repository has no licence file.")
_DRCT_TRAIN = "DRCT-2M: MSCOCO train2017 real, {} fakes with their SD-inpainting reconstructions (DR={})"
#: Published weights (``harness weights list``); facts from the official README @01aa7d0.
CHECKPOINTS = (
    Checkpoint(
        name="drct:convnext-drct2m-sdv14", host="modelscope", url=_DRCT_PAGE, filename="14_acc0.9996.pth",
        config={"variant": "convnext"}, trained_on=_DRCT_TRAIN.format("SD v1.4", "SDv1"),
        paper="Chen et al., DRCT, ICML 2024; README intra-dataset DRCT-2M (ConvB, DR=SDv1)",
        keys={"model.head.fc.weight": (1024, 1024), "fc.weight": (2, 1024)},
        notes="pretrained/DRCT-2M/sdv14/convnext_base_in22k_224_drct_amp_crop/14_acc0.9996.pth. " + _DRCT_NOTE,
    ),
    Checkpoint(
        name="drct:clip-drct2m-sdv14", host="modelscope", url=_DRCT_PAGE, filename="13_acc0.9664.pth",
        config={"variant": "clip"}, trained_on=_DRCT_TRAIN.format("SD v1.4", "SDv1"),
        paper="Chen et al., DRCT, ICML 2024; README intra-dataset DRCT-2M (UnivFD/CLIP, DR=SDv1)",
        keys={"model.fc.weight": (1024, 768), "fc.weight": (2, 1024)},
        notes="pretrained/DRCT-2M/sdv14/clip-ViT-L-14_224_drct_amp_crop/13_acc0.9664.pth. " + _DRCT_NOTE,
    ),
    Checkpoint(
        name="drct:convnext-drct2m-sdv2", host="modelscope", url=_DRCT_PAGE, filename="16_acc0.9993.pth",
        config={"variant": "convnext"}, trained_on=_DRCT_TRAIN.format("SD v1.4", "SDv2"),
        paper="Chen et al., DRCT, ICML 2024; README intra-dataset DRCT-2M (ConvB, DR=SDv2)",
        keys={"model.head.fc.weight": (1024, 1024), "fc.weight": (2, 1024)},
        notes="pretrained/DRCT-2M/sdv2/convnext_base_in22k_224_drct_amp_crop/16_acc0.9993.pth. " + _DRCT_NOTE,
    ),
)


class DRCT(Detector):
    name = "drct"
    checkpoints = CHECKPOINTS  # published weights (harness.weights.Checkpoint)
    description = ("DRCT: ConvNeXt-B (or frozen CLIP ViT-L/14) -> 1024-d embedding -> 2-way head; "
                   "CE + margin contrastive training with reconstructions as hard examples")
    reference = ("Chen, Zeng, Yang, Yang. DRCT: Diffusion Reconstruction Contrastive Training towards Universal "
                 "Detection of Diffusion Generated Images. ICML 2024")
    needs_pairs = True
    needs_reconstructions = True

    defaults = {
        "variant": "convnext",  # convnext | clip
        "convnext": "convnext_base",
        # "default": fb_in22k for the ConvNeXt (DRCT's convnext_base_in22k), openai for CLIP;
        # or a timm / open_clip tag; "none" = random initialisation.
        "pretrained": "default",
        # Extra timm arguments for a scaled-down ConvNeXt (depths, dims); empty = the real one.
        "convnext_kwargs": {},
        "clip_model": "ViT-L-14",
        # Local backbone weights (timm ConvNeXt or CLIP state dict): no hub download.
        "backbone_weights": None,
        # CLIP variant: build the tower with QuickGELU, as OpenAI CLIP was trained.
        "quick_gelu": True,
        "freeze_clip": True,
        "embedding_size": 1024,
        "crop_size": 224,
        "alpha": 0.3,  # weight of the contrastive loss; CE gets 1 - alpha
        "pos_margin": 0.0,
        "neg_margin": 1.0,
        "jpeg_prob": 0.5,
        "jpeg_quality": [30, 100],
        "rot90_prob": 0.5,
        "blur_prob": 0.1,
        "gray_prob": 0.2,
    }
    settings = {
        "variant": {"enum": ["convnext", "clip"]},
        "backbone_weights": {"type": ["string", "null"]},
        "embedding_size": {"minimum": 1},
        "crop_size": {"minimum": 1},
        "alpha": {"minimum": 0, "maximum": 1},
        **{key: {"minimum": 0, "maximum": 1} for key in ("jpeg_prob", "rot90_prob", "blur_prob", "gray_prob")},
    }
    # train_contrastive.py and the README's commands (ConvB: batch 64 per GPU on 2 GPUs, AMP).
    # The official CosineAnnealingLR(T_max=5) is stepped per epoch over 17 epochs, so its lr
    # rises again after epoch 5; the engine's cosine decays once over the whole run.
    training = {
        "epochs": 17,
        "batch_size": 128,
        "lr": 1e-4,
        "weight_decay": 4e-5,
        "schedule": "cosine",
        "amp": True,
    }
    profiles = {
        "mini": {
            "detector": {
                "variant": "convnext",
                "convnext": "convnext_atto",
                "convnext_kwargs": {"depths": [1, 1, 2, 1], "dims": [16, 32, 64, 128]},
                "pretrained": "none",
                "embedding_size": 64,
                "crop_size": 64,
                # 64-px PNG crops: JPEG, blur and grey would erase the traces a few epochs can learn.
                "jpeg_prob": 0.0,
                "blur_prob": 0.0,
                "gray_prob": 0.0,
                "rot90_prob": 0.0,
            },
            "train": {"epochs": 12, "batch_size": 32, "lr": 1e-3, "patience": 3},
        }
    }

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__(config)
        cfg = self.config
        embedding = int(cfg["embedding_size"])
        variant = cfg["variant"]
        if variant == "convnext":
            self.model = _timm_convnext(cfg, embedding)
            self._mean, self._std = IMAGENET_MEAN, IMAGENET_STD
        elif variant == "clip":
            pretrained = cfg.get("pretrained")
            pretrained = "openai" if pretrained == "default" else pretrained
            visual, dim, facts = load_open_clip_visual(
                str(cfg["clip_model"]), pretrained=pretrained, weights=cfg.get("backbone_weights"),
                image_size=int(cfg["crop_size"]), quick_gelu=cfg.get("quick_gelu"),
            )
            self._clip_facts = facts
            self.model = _ClipEmbedder(visual, dim, embedding, frozen=bool(cfg["freeze_clip"]))
        else:
            raise HarnessError(f"unknown DRCT variant '{variant}': use 'convnext' or 'clip'")
        self.fc = nn.Linear(embedding, 2)

    @property
    def provenance(self) -> dict[str, Any]:
        """Where the backbone's initial weights came from (recorded by the training engine)."""
        cfg = self.config
        clip = cfg["variant"] == "clip"
        tag = cfg.get("pretrained")
        if tag == "default":
            tag = "openai" if clip else "fb_in22k"
        weights = cfg.get("backbone_weights")
        prov = {"family": "open_clip" if clip else "timm", "name": cfg["clip_model"] if clip else cfg["convnext"],
                "pretrained": None if (weights or tag in _RANDOM) else tag, "weights": weights,
                "random_init": weights is None and tag in _RANDOM}
        if clip:
            prov["quick_gelu"] = bool(self._clip_facts.provenance["quick_gelu"])
        return prov

    # -- input ---------------------------------------------------------------------------------
    def input_policy(self, train: bool = False) -> InputPolicy:
        size = int(self.config["crop_size"])
        # The CLIP tower's token grid, read from the built model (16 for ViT-L/14 at 224).
        grid = size // int(self._clip_facts.patch_size) if self.config["variant"] == "clip" else None
        # DRCT normalises with ImageNet statistics for both variants; albumentations' CenterCrop floors.
        return InputPolicy(
            geometry="center_crop", size=size, pad_value=0, mean=IMAGENET_MEAN, std=IMAGENET_STD,
            flip=train, patch_grid=grid, center_rounding="floor",
            description=("pad to crop_size (0), RandomCrop, flip, JPEG/rot90/blur/grey augmentation" if train
                         else "pad to crop_size with 0 (centred), CenterCrop (albumentations: floor)"),
        )

    def preprocess(self, images, *, train: bool = False, generator: torch.Generator | None = None):
        if train:
            images = drct_augment(list(images), self.config, generator)
        return apply_policy(self.input_policy(train), images, train=train, generator=generator)

    # -- model ---------------------------------------------------------------------------------
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding ``[B, embedding_size]`` the contrastive loss acts on."""
        return self.model(self.normalize(x))

    def class_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The official 2-way output ``[B, 2]`` (class 0 = real)."""
        return self.fc(self.embed(x))

    @staticmethod
    def fake_logit(z: torch.Tensor) -> torch.Tensor:
        # sigmoid(z1 - z0) = softmax(z)[:, 1] = 1 - softmax(z)[:, 0]
        return z[:, 1] - z[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fake_logit(self.class_logits(x))

    def training_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x, labels = batch["x"], batch["label"].long()
        if "pair" in batch and bool(batch["has_pair"].any()):
            # DRCT's hard pairs: each fake's real source joins the batch as a real, and each
            # real's reconstruction (DRCT-2M's DR/ folders) as a fake.
            has_pair = batch["has_pair"]
            x = torch.cat([x, batch["pair"][has_pair]])
            labels = torch.cat([labels, 1 - labels[has_pair]])
        emb = self.embed(x)
        z = self.fc(emb)
        alpha = float(self.config["alpha"])
        ce = F.cross_entropy(z.float(), labels)
        con = contrastive_loss(emb, labels, float(self.config["pos_margin"]), float(self.config["neg_margin"]))
        return {"loss": (1 - alpha) * ce + alpha * con, "ce": ce.detach(), "contrastive": con.detach()}

    def configure_optimizer(self, params, train_config: dict[str, Any]) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=float(train_config.get("lr", 1e-4)),
                                 weight_decay=float(train_config.get("weight_decay", 4e-5)))

    # -- checkpoints ---------------------------------------------------------------------------
    def _frozen_prefix(self) -> str | None:
        # A frozen pretrained CLIP tower is identified by the configuration; a random-init one
        # is not (another seed draws another tower), so it is stored like a trained one.
        if self.config["variant"] == "clip" and self.config["freeze_clip"] and not self.provenance["random_init"]:
            return "model.model.visual."
        return None

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        # A frozen pretrained CLIP tower is identified by the configuration; store only what is trained.
        frozen = self._frozen_prefix()
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()
                if frozen is None or not k.startswith(frozen)}

    def load_weights(self, path: str | Path) -> None:
        state = load_state(path)
        if not isinstance(state, dict):
            raise HarnessError(f"checkpoint {path} is not a state dict (got {type(state).__name__})")
        state = strip_prefix(state, "module.")
        if self.config["variant"] == "clip":
            dropped = [k for k in state if k.startswith("model.model.") and not k.startswith("model.model.visual.")
                       and (k[len("model.model."):].startswith(_CLIP_TEXT_PREFIXES)
                            or k[len("model.model."):] in _CLIP_TEXT_KEYS)]
            state = {k: v for k, v in state.items() if k not in dropped}
            if dropped:
                log.info("ignored %d CLIP text-tower keys in %s", len(dropped), path)
        own = self.state_dict()
        expected = set(own)
        frozen = self._frozen_prefix()
        if frozen and not any(k.startswith(frozen) for k in state):
            # A harness checkpoint of the frozen-CLIP variant: the tower comes from the configuration.
            expected = {k for k in expected if not k.startswith(frozen)}
        check_state_fits(own, state, path, f"DRCT variant '{self.config['variant']}' "
                         f"(embedding {self.config['embedding_size']})", allow_missing=lambda k: k not in expected)
        self.load_state_dict(state, strict=expected == set(own))


@hookimpl
def register_detectors(register):
    register(DRCT)
