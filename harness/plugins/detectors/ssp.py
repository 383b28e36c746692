"""SSP: a single simplest patch is all you need (bcmi/SSP-AI-Generated-Image-Detection @38e9ab3).

Preprocessing draws 64 random 32x32 crops of the decoded image and keeps the one of least
texture complexity (images whose shorter side is below 32 are first resized to 256x256).
The model enlarges the ImageNet-normalised patch bilinearly to 256x256, takes the three SRM
residuals and classifies them with a ResNet-50 whose head is ``Linear(2048, 1)``.

The official labels are inverted (nature = 1, ai = 0), so its sigmoid is P(real): the
harness logit is the negated official output, ``sigmoid(-z) = 1 - sigmoid(z) = P(fake)``.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from torch.nn import functional as F

from harness import hookimpl
from harness.detector import IMAGENET_MEAN, IMAGENET_STD, Detector, InputPolicy
from harness.errors import HarnessError
from harness.plugins.detectors.patchops import (
    SRM,
    build_resnet,
    content_generator,
    crop_many,
    load_exact,
    load_imagenet_resnet,
    loaded_resnet_provenance,
    official_state,
    resnet_provenance,
    ranked_crops,
    to_uint8_tensor,
)
from harness.weights import Checkpoint


def simplest_patches(
    images: list[Image.Image], *, size: int, candidates: int, small_resize: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """SSP's patch rule on decoded images of one size: ``[3, size, size]`` uint8 patches.

    The crop is chosen on the first image and taken at the same place from the others (a
    fake and its paired real image stay aligned).
    """
    if min(images[0].size) < size:
        images = [img.resize((small_resize, small_resize), Image.BILINEAR) for img in images]
    tensors = [to_uint8_tensor(img) for img in images]
    order, tops, lefts = ranked_crops(tensors[0], size, candidates, generator)
    best = order[:1]
    return [crop_many(t, tops[best], lefts[best], size)[0] for t in tensors]


#: Published weights (``harness weights list``); facts from the official README @38e9ab3.
CHECKPOINTS = (
    Checkpoint(
        name="ssp:genimage-sdv14", host="manual", url="https://pan.baidu.com/s/1BTkl1gc7gHq4Ev457G__QQ?pwd=bcmi",
        licence="MIT", trained_on="GenImage SD v1.4 (imagenet_ai_0419_sdv4)",
        paper="Chen, Yao, Niu, A Single Simple Patch is All You Need for AI-generated Image Detection, 2024; "
              "README GenImage results",
        keys={"srm.kernel": (3, 3, 5, 5), "disc.conv1.weight": (64, 3, 7, 7), "disc.fc.weight": (1, 2048)},
        notes="Baidu Cloud (code bcmi) or Dropbox https://www.dropbox.com/scl/fo/2xdvtew4rjrrsl6cseq30/"
              "AElVHGO84W1DSmlImMg1ruM?rlkey=e1a2hnzh62wuuxrnbkfv6f90v: one model per GenImage subset (eight); "
              "file names, sha256 and sizes unknown offline. The results are a figure (figures/results.png), "
              "so no numbers are recorded.",
    ),
)


class SSP(Detector):
    name = "ssp"
    checkpoints = CHECKPOINTS  # published weights (harness.weights.Checkpoint)
    channels_last = True
    description = (
        "Single simplest patch: the least complex of 64 random 32x32 crops (4-direction absolute "
        "differences), enlarged to 256x256, 3 SRM residuals, ResNet-50 (ImageNet init), Linear(2048, 1); "
        "official labels are inverted (P(fake) = 1 - sigmoid)."
    )
    reference = "Chen et al., 'A Single Simple Patch is All You Need for AI-generated Image Detection', 2024; bcmi/SSP-AI-Generated-Image-Detection @38e9ab3"
    defaults: dict[str, Any] = {
        "patch_size": 32,
        "candidates": 64,  # (trainsize // patch_size) ** 2 = (256 // 32) ** 2, train and test alike
        "small_resize": 256,  # images with a side below patch_size are resized to this square first
        "upsample": 256,  # bilinear enlargement of the patch inside the model
        "arch": "resnet50",
        "pretrained": "imagenet",  # ImageNet init, loaded when training starts; 'none' = random init
        "backbone_weights": None,  # local torchvision ResNet state dict instead of the download
        "seed": 0,  # test-time patch draws: seeded from this and the image's bytes
    }
    settings = {
        **{key: {"minimum": 1} for key in ("patch_size", "candidates", "small_resize", "upsample")},
        "backbone_weights": {"type": ["string", "null"]},
        "seed": {"minimum": 0},
    }
    # bcmi/SSP train_val.py: Adam lr 1e-4, batch 64, 30 epochs, BCE. Its poly decay (power 0.9,
    # per epoch) is replaced by the engine's cosine decay, the closest schedule it offers.
    training: dict[str, Any] = {"epochs": 30, "batch_size": 64, "lr": 1e-4, "schedule": "cosine"}
    profiles = {
        # Scaled down for 2 CPU cores: ResNet-10 from random init, the patch kept at 32 px (not
        # enlarged to 256), 2 epochs at a higher lr.
        "mini": {
            "detector": {"arch": "resnet10", "pretrained": "none", "upsample": 32},
            "train": {"epochs": 2, "batch_size": 32, "lr": 1e-3},
        }
    }

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__(config)
        c = self.config
        if int(c["patch_size"]) < 2 or int(c["candidates"]) < 1:
            raise HarnessError("ssp: patch_size must be at least 2 and candidates at least 1")
        self.srm = SRM()
        self.disc = build_resnet(c["arch"], num_classes=1)
        # Random until weights are loaded or training starts (configure_optimizer loads the
        # ImageNet init there while the provenance still says random_init).
        self.provenance: dict[str, Any] = resnet_provenance(c["arch"])

    def input_policy(self, train: bool = False) -> InputPolicy:
        c = self.config
        return InputPolicy(
            geometry="custom",
            size=int(c["patch_size"]),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            description=(
                f"least complex of {c['candidates']} random {c['patch_size']}px crops (seeded by image content at "
                f"test); images smaller than the patch are resized to {c['small_resize']}px first"
            ),
        )

    def preprocess(self, images, *, train: bool = False, generator: torch.Generator | None = None):
        c = self.config
        if not train:
            generator = content_generator(to_uint8_tensor(images[0]), int(c["seed"]))
        patches = simplest_patches(
            images,
            size=int(c["patch_size"]),
            candidates=int(c["candidates"]),
            small_resize=int(c["small_resize"]),
            generator=generator,
        )
        return [p.float().div(255.0) for p in patches]

    def official_logit(self, x: torch.Tensor) -> torch.Tensor:
        """The official network's output ``[B]``: its sigmoid is P(real)."""
        size = int(self.config["upsample"])
        x = F.interpolate(self.normalize(x), size=(size, size), mode="bilinear", align_corners=False)
        return self.disc(self.srm(x)).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.official_logit(x)

    def load_weights(self, path) -> None:
        """Official ``state_dict`` (321 keys ``srm.kernel``, ``disc.*``) or a harness checkpoint: same keys."""
        load_exact(self, official_state(path, self.name), path, self.name)
        self.provenance = loaded_resnet_provenance(self.config["arch"], path)

    def configure_optimizer(self, params, train_config: dict[str, Any]) -> torch.optim.Optimizer:
        # The recipe starts from ImageNet weights; loading them here keeps evaluation of a
        # finished checkpoint free of any download. Weights loaded before (--weights) win.
        c = self.config
        if self.provenance["random_init"]:  # neither loaded (--weights) nor initialised yet
            self.provenance = load_imagenet_resnet(self.disc, c["arch"], c["pretrained"], c["backbone_weights"])
        return torch.optim.Adam(params, lr=float(train_config.get("lr", 1e-4)))


@hookimpl
def register_detectors(register):
    register(SSP)

