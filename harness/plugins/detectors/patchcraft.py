"""PatchCraft / RPTC: rich and poor texture contrast.

Preprocessing draws 3 * 64 = 192 random 32x32 crops, ranks them by SSP's texture complexity
and tiles the 64 poorest (ascending) and the 64 richest (descending) row-major into two
256x256 images; the input is ``[B, 2, 3, S, S]`` with index 0 = poor, values in [0, 1] and
no normalisation. The model filters every colour channel with 30 fixed SRM high-pass filters
(90 maps), maps them to 32 channels (conv + BN + Hardtanh(-5, 5), separately for the two
images), subtracts rich from poor, and classifies the contrast with four conv groups, global
average pooling and ``fc2 = Linear(32, 1)`` whose sigmoid is P(fake).

Training (AIGCDetectBenchmark's recipe) blurs / JPEG-compresses the decoded image with
probability 0.1 each before the crops are drawn; test images are left as they are.

Official checkpoints (AIGCDetectBenchmark / sidbench RPTC) are ``{'netC': state_dict}``,
sometimes with DataParallel's ``module.`` prefix; the module names here are theirs.

Parity (tests/golden/patchcraft.json, against sidbench's port): equal within 1e-5, except where
crops tie exactly in 8-bit complexity (flat areas): the port ranks by a float sum on [0, 1]
tensors, so rounding orders its ties; here ties keep the draw order.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from harness import hookimpl
from harness.detector import Detector, InputPolicy
from harness.errors import HarnessError
from harness.images import blur_jpeg
from harness.plugins.detectors.patchops import (
    content_generator,
    crop_many,
    load_exact,
    official_state,
    ranked_crops,
    srm30_kernels,
    tile,
    to_uint8_tensor,
)
from harness.weights import Checkpoint, Reported


def poor_rich_images(
    images: list[Image.Image], *, grid: int, size: int, factor: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """Rich/poor tiling of decoded images of one size -> ``[2, 3, grid*size, grid*size]`` uint8 each.

    ``factor * grid**2`` crops are drawn; the ranking is made on the first image and the same
    crops are taken from the others. Poor: the ``grid**2`` simplest, simplest first; rich: the
    ``grid**2`` richest, richest first (the official tiling order).
    """
    if min(images[0].size) < size:
        images = [img.resize((size, size), Image.BILINEAR) for img in images]
    tensors = [to_uint8_tensor(img) for img in images]
    n = grid * grid
    order, tops, lefts = ranked_crops(tensors[0], size, factor * n, generator)
    poor, rich = order[:n], order.flip(0)[:n]
    out = []
    for t in tensors:
        out.append(
            torch.stack([tile(crop_many(t, tops[poor], lefts[poor], size), grid),
                         tile(crop_many(t, tops[rich], lefts[rich], size), grid)])
        )
    return out


class HPF(nn.Module):
    """30 fixed SRM high-pass filters on one channel; the parameter is ``hpf.weight`` [30, 1, 5, 5]."""

    def __init__(self):
        super().__init__()
        self.hpf = nn.Conv2d(1, 30, kernel_size=5, padding=2, bias=False)
        self.hpf.weight = nn.Parameter(srm30_kernels().unsqueeze(1), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hpf(x)


def _conv_bn_relu(n: int, pool: bool) -> nn.Sequential:
    """``n`` x (conv 3x3 32->32, BN, ReLU), then optionally AvgPool(3, stride 2, pad 1)."""
    layers: list[nn.Module] = []
    for _ in range(n):
        layers += [nn.Conv2d(32, 32, kernel_size=3, padding=1), nn.BatchNorm2d(32), nn.ReLU()]
    if pool:
        layers.append(nn.AvgPool2d(kernel_size=3, padding=1, stride=2))
    return nn.Sequential(*layers)


_RPTC_KEYS = {"group1.hpf.weight": (30, 1, 5, 5), "fc2.weight": (1, 32)}
#: Published weights (``harness weights list``): the ports that publish RPTC weights.
CHECKPOINTS = (
    Checkpoint(
        name="patchcraft:sidbench-progan", host="huggingface", repo="dkarageo/sidbench", filename="rptc/RPTC.pth",
        trained_on="ProGAN (SIDBench README)",
        paper="Zhong et al., PatchCraft: Exploring Texture Patch for Efficient AI-generated Image Detection",
        reported=(Reported(
            source="NPR README, AIGCDetectBenchmark table, RPTCon column (as AIGCDetectBenchmark reports it)",
            metric="acc", mean=89.31, protocol="patchcraft-aigcdetect",
            values={"progan": 100.00, "stylegan": 92.77, "biggan": 95.80, "cyclegan": 70.17, "stargan": 99.97,
                    "gaugan": 71.58, "stylegan2": 89.55, "whichfaceisreal": 85.80, "ADM": 82.17, "Glide": 83.79,
                    "Midjourney": 90.12, "stable_diffusion_v_1_4": 95.38, "stable_diffusion_v_1_5": 95.30,
                    "VQDM": 88.91, "wukong": 91.07, "DALLE2": 96.60}),),
        keys=_RPTC_KEYS,
        notes="mever-team/sidbench README: weights/rptc/RPTC.pth after `hf download dkarageo/sidbench --local-dir "
              "weights`, so the file name in the Hugging Face repo is inferred as rptc/RPTC.pth (not verified "
              "offline); sha256, size and licence unknown.",
    ),
    Checkpoint(
        name="patchcraft:aigcdetect", host="modelscope",
        url="https://modelscope.cn/datasets/aemilia/AIGCDetectionBenchMark/files",
        trained_on="ForenSynths ProGAN (AIGCDetectBenchmark training set)",
        paper="Zhong et al., PatchCraft (official test code and checkpoints of AIGCDetectBenchmark)",
        keys=_RPTC_KEYS,
        notes="Ekko-zn/AIGCDetectBenchmark README: test code, test set and checkpoints on ModelScope and "
              "BaiduNetdisk (https://pan.baidu.com/s/1dZz7suD-X5h54wCC9SyGBA?pwd=l30u); file name, sha256 and "
              "size unknown offline.",
    ),
)


class PatchCraft(Detector):
    name = "patchcraft"
    checkpoints = CHECKPOINTS  # published weights (harness.weights.Checkpoint)
    channels_last = True
    description = (
        "PatchCraft / RPTC: 192 random 32px crops ranked by texture complexity, the 64 poorest and 64 richest "
        "tiled into two 256px images; 30 SRM high-pass filters per channel, conv-BN-Hardtanh, poor - rich "
        "contrast, 4 conv groups, GAP, Linear(32, 1). Not normalised."
    )
    reference = "Zhong et al., 'PatchCraft: Exploring Texture Patch for Efficient AI-generated Image Detection', 2023; RPTC weights of AIGCDetectBenchmark"
    defaults: dict[str, Any] = {
        "grid": 8,  # 8 x 8 patches per image (2 ** patch_num with patch_num = 3)
        "patch_size": 32,  # loadSize 256 / grid
        "factor": 3,  # crops drawn = factor * grid ** 2 = 192
        "seed": 0,  # test-time crop draws: seeded from this and the image's bytes
        # Training only, on the decoded image before the crops are drawn (AIGCDetectBenchmark
        # options.py defaults: blur_prob 0.1, blur_sig 0-3, jpg_prob 0.1, jpg_qual 30-100).
        "augment": {"blur_prob": 0.1, "blur_sigma": [0.0, 3.0], "jpeg_prob": 0.1, "jpeg_quality": [30, 100]},
    }
    settings = {"grid": {"minimum": 1}, "patch_size": {"minimum": 2}, "factor": {"minimum": 2}}
    # AIGCDetectBenchmark's training defaults (options.py, train.py), where the RPTC weights come
    # from (the paper's own recipe is not published): Adam lr 1e-4 (beta1 0.9), batch 64, BCE,
    # blur / JPEG p 0.1 (``defaults.augment``), niter 1000 epochs with early stopping on val
    # accuracy after 5 epochs without improvement. There each stop divides the lr by 10 and
    # training goes on until it falls below 1e-6; the engine has no such schedule, so here the
    # lr stays constant and training ends at the first stop.
    training: dict[str, Any] = {
        "epochs": 1000, "batch_size": 64, "lr": 1e-4, "schedule": "constant", "patience": 5, "select": "acc",
    }
    profiles = {
        # Scaled down for 2 CPU cores: a 4 x 4 grid of 16 px patches (64 px inputs), same network and
        # augmentation; 2 fixed epochs at a higher lr with cosine decay, the best by val AUC (no early stop).
        "mini": {
            "detector": {"grid": 4, "patch_size": 16},
            "train": {"epochs": 2, "batch_size": 32, "lr": 1e-3, "schedule": "cosine", "select": "auc",
                      "patience": None},
        }
    }

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__(config)
        c = self.config
        if int(c["grid"]) < 1 or int(c["patch_size"]) < 2 or int(c["factor"]) < 2:
            raise HarnessError("patchcraft: grid >= 1, patch_size >= 2 and factor >= 2 are required")
        self.group1 = HPF()
        self.group1_b = nn.Sequential(nn.Conv2d(90, 32, kernel_size=3, padding=1), nn.BatchNorm2d(32), nn.Hardtanh(-5, 5))
        self.group2 = _conv_bn_relu(4, pool=True)
        self.group3 = _conv_bn_relu(2, pool=True)
        self.group4 = _conv_bn_relu(2, pool=True)
        self.group5 = _conv_bn_relu(2, pool=False)
        self.fc2 = nn.Linear(32, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        # The official initWeights: Kaiming (fan_in, ReLU) for trainable convs, N(0, 0.01) heads.
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.weight.requires_grad:
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=0.01)
                nn.init.zeros_(m.bias)

    @property
    def image_size(self) -> int:
        return int(self.config["grid"]) * int(self.config["patch_size"])

    def input_policy(self, train: bool = False) -> InputPolicy:
        c = self.config
        n = int(c["grid"]) ** 2
        return InputPolicy(
            geometry="custom",
            size=self.image_size,
            patch_grid=int(c["grid"]),
            description=(
                f"[2, 3, S, S]: the {n} poorest and {n} richest of {int(c['factor']) * n} random {c['patch_size']}px "
                "crops tiled row-major (index 0 = poor); seeded by image content at test; no normalisation"
                + ("; blur / JPEG augmentation first (detector.augment)" if train else "")
            ),
        )

    def preprocess(self, images, *, train: bool = False, generator: torch.Generator | None = None):
        c = self.config
        if train:
            aug = c["augment"]
            images = blur_jpeg(list(images), generator, blur_prob=aug["blur_prob"], blur_sigma=aug["blur_sigma"],
                               jpeg_prob=aug["jpeg_prob"], jpeg_quality=aug["jpeg_quality"])
        else:
            generator = content_generator(to_uint8_tensor(images[0]), int(c["seed"]))
        pairs = poor_rich_images(
            images, grid=int(c["grid"]), size=int(c["patch_size"]), factor=int(c["factor"]), generator=generator
        )
        return [p.float().div(255.0) for p in pairs]

    def _texture(self, x: torch.Tensor) -> torch.Tensor:
        """One view ``[B, 3, S, S]`` -> 32 maps: each channel through the 30 filters (channel-major)."""
        b, c, h, w = x.shape
        maps = self.group1(x.reshape(b * c, 1, h, w)).reshape(b, c * 30, h, w)
        return self.group1_b(maps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != 2:
            raise HarnessError(f"patchcraft expects inputs [B, 2, 3, S, S], got {tuple(x.shape)}")
        # Poor and rich go through the stem separately, as officially (separate BN batch statistics).
        contrast = self._texture(x[:, 0]) - self._texture(x[:, 1])
        out = self.group5(self.group4(self.group3(self.group2(contrast))))
        return self.fc2(F.adaptive_avg_pool2d(out, 1).flatten(1)).squeeze(1)

    def load_weights(self, path) -> None:
        """``{'netC': state_dict}`` (optionally ``module.``-prefixed), a bare state dict, or a harness checkpoint."""
        load_exact(self, official_state(path, self.name, wrappers=("netC", "state_dict", "model")), path, self.name)

    def configure_optimizer(self, params, train_config: dict[str, Any]) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=float(train_config.get("lr", 1e-4)), betas=(0.9, 0.999))


@hookimpl
def register_detectors(register):
    register(PatchCraft)
