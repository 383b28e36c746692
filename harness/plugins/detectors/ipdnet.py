"""IPD-Net: inter-patch dependencies (Chen et al.; paper in shared/papers/ipdnet-inter-patch-dependencies.txt).

No public code: built from the paper. SRM residuals (3 kernels) feed a ResNet-50 trained from
scratch and truncated after layer2, layer3 or layer4, giving a C x H x W map whose H*W cells
are the "patches". Two 1x1 convolutions reduce it to C/2 channels each; their dot products
give the (HW) x (HW) dependency matrix (no softmax), viewed as HW maps of H x W, averaged to
one score per patch and classified by one or two linear layers.

Cost: the matrix has (HW)^2 entries (n^4 for an n-fold larger side), see
``benchmarks/speed/bench_ipdnet.py``. Average pooling right after the product makes it
algebraically equal to (mean_i q_i) . k_j, which costs O(HW); ``dependency = "factored"``
computes that form (same numbers up to rounding), ``"matrix"`` (default) the paper's.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from typing import Any

import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from harness import hookimpl
from harness.detector import IMAGENET_MEAN, IMAGENET_STD, Detector, InputPolicy
from harness.errors import HarnessError
from harness.plugins.detectors.npr import bottleneck_stage, load_checked_state
from harness.plugins.detectors.patchops import SRM
from harness.weights import Checkpoint

#: Output channels of ResNet-50 after each stage.
STAGE_CHANNELS = {1: 256, 2: 512, 3: 1024, 4: 2048}


def feature_side(size: int, layer: int) -> int:
    """Side of the ResNet-50 feature map after ``layer`` for a ``size`` input: the stem
    (stride-2 conv, stride-2 max-pool) and each of layer2..layer ``layer`` halve it, rounding up."""
    side = size
    for _ in range(layer + 1):
        side = (side + 1) // 2
    return side


def resnet50_trunk(layer: int) -> nn.Sequential:
    """ResNet-50 (torchvision layout and initialisation, random weights) up to ``layer``.

    Only the kept stages are built: truncating a full ``resnet50()`` would initialise
    25 M parameters to throw most of them away.
    """
    parts: OrderedDict[str, nn.Module] = OrderedDict(
        conv1=nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False),
        bn1=nn.BatchNorm2d(64),
        relu=nn.ReLU(inplace=True),
        maxpool=nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )
    inplanes = 64
    for index, (planes, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)][:layer], start=1):
        parts[f"layer{index}"] = bottleneck_stage(inplanes, planes, blocks, stride=1 if index == 1 else 2)
        inplanes = planes * 4
    trunk = nn.Sequential(parts)
    for m in trunk.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return trunk


def _reflect_index(n: int, pad: int) -> torch.Tensor:
    """Source index of each of ``n + 2 * pad`` positions in the mirror extension of ``n`` pixels."""
    if n == 1:
        return torch.zeros(1 + 2 * pad, dtype=torch.long)
    period = 2 * (n - 1)
    m = torch.arange(-pad, n + pad).remainder(period)
    return torch.where(m < n, m, period - m)


def reflect_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflect-pad ``[C, H, W]`` by ``pad`` pixels on all four sides, any ``pad``.

    torch's reflect mode stops at side-1 pixels; indexing the periodic mirror extension
    (numpy's ``mode="reflect"``) works for any pad, also on images smaller than it.
    """
    h, w = x.shape[-2:]
    return x[..., _reflect_index(h, pad), :][..., _reflect_index(w, pad)]


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``[C, H, W]`` with scipy's kernel extent (truncate = 4 sigma)."""
    from torchvision.transforms.v2 import functional as TF

    radius = min(int(4.0 * sigma + 0.5), min(x.shape[-2:]) - 1)
    if sigma <= 0 or radius < 1:
        return x
    return TF.gaussian_blur(x, kernel_size=[2 * radius + 1] * 2, sigma=[sigma, sigma])


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Round-trip ``[3, H, W]`` in [0, 1] through an 8-bit JPEG of the given quality (PIL)."""
    from torchvision.transforms.v2 import functional as TF

    arr = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as img:
        return TF.to_dtype(TF.pil_to_tensor(img.convert("RGB")), torch.float32, scale=True)


def _uniform(lo: float, hi: float, generator: torch.Generator | None) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=generator))


class DependencyHead(nn.Module):
    """Feature map ``[B, C, H, W]`` -> pooled inter-patch dependencies ``[B, H*W]`` -> logit ``[B]``."""

    def __init__(self, channels: int, num_patches: int, num_linear: int, hidden: int, mode: str):
        super().__init__()
        if mode not in ("matrix", "factored"):
            raise HarnessError(f"ipdnet: dependency must be 'matrix' or 'factored', got {mode!r}")
        if num_linear not in (1, 2):
            raise HarnessError(f"ipdnet: num_linear must be 1 or 2, got {num_linear}")
        self.mode = mode
        self.num_patches = num_patches
        # The two 1x1 convolutions f of eq. (1), each to C/2 channels (names after non-local nets).
        self.theta = nn.Conv2d(channels, channels // 2, kernel_size=1)
        self.phi = nn.Conv2d(channels, channels // 2, kernel_size=1)
        if num_linear == 1:
            self.classifier = nn.Sequential(nn.Linear(num_patches, 1))
        else:
            # The paper does not say what sits between its two layers; a ReLU keeps them from
            # collapsing into one linear map (unverified).
            self.classifier = nn.Sequential(nn.Linear(num_patches, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def dependency_matrix(self, feat: torch.Tensor) -> torch.Tensor:
        """``D[b, i, j] = theta(e_i) . phi(e_j)`` over all pairs of cells, ``[B, HW, HW]``, no softmax."""
        q = self.theta(feat).flatten(2)  # [B, C/2, HW]
        k = self.phi(feat).flatten(2)
        return torch.bmm(q.transpose(1, 2), k)

    def pooled(self, feat: torch.Tensor) -> torch.Tensor:
        """The vector of HW average dependency scores the classifier reads, ``[B, HW]``."""
        b, _, h, w = feat.shape
        if h * w != self.num_patches:
            raise HarnessError(
                f"ipdnet: feature map {h}x{w} has {h * w} cells but the classifier was built for "
                f"{self.num_patches}; the input must be the configured detector.size"
            )
        if self.mode == "factored":
            q = self.theta(feat).flatten(2).mean(-1)  # [B, C/2]
            return torch.einsum("bc,bcj->bj", q, self.phi(feat).flatten(2))
        # Paper: transpose the product, view it as HW maps of H x W (map j holds theta(e_i) . phi(e_j)
        # over all i), average-pool each map to one value.
        dep = self.dependency_matrix(feat).transpose(1, 2).reshape(b, h * w, h, w)
        return F.adaptive_avg_pool2d(dep, 1).flatten(1)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pooled(feat)).squeeze(1)


#: IPD-Net has no public code or weights.
CHECKPOINTS = (
    Checkpoint(name="ipdnet:paper", host="unpublished",
               paper="Chen, Lo, Liao, Huang, IPD-Net: Detecting AI-Generated Images via Inter-Patch Dependencies",
               notes="no public code or weights: train it with `harness train --detector ipdnet`"),
)


class IPDNet(Detector):
    name = "ipdnet"
    checkpoints = CHECKPOINTS  # published weights (harness.weights.Checkpoint)
    channels_last = True
    description = (
        "IPD-Net: SRM (3 kernels) -> ResNet-50 from scratch truncated after layer 2/3/4 -> two 1x1 convs to C/2 -> "
        "(HW)x(HW) dependency matrix by dot products (no softmax) -> average pool per patch -> 1 or 2 linear layers. "
        "Input: reflect-pad 224, crop 224, resize 256. Cost grows as (HW)^2 in the feature-map cells "
        "(n^4 for an n-times larger side): benchmarks/speed/bench_ipdnet.py measures it."
    )
    reference = "Chen, Lo, Liao, Huang, IPD-Net: Detecting AI-Generated Images via Inter-Patch Dependencies " \
        "(Jinan University); no public code"
    defaults: dict[str, Any] = {
        "layer": 4,  # truncation after layer2/3/4; layer4 is the paper's headline variant (Table III)
        "num_linear": None,  # None: the paper's choice, 2 for layer2 and 1 for layer3/4
        "hidden": 512,  # width between two linear layers (not given in the paper; unverified)
        "pad": 224,  # reflect padding on all sides
        "crop": 224,  # random crop in training, centre crop at test
        "size": 256,  # resize after the crop; fixes H*W and so the classifier's input
        "dependency": "matrix",  # "matrix" (paper, (HW)^2) or "factored" (same result, O(HW))
        "augment": {"blur_prob": 0.1, "blur_sigma": [0.0, 3.0], "jpeg_prob": 0.1, "jpeg_quality": [30, 100]},
    }
    settings = {
        "layer": {"enum": [2, 3, 4]},
        "num_linear": {"enum": [None, 1, 2]},
        "hidden": {"minimum": 1},
        "pad": {"minimum": 0},
        "crop": {"minimum": 1},
        "size": {"minimum": 1},
        "dependency": {"enum": ["matrix", "factored"]},
    }
    # Paper IV-B: Adam lr 1e-4, batch 32, BCE; blur / JPEG / flip live in ``defaults.augment``
    # because this detector's preprocess applies them. The paper gives no epoch count and no
    # schedule: a constant lr and 20 epochs with early stopping (CNNSpot's practice) are ours.
    training: dict[str, Any] = {"epochs": 20, "batch_size": 32, "lr": 1e-4, "betas": [0.9, 0.999],
                                "weight_decay": 0.0, "schedule": "constant", "patience": 5}
    profiles = {
        "mini": {
            "detector": {
                "_note": "scaled down for the mini suite: truncation after layer2 (8x8 cells), 64-px crop of the "
                "64x64 images with 32-px reflect padding, no resize, 64 hidden units",
                "layer": 2,
                "pad": 32,
                "crop": 64,
                "size": 64,
                "hidden": 64,
            },
            "train": {
                "_note": "scaled down for the mini suite: 5 short epochs",
                "epochs": 5,
                "batch_size": 32,
                "max_steps_per_epoch": 40,
                "patience": 3,
            },
        }
    }

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__(config)
        cfg = self.config
        layer = int(cfg["layer"])
        if layer not in (2, 3, 4):
            raise HarnessError(f"ipdnet: layer must be 2, 3 or 4, got {layer}")
        num_linear = cfg["num_linear"] if cfg["num_linear"] is not None else (2 if layer == 2 else 1)
        self.srm = SRM()
        self.backbone = resnet50_trunk(layer)
        side = feature_side(int(cfg["size"]), layer)
        self.head = DependencyHead(STAGE_CHANNELS[layer], side * side, int(num_linear), int(cfg["hidden"]),
                                   str(cfg["dependency"]))

    # -- input -----------------------------------------------------------------------------
    def input_policy(self, train: bool = False) -> InputPolicy:
        cfg = self.config
        how = "random" if train else "centre"
        # The paper names no normalisation; ImageNet mean/std is the CNNSpot convention it follows (unverified).
        return InputPolicy(
            "custom", size=int(cfg["size"]), mean=IMAGENET_MEAN, std=IMAGENET_STD, flip=train,
            description=f"reflect-pad {cfg['pad']} px on all sides, {how} crop {cfg['crop']}, resize to {cfg['size']}"
            + (", blur / JPEG augmentation (detector.augment), random h-flip" if train else ""),
        )

    def preprocess(self, images, *, train: bool = False, generator: torch.Generator | None = None):
        """Pad, crop, resize; in training also blur, JPEG and flip. One draw shared by all images."""
        from torchvision.transforms.v2 import functional as TF

        cfg = self.config
        pad, crop, size = int(cfg["pad"]), int(cfg["crop"]), int(cfg["size"])
        tensors = [TF.to_dtype(TF.pil_to_tensor(img), torch.float32, scale=True) for img in images]
        h, w = tensors[0].shape[-2:]
        # Pad more where a tiny image would still be smaller than the crop.
        pad = max(pad, (crop - min(h, w) + 1) // 2)
        tensors = [reflect_pad(t, pad) for t in tensors]
        ph, pw = h + 2 * pad, w + 2 * pad
        if train:
            top = int(torch.randint(0, ph - crop + 1, (1,), generator=generator))
            left = int(torch.randint(0, pw - crop + 1, (1,), generator=generator))
        else:
            top, left = (ph - crop) // 2, (pw - crop) // 2
        tensors = [t[:, top : top + crop, left : left + crop] for t in tensors]
        if crop != size:
            tensors = [TF.resize(t, [size, size], antialias=True) for t in tensors]
        if train:
            aug = cfg["augment"]
            if float(torch.rand((), generator=generator)) < float(aug["blur_prob"]):
                sigma = _uniform(*aug["blur_sigma"], generator)
                tensors = [gaussian_blur(t, sigma) for t in tensors]
            if float(torch.rand((), generator=generator)) < float(aug["jpeg_prob"]):
                lo, hi = (int(q) for q in aug["jpeg_quality"])
                quality = int(torch.randint(lo, hi + 1, (1,), generator=generator))
                tensors = [jpeg(t, quality) for t in tensors]
            if bool(torch.rand((), generator=generator) < 0.5):
                tensors = [t.flip(-1) for t in tensors]
        return [t.contiguous() for t in tensors]

    # -- model -----------------------------------------------------------------------------
    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Input in [0, 1] -> truncated-ResNet feature map ``[B, C, H, W]``."""
        return self.backbone(self.srm(self.normalize(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.feature_map(x))

    # -- checkpoints -----------------------------------------------------------------------
    def load_weights(self, path) -> None:
        """A harness checkpoint or a raw state dict of this module (``module.`` stripped,
        ``{'model': ...}`` unwrapped); there is no official release to adapt."""
        cfg = self.config
        load_checked_state(self, path, f"layer={cfg['layer']}, size={cfg['size']}, num_linear={cfg['num_linear']}")

    # -- training --------------------------------------------------------------------------
    def configure_optimizer(self, params, train_config: dict[str, Any]) -> torch.optim.Optimizer:
        betas = tuple(float(b) for b in train_config.get("betas", (0.9, 0.999)))
        return torch.optim.Adam(params, lr=float(train_config.get("lr", 1e-4)), betas=betas,
                                weight_decay=float(train_config.get("weight_decay", 0.0)))


@hookimpl
def register_detectors(register):
    register(IPDNet)
