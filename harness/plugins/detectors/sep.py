"""SEP: a single exposed patch (1112348/SEP-for-AIGCDetection @ed4febe, inference-only release).

Two views of each image, packed into one input ``[B, 2, 3, S, S]`` (values in [0, 1]):

- index 0, the exposed patch: the least complex of 256 random 32x32 crops at test (64 in
  training; SSP's complexity rule), stored enlarged by nearest-neighbour replication to
  S x S so both views stack; the model takes every (S/32)-th pixel back, exactly the patch;
- index 1, the frequency view: CenterCrop S = 256 (zero-padded when smaller; a random crop in
  training), not normalised.

Model (module names as the official ``SEP`` so its ``state_dict`` loads as is):
patch branch: ImageNet-normalised patch -> SRM (``srm``) -> SRM-guided bidirectional spatial
attention (``spalAtten``, 3 channels, 3 heads) -> bilinear upsample to 512x512;
frequency branch: one-level DWT (bior1.3, symmetric) tiled [[LL, LH], [HL, HH]] and resized (antialiased) to
S x S -> 4 x (conv-BN-ReLU-avgpool) (``dwt``) -> 16-group dilated enhancer (``dwt_piex``) ->
channel weights w; fusion: att * (1 + 0.2 w) + upsampled patch -> ResNet-50 (``disc``) with
``fc = Linear(2048, 2)``. Class 0 = ai, class 1 = nature: P(fake) = softmax[:, 0], so the
harness logit is z0 - z1.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from harness import hookimpl
from harness.detector import IMAGENET_MEAN, IMAGENET_STD, Detector, InputPolicy, apply_policy
from harness.errors import HarnessError
from harness.plugins.detectors.patchops import (
    DWT2,
    SRM,
    build_resnet,
    content_generator,
    load_exact,
    load_imagenet_resnet,
    loaded_resnet_provenance,
    official_state,
    resnet_provenance,
    to_uint8_tensor,
)
from harness.plugins.detectors.ssp import simplest_patches
from harness.weights import Checkpoint, Reported


class GuidedBidirectionalAttention(nn.Module):
    """SRM-guided bidirectional cross-spatial attention (the paper's GBCSA).

    Rows and columns are summarised by average pooling; the row summary (queries, modulated by
    the SRM residual's row summary) attends over the column summary and vice versa; the two
    results, broadcast back to H x W, give a per-pixel gain: ``out = x + proj(...) * x``.
    """

    def __init__(self, channels: int = 3, num_heads: int = 3):
        super().__init__()
        if channels % num_heads:
            raise HarnessError("sep: attention channels must be divisible by the number of heads")
        self.num_heads = num_heads
        self.head_dim = channels // num_heads

        def conv():
            return nn.Conv2d(channels, channels, kernel_size=1, bias=False)

        self.q_conv_h, self.k_conv_w, self.v_conv_w = conv(), conv(), conv()
        self.q_conv_w, self.k_conv_h, self.v_conv_h = conv(), conv(), conv()
        self.q_conv_h_srm = nn.Sequential(conv(), nn.ReLU(), conv(), nn.ReLU())
        self.q_conv_w_srm = nn.Sequential(conv(), nn.ReLU(), conv(), nn.ReLU())
        self.projection = nn.Sequential(
            nn.Conv2d(2 * channels, channels, kernel_size=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU()
        )

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """``[B, C, 1, L]`` or ``[B, C, L, 1]`` -> ``[B, heads, L, head_dim]``."""
        b = t.shape[0]
        return t.reshape(b, self.num_heads, self.head_dim, -1).transpose(-1, -2)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.head_dim), dim=-1)
        out = weights @ v  # [B, heads, Lq, head_dim]
        return out.transpose(-1, -2).reshape(q.shape[0], -1, q.shape[2])  # [B, C, Lq]

    def forward(self, x: torch.Tensor, srm: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        rows_mean = x.mean(dim=2, keepdim=True)  # [B, C, 1, W]: one value per column
        cols_mean = x.mean(dim=3, keepdim=True)  # [B, C, H, 1]: one value per row
        # Along W: column queries, guided by the SRM residual, attend over the rows.
        q_w = self._heads(self.q_conv_h(rows_mean) * (1 + self.q_conv_h_srm(srm.mean(dim=2, keepdim=True))))
        along_w = self._attend(q_w, self._heads(self.k_conv_w(cols_mean)), self._heads(self.v_conv_w(cols_mean)))
        # Along H: row queries attend over the columns.
        q_h = self._heads(self.q_conv_w(cols_mean) * (1 + self.q_conv_w_srm(srm.mean(dim=3, keepdim=True))))
        along_h = self._attend(q_h, self._heads(self.k_conv_h(rows_mean)), self._heads(self.v_conv_h(rows_mean)))
        fused = torch.cat(
            [along_w.view(b, c, 1, w).expand(b, c, h, w), along_h.view(b, c, h, 1).expand(b, c, h, w)], dim=1
        )
        return x + self.projection(fused) * x


class GroupedDilatedEnhancer(nn.Module):
    """Frequency features ``[B, F, h, w]`` split into groups, each encoded by dilated convs to
    ``patch_channels`` sigmoid weights; the group mean re-weights the patch channels.

    Each group keeps its own ``nn.Sequential`` (the official parameter names); the forward pass
    runs all groups at once as grouped convolutions over the concatenated weights, which is
    the same arithmetic in 3 convolutions instead of 3 per group.
    """

    def __init__(self, in_channels: int = 64, patch_channels: int = 3, groups: int = 16, lambda_val: float = 0.2):
        super().__init__()
        if in_channels % groups:
            raise HarnessError("sep: frequency channels must be divisible by the enhancer groups")
        self.lambda_val = float(lambda_val)
        self.group_in = in_channels // groups
        self.group_encoders = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(self.group_in, 32, kernel_size=3, padding=2, dilation=2),
                nn.ReLU(),
                nn.Conv2d(32, 32, kernel_size=3, padding=4, dilation=4),
                nn.ReLU(),
                nn.Conv2d(32, patch_channels, kernel_size=1),
                nn.AdaptiveAvgPool2d(1),
                nn.Sigmoid(),
            )
            for _ in range(groups)
        )

    def channel_weights(self, freq: torch.Tensor) -> torch.Tensor:
        """``[B, patch_channels, 1, 1]``: the mean over groups of each group's sigmoid weights."""
        groups = len(self.group_encoders)

        def fused(index: int):
            convs = [enc[index] for enc in self.group_encoders]
            return torch.cat([c.weight for c in convs]), torch.cat([c.bias for c in convs]), convs[0]

        h = freq
        for index in (0, 2):
            weight, bias, conv = fused(index)
            h = F.relu(F.conv2d(h, weight, bias, padding=conv.padding, dilation=conv.dilation, groups=groups))
        weight, bias, _ = fused(4)
        h = torch.sigmoid(F.conv2d(F.adaptive_avg_pool2d(h, 1), weight, bias, groups=groups))  # pool and 1x1 conv commute
        return h.view(h.shape[0], groups, -1, 1, 1).mean(dim=1)

    def forward(self, patch: torch.Tensor, freq: torch.Tensor) -> torch.Tensor:
        return patch * (1 + self.lambda_val * self.channel_weights(freq))


def _frequency_stem() -> nn.Sequential:
    layers: list[nn.Module] = []
    for cin, cout in ((3, 32), (32, 64), (64, 64), (64, 64)):
        layers += [
            nn.Conv2d(cin, cout, kernel_size=3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.AvgPool2d(kernel_size=3, padding=1, stride=2),
        ]
    return nn.Sequential(*layers)


#: Published weights (``harness weights list``); facts from the official README @ed4febe.
CHECKPOINTS = (
    Checkpoint(
        name="sep:genimage-sdv14", host="manual", url="https://pan.baidu.com/s/1OAHbreVuTulwXJpu4B3dcg?pwd=xqtq",
        trained_on="GenImage SD v1.4 (the README's GenImage table)",
        paper="All Patches Are Not Equal: Focusing on a Single Exposed Patch for AI-Generated Image Detection; "
              "README GenImage table, 'Ours' row",
        reported=(Reported(source="SEP README, GenImage cross-generator table, 'Ours' row", metric="acc",
                           mean=97.05, protocol="sep-genimage",
                           values={"Midjourney": 86.08, "stable_diffusion_v_1_4": 99.33,
                                   "stable_diffusion_v_1_5": 99.24, "ADM": 95.89, "glide": 99.03,
                                   "wukong": 99.11, "VQDM": 99.06, "BigGAN": 98.68}),),
        keys={"srm.kernel": (3, 3, 5, 5), "disc.fc.weight": (2, 2048)},
        notes="Baidu Netdisk, extraction code xqtq. The README does not say that the released file is the one "
              "behind the table, nor its name; sha256 and size unknown; the repository has no licence file.",
    ),
)


class SEP(Detector):
    name = "sep"
    checkpoints = CHECKPOINTS  # published weights (harness.weights.Checkpoint)
    channels_last = True
    spatial_input = False  # two views at different scales: a plane mask hits unrelated regions of both
    description = (
        "Single exposed patch: least complex of 256 random 32px crops (64 in training) -> SRM-guided "
        "bidirectional spatial attention -> 512px; DWT (bior1.3) frequency branch of a 256px centre crop -> "
        "channel weights; fused into a ResNet-50 (ImageNet init) with a 2-way head, P(fake) = softmax[:, 0]. "
        "Input [B, 2, 3, S, S]: 0 = patch (nearest-enlarged), 1 = crop."
    )
    reference = "SEP: 'All Patches Are Not Equal: Focusing on a Single Exposed Patch for AI-Generated Image Detection'; 1112348/SEP-for-AIGCDetection @ed4febe"
    defaults: dict[str, Any] = {
        "patch_size": 32,
        "candidates": 256,  # test (select_patch_val)
        "train_candidates": 64,  # training (select_patch: (256 // 32) ** 2)
        "small_resize": 256,  # for the patch only: images with a side below patch_size are resized first
        "freq_size": 256,  # the frequency view's crop S (a multiple of patch_size)
        "upsample": 512,
        "heads": 3,
        "enhancer_groups": 16,
        "lambda": 0.2,
        "wavelet": "bior1.3",
        "arch": "resnet50",
        "pretrained": "imagenet",  # ImageNet init, loaded when training starts; 'none' = random init
        "backbone_weights": None,
        "seed": 0,
    }
    settings = {
        **{key: {"minimum": 1} for key in ("patch_size", "candidates", "train_candidates", "small_resize",
                                            "freq_size", "upsample", "heads", "enhancer_groups")},
        "backbone_weights": {"type": ["string", "null"]},
        "seed": {"minimum": 0},
    }
    # train.py of the release: AdamW lr 1e-3, weight decay 0, batch 32, 50 epochs, cross-entropy,
    # one warm-up epoch then a decay whose code (create_lr_scheduler) is not in the release: the
    # engine's cosine decay stands in (set train.warmup_steps to one epoch's steps for the warm-up).
    training: dict[str, Any] = {"epochs": 50, "batch_size": 32, "lr": 1e-3, "weight_decay": 0.0, "schedule": "cosine"}
    profiles = {
        # Scaled down for 2 CPU cores: 16 px patch upsampled to 32, 64 px frequency crop, ResNet-10
        # from random init, fewer candidates, 2 epochs.
        "mini": {
            "detector": {
                "patch_size": 16,
                "freq_size": 64,
                "upsample": 32,
                "candidates": 64,
                "train_candidates": 16,
                "arch": "resnet10",
                "pretrained": "none",
            },
            "train": {"epochs": 2, "batch_size": 32, "lr": 1e-3},
        }
    }

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__(config)
        c = self.config
        patch, freq = int(c["patch_size"]), int(c["freq_size"])
        if patch < 2 or freq % patch:
            raise HarnessError(f"sep: freq_size ({freq}) must be a multiple of patch_size ({patch})")
        self.srm = SRM()
        self.spalAtten = GuidedBidirectionalAttention(channels=3, num_heads=int(c["heads"]))
        self.dwt = _frequency_stem()
        self.dwt_piex = GroupedDilatedEnhancer(64, 3, groups=int(c["enhancer_groups"]), lambda_val=float(c["lambda"]))
        self.disc = build_resnet(c["arch"], num_classes=2)
        self.wavelet = DWT2(c["wavelet"])
        # Random until weights are loaded or training starts (configure_optimizer loads the
        # ImageNet init there while the provenance still says random_init).
        self.provenance: dict[str, Any] = resnet_provenance(c["arch"])

    def input_policy(self, train: bool = False) -> InputPolicy:
        c = self.config
        return InputPolicy(
            geometry="custom",
            size=int(c["freq_size"]),
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            description=(
                f"[2, 3, S, S]: 0 = least complex of {c['train_candidates'] if train else c['candidates']} random "
                f"{c['patch_size']}px crops, nearest-enlarged to S (ImageNet-normalised in the model); "
                f"1 = {'random' if train else 'centre'} crop S = {c['freq_size']} zero-padded, not normalised"
            ),
        )

    def preprocess(self, images, *, train: bool = False, generator: torch.Generator | None = None):
        c = self.config
        patch, size = int(c["patch_size"]), int(c["freq_size"])
        crop_policy = InputPolicy(geometry="center_crop", size=size)
        if train:
            crops = apply_policy(crop_policy, images, train=True, generator=generator)
        else:
            generator = content_generator(to_uint8_tensor(images[0]), int(c["seed"]))
            crops = apply_policy(crop_policy, images)
        patches = simplest_patches(
            images,
            size=patch,
            candidates=int(c["train_candidates"] if train else c["candidates"]),
            small_resize=int(c["small_resize"]),
            generator=generator,
        )
        factor = size // patch
        enlarged = [p.float().div(255.0).repeat_interleave(factor, 1).repeat_interleave(factor, 2) for p in patches]
        return [torch.stack([e, crop]) for e, crop in zip(enlarged, crops)]

    def frequency_image(self, crop: torch.Tensor) -> torch.Tensor:
        """The DWT sub-bands tiled [[LL, LH], [HL, HH]], resized back to the crop's size.

        The tiling is a little larger than the crop (bior1.3 bands of a 256 crop are 130 px), and
        the official ``transforms.Resize`` of a tensor antialiases when it shrinks (torchvision's
        default since 0.17), so this does too.
        """
        ll, lh, hl, hh = self.wavelet(crop)
        tiled = torch.cat([torch.cat([ll, lh], dim=-1), torch.cat([hl, hh], dim=-1)], dim=-2)
        return F.interpolate(tiled, size=crop.shape[-2:], mode="bilinear", align_corners=False, antialias=True)

    def class_scores(self, x: torch.Tensor) -> torch.Tensor:
        """The official two-way output ``[B, 2]`` (class 0 = ai, class 1 = nature)."""
        if x.dim() != 5 or x.shape[1] != 2:
            raise HarnessError(f"sep expects inputs [B, 2, 3, S, S], got {tuple(x.shape)}")
        factor = int(self.config["freq_size"]) // int(self.config["patch_size"])
        patch = self.normalize(x[:, 0, :, ::factor, ::factor])
        size = int(self.config["upsample"])
        freq = self.dwt(self.frequency_image(x[:, 1]))
        patch_big = F.interpolate(patch, size=(size, size), mode="bilinear", align_corners=False)
        attended = self.spalAtten(patch, self.srm(patch))
        attended = F.interpolate(attended, size=(size, size), mode="bilinear", align_corners=False)
        return self.disc(self.dwt_piex(attended, freq) + patch_big)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.class_scores(x)
        return z[:, 0] - z[:, 1]  # sigmoid(z0 - z1) = softmax(z)[:, 0] = P(fake)

    def training_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        # The official cross-entropy over (ai, nature): the harness label 1 = fake is class 0.
        z = self.class_scores(batch["x"]).float()
        return {"loss": F.cross_entropy(z, 1 - batch["label"].long())}

    def load_weights(self, path) -> None:
        """The official ``state_dict`` (``torch.save(model.state_dict())``) or a harness checkpoint."""
        load_exact(self, official_state(path, self.name), path, self.name)
        self.provenance = loaded_resnet_provenance(self.config["arch"], path)

    def configure_optimizer(self, params, train_config: dict[str, Any]) -> torch.optim.Optimizer:
        c = self.config
        # ImageNet init for the ResNet at the start of training only (evaluation needs no download),
        # and only when no weights were loaded before (--weights): those win.
        if self.provenance["random_init"]:  # neither loaded (--weights) nor initialised yet
            self.provenance = load_imagenet_resnet(self.disc, c["arch"], c["pretrained"], c["backbone_weights"])
        return torch.optim.AdamW(
            params, lr=float(train_config.get("lr", 1e-3)), weight_decay=float(train_config.get("weight_decay", 0.0))
        )


@hookimpl
def register_detectors(register):
    register(SEP)
