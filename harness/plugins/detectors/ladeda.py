"""LaDeDa and Tiny-LaDeDa: patch-level deepfake scores, pooled (Cavia et al., 2024).

LaDeDa ("Locally Aware Deepfake Detection Algorithm") is a ResNet-50-shaped network whose convolutions are mostly
1x1 with no padding and no stem downsampling, so that each output position sees one small image patch (9x9 for
the released ``LaDeDa9``); its input is the NPR residual of the normalised image, and the image score is the
fully connected layer applied to the spatial mean of the last feature map (the mean of the patch logits, since the
layer is linear). Tiny-LaDeDa is its 4-convolution distillation (about 1.3k parameters) on a diagonal-gradient
input. Both are in the official repository with the same key names as here.

Facts read from barcavia/RealTime-DeepfakeDetection-in-the-RealWorld @e734562 (``networks/LaDeDa.py``,
``networks/Tiny_LaDeDa.py``, ``test.py``, ``data/datasets.py``, ``options/``):

- Test geometry: ``Resize((256, 256))`` (torchvision on PIL, bilinear), no crop, ImageNet normalisation; training:
  the same resize, ``RandomCrop(224)``, random horizontal flip, no blur/JPEG augmentation by default.
- LaDeDa9: bottleneck stages [3, 4, 6, 3] with strides [2, 2, 2, 1]; ``kernel3 = [1, 1, 0, 0]`` makes the first
  block of stages 1-2 use a 3x3 middle convolution and every other one 1x1; all middle convolutions unpadded; a
  residual larger than the block output is cropped at its bottom/right edge; ``fc = Linear(2048, 1)``.
- Tiny-LaDeDa: ``right_diag`` gradient (kernel [[-2,-1,0],[-1,0,1],[0,1,2]] per channel, zero 'same' padding),
  conv 1x1 3->8, conv 3x3 8->8 (unpadded), BN, ReLU, one block (1x1 8->8, BN, ReLU, 3x3 stride 2 unpadded, BN,
  ReLU), mean, ``fc = Linear(8, 1)`` (the class builds ``Linear(32, 1)``; ``test.py`` replaces it with
  ``features_dim = 8``, the shape of the released files).
- Label: one logit, sigmoid = P(fake) (``ImageFolder`` order: ``0_real``, ``1_fake``).
- Published checkpoints: ``weights/Tiny_LaDeDa/{ForenSynth,WildRF}_Tiny_LaDeDa.pth`` in the repository itself
  (plain state dicts, 12,405 and 11,654 bytes); LaDeDa's ``{ForenSynth,WildRF}_LaDeDa.pth`` on Google Drive.

Departures from the official code:

- The official ``networks/LaDeDa.py`` at that commit does not import (the ``LaDeDa9`` helpers put a parameter
  without default after one with a default), and ``test.py`` always builds ``LaDeDa9``, so a Tiny-LaDeDa file
  loads there only after editing it; here both load as published.
- Tiny-LaDeDa is distilled in the paper (regressing LaDeDa's 9x9 patch scores); here it trains directly with BCE
  on images like LaDeDa. The official learning-rate rule (x0.9 each time validation accuracy plateaus for 15
  epochs, until 1e-6) is replaced by a constant rate with early stopping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from harness import hookimpl
from harness.detector import Detector, InputPolicy
from harness.errors import HarnessError
from harness.plugins.detectors.npr import load_checked_state, npr_residual, square_resize_crop, square_resize_policy
from harness.weights import Checkpoint, Reported

_REPO = "https://github.com/barcavia/RealTime-DeepfakeDetection-in-the-RealWorld"
_PAPER = "Cavia et al., Real-Time Deepfake Detection in the Real-World, arXiv 2406.09398 (2024)"
_LICENCE = "Software Research License (the repository's LICENSE: research use)"
_TINY_KEYS = {"conv1.weight": (8, 3, 1, 1), "conv2.weight": (8, 8, 3, 3), "layer1.0.conv2.weight": (8, 8, 3, 3),
              "fc.weight": (1, 8)}
_LADEDA_KEYS = {"conv1.weight": (64, 3, 1, 1), "layer1.0.conv2.weight": (64, 64, 3, 3),
                "layer4.2.conv3.weight": (2048, 512, 1, 1), "fc.weight": (1, 2048)}
# Size and sha256 of the two files stored in the repository (blobs read from the official commit e734562).
TINY_CHECKPOINTS = (
    Checkpoint(name="tiny-ladeda:forensynths", host="url", filename="ForenSynth_Tiny_LaDeDa.pth",
               url=f"{_REPO}/raw/main/weights/Tiny_LaDeDa/ForenSynth_Tiny_LaDeDa.pth",
               sha256="4624258c70489cbff2778153ce6fc7f5ed16170b59a541a06dc3d4c759fd68a6", size=12405,
               licence=_LICENCE, trained_on="ForenSynths ProGAN (the standard protocol), distilled from LaDeDa",
               paper=_PAPER, keys=_TINY_KEYS),
    Checkpoint(name="tiny-ladeda:wildrf", host="url", filename="WildRF_Tiny_LaDeDa.pth",
               url=f"{_REPO}/raw/main/weights/Tiny_LaDeDa/WildRF_Tiny_LaDeDa.pth",
               sha256="5e063100564d2ddfe9bf48074e351c8f2b38855552574a18a0738e7f2a764d80", size=11654,
               licence=_LICENCE, trained_on="WildRF train (Reddit), distilled from LaDeDa", paper=_PAPER,
               keys=_TINY_KEYS),
)
LADEDA_CHECKPOINTS = (
    Checkpoint(name="ladeda:wildrf", host="manual", filename="WildRF_LaDeDa.pth",
               url="https://drive.google.com/drive/folders/1KxNdnPRJJTuqxmzBPiGsg43tXzO8AN2d",
               licence=_LICENCE, trained_on="WildRF train (Reddit)", paper=_PAPER, keys=_LADEDA_KEYS,
               reported=(Reported(source="official README abstract: mAP on WildRF's test platforms", metric="ap",
                                  values={}, mean=93.7),),
               notes="A Google Drive folder (unzip into weights/LaDeDa): sha256 and size unknown offline."),
    Checkpoint(name="ladeda:forensynths", host="manual", filename="ForenSynth_LaDeDa.pth",
               url="https://drive.google.com/drive/folders/1KxNdnPRJJTuqxmzBPiGsg43tXzO8AN2d",
               licence=_LICENCE, trained_on="ForenSynths ProGAN (the standard protocol)", paper=_PAPER,
               keys=_LADEDA_KEYS, notes="A Google Drive folder: sha256 and size unknown offline."),
)

# 3x3 gradient kernels of the official ``preprocess`` options, applied per channel as cross-correlation.
GRADIENT_KERNELS = {
    "x_grad": [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]],
    "y_grad": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "left_diag": [[0, 1, 2], [-1, 0, 1], [-2, -1, 0]],
    "right_diag": [[-2, -1, 0], [-1, 0, 1], [0, 1, 2]],
}
INPUT_TRANSFORMS = ("raw", "NPR", *GRADIENT_KERNELS)


def input_transform(x: torch.Tensor, kind: str) -> torch.Tensor:
    """The official input representations of a normalised batch ``[B, 3, H, W]``."""
    if kind == "raw":
        return x
    if kind == "NPR":
        return npr_residual(x)
    kernel = torch.tensor(GRADIENT_KERNELS[kind], dtype=x.dtype, device=x.device).expand(3, 1, 3, 3)
    return F.conv2d(x, kernel, groups=3, padding="same")


def _crop_to(residual: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Cut a residual that an unpadded block made larger than its output, at the bottom and right."""
    h, w = like.shape[-2:]
    return residual[..., :h, :w]


