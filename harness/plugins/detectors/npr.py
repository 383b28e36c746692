"""NPR: neighbouring pixel relationships (Tan et al., CVPR 2024).

Upsampling layers of generators make each 2x2 block of pixels depend on one another. NPR
exposes that trace as the residual between an image and its nearest-neighbour 2x
down-then-up reconstruction, and classifies the residual with the first two stages of a
ResNet-50 trained from scratch.

Reference: chuangchuangtan/NPR-DeepfakeDetection @73cde1c. The module's own parameters use
the official key layout (``conv1``, ``bn1``, ``layer1.*``, ``layer2.*``, ``fc1``: 146 keys,
1.45 M parameters), so the published ``NPR.pth`` loads without renaming.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from harness import hookimpl
from harness.checkpoints import check_state_fits, load_state, strip_prefix
from harness.detector import IMAGENET_MEAN, IMAGENET_STD, Detector, InputPolicy
from harness.errors import HarnessError
from harness.weights import Checkpoint, Reported


def npr_residual(x: torch.Tensor) -> torch.Tensor:
    """``x`` minus its nearest-neighbour 0.5x-down / 2x-up reconstruction, ``[B, C, H, W]``.

    For even sizes this is the official ``x - interpolate(interpolate(x, 0.5), 2)``: pixel
    (i, j) minus pixel (2*(i//2), 2*(j//2)). Upsampling back to the exact input size keeps odd
    sizes working instead of failing on a shape mismatch.
    """
    low = F.interpolate(x, scale_factor=0.5, mode="nearest", recompute_scale_factor=True)
    return x - F.interpolate(low, size=x.shape[-2:], mode="nearest")


def bottleneck_stage(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """One ResNet-50 stage (torchvision ``Bottleneck`` blocks, torchvision/official key names)."""
    from torchvision.models.resnet import Bottleneck

    out = planes * Bottleneck.expansion
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, out, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out)
        )
    layers = [Bottleneck(inplanes, planes, stride, downsample)]
    layers += [Bottleneck(out, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def load_checked_state(detector: Detector, path: str | Path, layout: str) -> None:
    """Load a plain state dict (``{'model': ...}`` unwrapped, ``module.`` stripped) strictly.

    Missing or unexpected keys and shape mismatches become one HarnessError naming them.
    """
    state = load_state(path)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise HarnessError(f"{detector.name}: {path} does not hold a state dict of tensors")
    state = strip_prefix(state, "module.")
    check_state_fits(detector.state_dict(), state, path, f"detector '{detector.name}' ({layout})")
    detector.load_state_dict(state, strict=True)


def square_resize_crop(
    images: list[Image.Image], load: int, crop: int, flip: bool, generator: torch.Generator | None
) -> list[torch.Tensor]:
    """The official training geometry: Resize((load, load)), RandomCrop(crop), random h-flip."""
    from torchvision.transforms.v2 import functional as TF

    tensors = [TF.resize(TF.to_dtype(TF.pil_to_tensor(img), torch.float32, scale=True), [load, load], antialias=True)
               for img in images]
    top = int(torch.randint(0, load - crop + 1, (1,), generator=generator))
    left = int(torch.randint(0, load - crop + 1, (1,), generator=generator))
    tensors = [t[:, top : top + crop, left : left + crop] for t in tensors]
    if flip and bool(torch.rand((), generator=generator) < 0.5):
        tensors = [t.flip(-1) for t in tensors]
    return [t.contiguous() for t in tensors]


_NPR_AIGCDETECT = {
    "progan": 99.9, "stylegan": 96.1, "biggan": 87.3, "cyclegan": 90.3, "stargan": 99.6, "gaugan": 85.4,
    "stylegan2": 98.1, "whichfaceisreal": 60.7, "ADM": 84.9, "Glide": 96.7, "Midjourney": 92.6,
    "stable_diffusion_v_1_4": 97.4, "stable_diffusion_v_1_5": 97.5, "VQDM": 90.1, "wukong": 91.7, "DALLE2": 99.6}
_NPR_KEYS = {"conv1.weight": (64, 3, 3, 3), "fc1.weight": (1, 512)}
#: Published weights (``harness weights list``); facts from the official README @73cde1c.
CHECKPOINTS = (
    Checkpoint(
        name="npr:progan-4class", host="url", filename="model_epoch_last_3090.pth",
        url="https://github.com/chuangchuangtan/NPR-DeepfakeDetection/raw/main/model_epoch_last_3090.pth",
        trained_on="ForenSynths ProGAN, 4 classes (car, cat, chair, horse)",
        paper="Tan et al., Rethinking the Up-Sampling Operations in CNN-based Generative Network for "
              "Generalizable Deepfake Detection, CVPR 2024; README AIGCDetectBenchmark table",
        reported=(Reported(source="NPR README, AIGCDetectBenchmark table with the ProGAN-4class checkpoint "
                                  "(no_resize, no_crop, batch 1, odd last row/column dropped)",
                           metric="acc", values=_NPR_AIGCDETECT, mean=91.7, protocol="npr-aigcdetect"),),
        keys=_NPR_KEYS,
        notes="The file is stored in the repository, but its blob was not in the offline mirror: sha256 and size "
              "unknown (trust on first use). The repository has no licence file.",
    ),
    Checkpoint(
        name="npr:npr-pth", host="url", filename="NPR.pth",
        url="https://github.com/chuangchuangtan/NPR-DeepfakeDetection/raw/main/NPR.pth",
        paper="Tan et al., CVPR 2024 (README 'Testing the detector' command)",
        keys=_NPR_KEYS,
        notes="The README's test command loads ./NPR.pth but does not say what it was trained on; SIDBench ships "
              "the same name (npr/NPR.pth) without a training set either. sha256 and size unknown; no licence file.",
    ),
    Checkpoint(
        name="npr:genimage-sdv14", host="manual",
        url="https://drive.google.com/drive/folders/1_mD17F94xMbJqEAsWRW1gVsZ5db6YamI",
        trained_on="GenImage SD v1.4 (sdv4), 1 epoch, seed 70, 'translate and duplicate' for small images",
        paper="NPR README, GenImage table",
        reported=(Reported(source="NPR README, GenImage table (trained on sdv4)", metric="acc", mean=90.1,
                           values={"ADM": 87.8, "BigGAN": 80.7, "glide": 93.2, "Midjourney": 91.7,
                                   "stable_diffusion_v_1_5": 94.4, "VQDM": 88.7, "wukong": 94.0}),
                  Reported(source="NPR README, GenImage table (trained on sdv4)", metric="ap", mean=96.9,
                           values={"ADM": 96.0, "BigGAN": 89.8, "glide": 99.1, "Midjourney": 97.9,
                                   "stable_diffusion_v_1_5": 99.9, "VQDM": 96.1, "wukong": 99.7})),
        keys=_NPR_KEYS,
        notes="A Google Drive folder: file name, sha256 and size unknown offline.",
    ),
)


def square_resize_policy(load: int, crop: int, train: bool) -> InputPolicy:
    """The CNNDetection-family loaders' geometry (NPR, LaDeDa): ``Resize((load, load))`` at test; in training
    the same square resize (not the shorter-side one of 'resize_crop'), ``RandomCrop(crop)`` and a random
    h-flip (:func:`square_resize_crop`). ImageNet normalisation."""
    norm = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    if train:
        return InputPolicy("custom", size=crop, resize_to=load, flip=True, **norm,
                           description=f"Resize(({load}, {load})) -> RandomCrop({crop}) -> random h-flip")
    return InputPolicy("resize", size=load, **norm, description=f"Resize(({load}, {load}))")


class NPR(Detector):
    name = "npr"
    checkpoints = CHECKPOINTS  # published weights (harness.weights.Checkpoint)
    channels_last = True
    description = (
        "NPR (CVPR 2024): nearest-neighbour upsampling residual -> ResNet-50 stem + layer1 + layer2 "
        "(from scratch) -> GAP -> fc1 Linear(512, 1); 1.45 M parameters. Test: Resize(256, 256) + ImageNet "
        "normalisation (detector.tile_crop = true: tile small images and centre-crop 224, the authors' GenImage "
        "setting). Loads the official NPR.pth key layout."
    )
    reference = "Tan et al., Rethinking the Up-Sampling Operations in CNN-based Generative Network for " \
        "Generalizable Deepfake Detection, CVPR 2024; github.com/chuangchuangtan/NPR-DeepfakeDetection @73cde1c"
    defaults: dict[str, Any] = {
        "load_size": 256,  # Resize((256, 256)) at test and before the training crop
        "crop_size": 224,  # RandomCrop in training; centre crop of the tile_crop test geometry
        "tile_crop": False,  # GenImage: tile images smaller than crop_size instead of resizing
        "native": False,  # AIGCDetectBenchmark: native size, odd last row/column dropped (batch 1)
    }
    settings = {"load_size": {"minimum": 1}, "crop_size": {"minimum": 1}}
    # README: train.py --batch_size 32 --lr 0.0002 --niter 50 --delr_freq 10 (lr *= 0.8 every 10 epochs),
    # Adam betas (0.9, 0.999), BCE-with-logits, no blur / JPEG augmentation.
    training: dict[str, Any] = {
        "epochs": 50,
        "batch_size": 32,
        "lr": 2e-4,
        "betas": [0.9, 0.999],
        "weight_decay": 0.0,
        "schedule": "step",
        "step_epochs": 10,
        "gamma": 0.8,
    }
    profiles = {
        "mini": {
            "detector": {
                "_note": "scaled down for the mini suite: 64x64 crops are used at their own size "
                "(no 256 resize, which would blur the 2x2 trace), random 56-px training crops",
                "load_size": 64,
                "crop_size": 56,
            },
            "train": {
                "_note": "scaled down for the mini suite: 6 short epochs instead of 50",
                "epochs": 6,
                "batch_size": 32,
                "max_steps_per_epoch": 60,
                "step_epochs": 4,
                "patience": 3,
            },
        }
    }

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__(config)
        load, crop = int(self.config["load_size"]), int(self.config["crop_size"])
        if crop > load:
            raise HarnessError(f"npr: crop_size {crop} is larger than load_size {load}")
        # Attribute names are the official state-dict keys.
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = bottleneck_stage(64, 64, 3, stride=1)
        self.layer2 = bottleneck_stage(256, 128, 4, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(512, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # -- input -----------------------------------------------------------------------------
    def input_policy(self, train: bool = False) -> InputPolicy:
        load, crop = int(self.config["load_size"]), int(self.config["crop_size"])
        norm = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
        if train or not (self.config["native"] or self.config["tile_crop"]):
            return square_resize_policy(load, crop, train)
        if self.config["native"]:
            return InputPolicy("native", size=load, **norm,
                               description="native size (no resize, no crop), odd last row/column dropped")
        if self.config["tile_crop"]:
            return InputPolicy("tile_crop", size=crop, **norm,
                               description=f"tile images smaller than {crop} px, CenterCrop({crop})")

    def preprocess(self, images, *, train: bool = False, generator: torch.Generator | None = None):
        if not train:
            return super().preprocess(images, train=False, generator=generator)
        return square_resize_crop(images, int(self.config["load_size"]), int(self.config["crop_size"]),
                                  True, generator)

    # -- model -----------------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised-space NPR -> the 512-d pooled feature, ``[B, 512]``."""
        h = self.conv1(npr_residual(self.normalize(x)) * (2.0 / 3.0))
        h = self.maxpool(self.relu(self.bn1(h)))
        h = self.layer2(self.layer1(h))
        return self.avgpool(h).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc1(self.features(x)).squeeze(1)

    # -- checkpoints -----------------------------------------------------------------------
    def load_weights(self, path: str | Path) -> None:
        """An official ``NPR.pth`` (plain state dict, maybe ``module.``-prefixed or wrapped in
        ``{'model': ...}``) or a harness safetensors checkpoint; any mismatch is an error."""
        load_checked_state(self, path, "official layout: 146 keys conv1.* ... fc1.*")

    # -- training --------------------------------------------------------------------------
    def configure_optimizer(self, params, train_config: dict[str, Any]) -> torch.optim.Optimizer:
        betas = tuple(float(b) for b in train_config.get("betas", (0.9, 0.999)))
        return torch.optim.Adam(params, lr=float(train_config.get("lr", 2e-4)), betas=betas,
                                weight_decay=float(train_config.get("weight_decay", 0.0)))


@hookimpl
def register_detectors(register):
    register(NPR)