class Bottleneck(nn.Module):
    """LaDeDa's bottleneck: 1x1, unpadded kxk (stride), 1x1 x4; official attribute names."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 kernel_size: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=kernel_size, stride=stride, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + _crop_to(residual, out))


class TinyBlock(nn.Module):
    """Tiny-LaDeDa's one block: 1x1, BN, ReLU, unpadded 3x3 with stride, BN, ReLU (no residual)."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, stride=stride, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))


def _official_init(module: nn.Module) -> None:
    # As the official constructors: conv N(0, sqrt(2 / (k*k*out))), BN weight 1 and bias 0.
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, (2.0 / n) ** 0.5)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class _PatchScoreDetector(Detector):
    """What both share: the official geometry, the input transform, mean-pooled patch features, the adapter."""

    channels_last = True
    trainable = True
    # README: train.py --batch_size 32 --lr 0.0002; Adam betas (0.9, 0.999); BCE on the logit.
    training: dict[str, Any] = {"epochs": 100, "batch_size": 32, "lr": 2e-4, "betas": [0.9, 0.999],
                                "weight_decay": 0.0, "schedule": "constant", "patience": 15, "select": "acc"}
    layout = ""

    def _check_common(self) -> None:
        load, crop = int(self.config["load_size"]), int(self.config["crop_size"])
        if crop > load:
            raise HarnessError(f"{self.name}: crop_size {crop} is larger than load_size {load}")
        if self.config["input"] not in INPUT_TRANSFORMS:
            raise HarnessError(f"{self.name}: detector.input must be one of {', '.join(INPUT_TRANSFORMS)}, "
                               f"got {self.config['input']!r}")

    def input_policy(self, train: bool = False) -> InputPolicy:
        return square_resize_policy(int(self.config["load_size"]), int(self.config["crop_size"]), train)

    def preprocess(self, images, *, train: bool = False, generator: torch.Generator | None = None):
        if not train:
            return super().preprocess(images, train=False, generator=generator)
        return square_resize_crop(images, int(self.config["load_size"]), int(self.config["crop_size"]), True,
                                  generator)

    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        """Input batch in [0, 1] -> the last feature map ``[B, C, h, w]``, one position per image patch."""
        raise NotImplementedError

    def patch_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Each patch's own score ``[B, h, w]`` (the official ``pool=False`` output)."""
        return torch.einsum("bchw,oc->bohw", self.patch_features(x), self.fc.weight)[:, 0] + self.fc.bias[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.patch_features(x)
        # Average pooling over the whole map, as the official AvgPool2d(h): its summation order, not .mean()'s
        # (the released Tiny-LaDeDa's features reach 1e4, where the two orders differ by 2e-5 relative).
        return self.fc(F.avg_pool2d(features, kernel_size=features.shape[-2:]).flatten(1)).squeeze(1)

    def load_weights(self, path: str | Path) -> None:
        """An official ``.pth`` (a plain state dict) or a harness checkpoint; any mismatch is an error."""
        load_checked_state(self, path, self.layout)

    def configure_optimizer(self, params, train_config: dict[str, Any]) -> torch.optim.Optimizer:
        betas = tuple(float(b) for b in train_config.get("betas", (0.9, 0.999)))
        return torch.optim.Adam(params, lr=float(train_config.get("lr", 2e-4)), betas=betas,
                                weight_decay=float(train_config.get("weight_decay", 0.0)))


class LaDeDa(_PatchScoreDetector):
    name = "ladeda"
    checkpoints = LADEDA_CHECKPOINTS  # published weights (harness.weights.Checkpoint)
    description = ("LaDeDa (2024): NPR residual -> unpadded, mostly 1x1 ResNet-50-shaped network, one score per "
                   "9x9 patch, mean-pooled; Resize(256, 256) + ImageNet normalisation. Loads the official .pth.")
    reference = ("Cavia et al., Real-Time Deepfake Detection in the Real-World, arXiv 2406.09398 (2024); "
                 "github.com/barcavia/RealTime-DeepfakeDetection-in-the-RealWorld @e734562")
    defaults: dict[str, Any] = {
        "load_size": 256,
        "crop_size": 224,
        "input": "NPR",
        "width": 64,  # channels of the stem and of stage 1's bottleneck (official: 64)
        "layers": [3, 4, 6, 3],
        "strides": [2, 2, 2, 1],
        "kernel3": [1, 1, 0, 0],  # LaDeDa9: 3x3 in the first block of stages 1 and 2
    }
    settings = {"load_size": {"minimum": 8}, "crop_size": {"minimum": 8}, "input": {"enum": list(INPUT_TRANSFORMS)},
                "width": {"minimum": 1}, "layers": {"items": {"type": "integer", "minimum": 1}},
                "strides": {"items": {"type": "integer", "minimum": 1}},
                "kernel3": {"items": {"type": "integer", "minimum": 0}}}
    layout = "official layout: conv1, conv2, bn1, layer1-4 (bottlenecks), fc Linear(2048, 1)"
    profiles = {
        "mini": {
            "detector": {"_note": "scaled down for the mini suite: 64-px inputs at their own size, a quarter of "
                         "the width and one block per stage", "load_size": 64, "crop_size": 56, "width": 16,
                         "layers": [1, 1, 1, 1]},
            "train": {"_note": "scaled down for the mini suite: 6 short epochs", "epochs": 6, "batch_size": 32,
                      "max_steps_per_epoch": 60, "patience": 3, "lr": 1e-3},
        }
    }

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__(config)
        self._check_common()
        width = int(self.config["width"])
        layers, strides, kernel3 = (list(self.config[k]) for k in ("layers", "strides", "kernel3"))
        if not (len(layers) == len(strides) == len(kernel3) == 4):
            raise HarnessError("ladeda: detector.layers, strides and kernel3 need 4 entries each (one per stage)")
        # Attribute names are the official state-dict keys.
        self.conv1 = nn.Conv2d(3, width, kernel_size=1, bias=False)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, padding=0, bias=False)
        self.bn1 = nn.BatchNorm2d(width, momentum=0.001)
        self.relu = nn.ReLU(inplace=True)
        inplanes = width
        for index, (blocks, stride, k3) in enumerate(zip(layers, strides, kernel3)):
            planes = width * 2 ** index
            stage, inplanes = self._stage(inplanes, planes, int(blocks), int(stride), int(k3))
            setattr(self, f"layer{index + 1}", stage)
        self.fc = nn.Linear(inplanes, 1)
        _official_init(self)
        nn.init.normal_(self.fc.weight, 0.0, 0.02)  # trainer.py: init_gain 0.02

    @staticmethod
    def _stage(inplanes: int, planes: int, blocks: int, stride: int, kernel3: int) -> tuple[nn.Sequential, int]:
        out = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or inplanes != out:
            downsample = nn.Sequential(nn.Conv2d(inplanes, out, kernel_size=1, stride=stride, bias=False),
                                       nn.BatchNorm2d(out))
        # Block i has a 3x3 middle convolution while i < kernel3 (the first block: kernel3 != 0).
        layers = [Bottleneck(inplanes, planes, stride, downsample, kernel_size=3 if kernel3 > 0 else 1)]
        layers += [Bottleneck(out, planes, kernel_size=3 if kernel3 > i else 1) for i in range(1, blocks)]
        return nn.Sequential(*layers), out

    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        h = input_transform(self.normalize(x), self.config["input"])
        h = self.relu(self.bn1(self.conv2(self.conv1(h))))
        return self.layer4(self.layer3(self.layer2(self.layer1(h))))


class TinyLaDeDa(_PatchScoreDetector):
    name = "tiny-ladeda"
    checkpoints = TINY_CHECKPOINTS  # published weights (harness.weights.Checkpoint)
    description = ("Tiny-LaDeDa (2024): diagonal-gradient input -> 4 convolutions (about 1.3k parameters), one "
                   "score per patch, mean-pooled; Resize(256, 256) + ImageNet normalisation. Loads the official .pth.")
    reference = LaDeDa.reference
    defaults: dict[str, Any] = {"load_size": 256, "crop_size": 224, "input": "right_diag", "channels": 8}
    settings = {"load_size": {"minimum": 8}, "crop_size": {"minimum": 8}, "input": {"enum": list(INPUT_TRANSFORMS)},
                "channels": {"minimum": 1}}
    layout = "official layout: conv1, conv2, bn1, layer1.0.{conv1,bn1,conv2,bn2}, fc Linear(8, 1)"
    profiles = {
        "mini": {
            "detector": {"_note": "scaled down for the mini suite: 64-px inputs at their own size",
                         "load_size": 64, "crop_size": 56},
            "train": {"_note": "scaled down for the mini suite: 8 short epochs", "epochs": 8, "batch_size": 32,
                      "max_steps_per_epoch": 60, "patience": 3, "lr": 1e-2},
        }
    }

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__(config)
        self._check_common()
        channels = int(self.config["channels"])
        self.conv1 = nn.Conv2d(3, channels, kernel_size=1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=0, bias=False)
        self.bn1 = nn.BatchNorm2d(channels, momentum=0.001)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(TinyBlock(channels, stride=2))
        self.fc = nn.Linear(channels, 1)
        _official_init(self)

    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        h = input_transform(self.normalize(x), self.config["input"])
        return self.layer1(self.relu(self.bn1(self.conv2(self.conv1(h)))))


@hookimpl
def register_detectors(register):
    register(LaDeDa)
    register(TinyLaDeDa)
