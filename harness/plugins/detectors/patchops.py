"""Building blocks shared by the patch-based detectors (SSP, PatchCraft, SEP, IPD-Net, NPR).

- :class:`SRM`: the three fixed 5x5 SRM residual filters (KB/4, KV/12, horizontal
  second order/2), each summed over the RGB channels, then Hardtanh(-3, 3). The filter
  bank is a parameter named ``kernel`` (``[3, 3, 5, 5]``) so that official SSP checkpoints
  (``srm.kernel``) load into it; it is frozen unless ``learnable=True``.
- SSP's texture complexity (:func:`patch_complexity`) and the random-crop ranking built on it
  (:func:`ranked_crops`): all candidate crops of an image are cut in one gather and scored at
  once; :func:`content_generator` seeds test-time draws from the image bytes and a seed.
- :func:`tile` (row-major patch grids) and :func:`srm30_kernels` (PatchCraft's 30 filters).
- :class:`DWT2`: a one-level 2-D wavelet transform equal to ``pywt.dwt2`` (symmetric mode).
- Torchvision-named ResNets with an optional ImageNet initialisation, their provenance, and
  checkpoint helpers that unwrap official containers and name every mismatching key.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from harness.checkpoints import check_state_fits, checkpoint_meta, sha256_file
from harness.errors import HarnessError

# The three SRM kernels of SSP / SEP / IPD-Net (Fridrich & Kodovsky's rich models), in
# the order KB, KV, horizontal second-order, each divided by its normaliser.
_KB = [[0, 0, 0, 0, 0], [0, -1, 2, -1, 0], [0, 2, -4, 2, 0], [0, -1, 2, -1, 0], [0, 0, 0, 0, 0]]
_KV = [[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2], [-1, 2, -2, 2, -1]]
_H2 = [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, -2, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]


def srm3_kernels() -> torch.Tensor:
    """The three normalised SRM kernels, ``[3, 5, 5]`` float32."""
    return torch.stack(
        [torch.tensor(_KB) / 4.0, torch.tensor(_KV) / 12.0, torch.tensor(_H2) / 2.0]
    ).float()


class SRM(nn.Module):
    """Three SRM residuals of an RGB input, each summed over RGB, clipped to [-clip, clip].

    Input ``[B, in_channels, H, W]`` -> output ``[B, 3, H, W]`` (padding 2 keeps the size).
    """

    def __init__(self, in_channels: int = 3, clip: float = 3.0, learnable: bool = False):
        super().__init__()
        kernel = srm3_kernels().unsqueeze(1).repeat(1, in_channels, 1, 1)
        self.kernel = nn.Parameter(kernel, requires_grad=learnable)
        self.clip = float(clip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x, self.kernel.to(x.dtype), padding=2)
        return F.hardtanh(out, -self.clip, self.clip)


# -- SSP patch complexity and patch selection -------------------------------------------------


def patch_complexity(patches: torch.Tensor) -> torch.Tensor:
    """SSP's texture complexity of patches ``[..., C, P, P]`` holding 8-bit values.

    Sum over all channels of the absolute differences between neighbours in four
    directions (horizontal, vertical, both diagonals), computed on int64 as the official
    code does so that no rounding changes the ranking. Returns ``[...]`` int64.
    """
    p = patches.to(torch.int64)
    horizontal = (p[..., :, :-1] - p[..., :, 1:]).abs().sum(dim=(-3, -2, -1))
    vertical = (p[..., :-1, :] - p[..., 1:, :]).abs().sum(dim=(-3, -2, -1))
    diagonal = (p[..., :-1, :-1] - p[..., 1:, 1:]).abs().sum(dim=(-3, -2, -1))
    anti_diagonal = (p[..., 1:, :-1] - p[..., :-1, 1:]).abs().sum(dim=(-3, -2, -1))
    return horizontal + vertical + diagonal + anti_diagonal


def random_origins(
    height: int, width: int, size: int, count: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` uniform top-left corners of ``size`` x ``size`` crops (torchvision RandomCrop's law)."""
    if height < size or width < size:
        raise ValueError(f"a {size}x{size} crop does not fit a {height}x{width} image")
    tops = torch.randint(0, height - size + 1, (count,), generator=generator)
    lefts = torch.randint(0, width - size + 1, (count,), generator=generator)
    return tops, lefts


def crop_many(image: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor, size: int) -> torch.Tensor:
    """Crops ``[N, C, size, size]`` of ``image`` ``[C, H, W]`` at the given corners, in one gather."""
    offsets = torch.arange(size)
    rows = (tops[:, None] + offsets)[:, :, None]  # [N, size, 1]
    cols = (lefts[:, None] + offsets)[:, None, :]  # [N, 1, size]
    return image[:, rows, cols].permute(1, 0, 2, 3)


def ranked_crops(
    image: torch.Tensor, size: int, count: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw ``count`` random crops of an 8-bit ``image`` ``[C, H, W]`` and rank them.

    Returns ``(order, tops, lefts)``: ``order`` lists the crop indices from the simplest to
    the richest (a stable sort, so ties keep the draw order as Python's ``sort`` does in the
    official code); ``tops[order[0]], lefts[order[0]]`` is the simplest patch.
    """
    tops, lefts = random_origins(image.shape[-2], image.shape[-1], size, count, generator)
    scores = patch_complexity(crop_many(image, tops, lefts, size))
    order = torch.sort(scores, stable=True).indices
    return order, tops, lefts


def tile(patches: torch.Tensor, grid: int) -> torch.Tensor:
    """``grid * grid`` patches ``[N, C, P, P]`` -> one image ``[C, grid*P, grid*P]``, row-major."""
    n, c, p, _ = patches.shape
    if n != grid * grid:
        raise ValueError(f"tiling a {grid}x{grid} grid needs {grid * grid} patches, got {n}")
    return patches.reshape(grid, grid, c, p, p).permute(2, 0, 3, 1, 4).reshape(c, grid * p, grid * p)


def content_generator(image: torch.Tensor, seed: int) -> torch.Generator:
    """A generator seeded from ``seed`` and the image's bytes.

    Test-time patch draws then depend on nothing but the image and the configuration:
    the same image gets the same patches in any order, batch or process.
    """
    digest = hashlib.blake2b(image.contiguous().numpy().tobytes(), digest_size=8, key=str(int(seed)).encode())
    return torch.Generator().manual_seed(int.from_bytes(digest.digest(), "little") & ((1 << 63) - 1))


def to_uint8_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> ``[3, H, W]`` uint8 tensor."""
    from torchvision.transforms.v2 import functional as TF

    return TF.pil_to_tensor(image.convert("RGB"))


# -- the 30 SRM high-pass filters of PatchCraft ------------------------------------------------

# Neighbours of the centre of a 3x3 window, row-major: the order of the 8 first-order filters.
_NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
# Third-order filters: the position of their -1 tap relative to the 5x5 centre walks clockwise
# from the top-left corner; the taps along that line are -1, 3, -3, 1 towards the centre.
_THIRD_ORDER_STARTS = [(-2, -2), (-2, 0), (-2, 2), (0, 2), (2, 2), (2, 0), (2, -2), (0, -2)]
_SQUARE3 = [[-1, 2, -1], [2, -4, 2], [-1, 2, -1]]


def _edge(square: torch.Tensor, side: str) -> torch.Tensor:
    """The EDGE filter of a SQUARE filter: its rows or columns beyond the centre on ``side`` set to zero."""
    k = square.clone()
    half = k.shape[0] // 2
    if side == "bottom":
        k[half + 1 :, :] = 0
    elif side == "left":
        k[:, :half] = 0
    elif side == "top":
        k[:half, :] = 0
    else:
        k[:, half + 1 :] = 0
    return k


def srm30_kernels() -> torch.Tensor:
    """The 30 normalised SRM high-pass filters, ``[30, 5, 5]`` (3x3 ones zero-padded).

    Order (as in the steganalysis ``all_normalized_hpf_list`` that PatchCraft loads): 8
    first-order, 4 second-order (/2), 8 third-order (/3), 4 EDGE3x3 (/4), 4 EDGE5x5 (/12),
    SQUARE3x3 (/4), SQUARE5x5 (/12).
    """
    filters = []
    for dy, dx in _NEIGHBOURS:
        k = torch.zeros(5, 5)
        k[2, 2], k[2 + dy, 2 + dx] = -1, 1
        filters.append(k)
    for dy, dx in _NEIGHBOURS[:4]:  # each opposite pair once: (-1,-1)/(1,1), (-1,0)/(1,0), ...
        k = torch.zeros(5, 5)
        k[2, 2], k[2 + dy, 2 + dx], k[2 - dy, 2 - dx] = -2, 1, 1
        filters.append(k / 2)
    for sy, sx in _THIRD_ORDER_STARTS:
        k = torch.zeros(5, 5)
        uy, ux = -sy // 2, -sx // 2  # unit step from the -1 tap towards the centre
        for step, value in enumerate((-1, 3, -3, 1)):
            k[2 + sy + step * uy, 2 + sx + step * ux] = value
        filters.append(k / 3)
    square3 = torch.zeros(5, 5)
    square3[1:4, 1:4] = torch.tensor(_SQUARE3, dtype=torch.float32)
    square5 = torch.tensor(_KV, dtype=torch.float32)
    sides = ("bottom", "left", "top", "right")
    for side in sides:
        k = torch.zeros(5, 5)
        k[1:4, 1:4] = _edge(square3[1:4, 1:4], side)
        filters.append(k / 4)
    filters += [_edge(square5, side) / 12 for side in sides]
    filters += [square3 / 4, square5 / 12]
    return torch.stack(filters).float()


# -- one-level 2-D discrete wavelet transform (SEP's frequency branch) -------------------------


def _symmetric_indices(n: int, pad: int, device) -> torch.Tensor:
    """Indices that extend a length-``n`` axis by ``pad`` on each side in PyWavelets'
    'symmetric' mode (the edge sample repeated: ... x1 x0 | x0 x1 ... x_{n-1} | x_{n-1} ...)."""
    i = torch.arange(-pad, n + pad, device=device) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


class DWT2(nn.Module):
    """One-level separable 2-D DWT with symmetric extension, equal to ``pywt.dwt2``.

    ``forward(x)`` on ``[B, C, H, W]`` returns ``(LL, LH, HL, HH)``, each
    ``[B, C, (H+L-1)//2, (W+L-1)//2]`` with L the filter length; LH, HL, HH are PyWavelets'
    cH (horizontal), cV (vertical) and cD (diagonal) details. Batched and on the input's
    device, so the frequency branch needs no host round trip.
    """

    def __init__(self, wavelet: str = "bior1.3"):
        super().__init__()
        import pywt

        w = pywt.Wavelet(wavelet)
        # conv2d correlates; flipping the decomposition filters turns that into pywt's convolution.
        bank = torch.tensor([w.dec_lo[::-1], w.dec_hi[::-1]], dtype=torch.float64).float()
        self.register_buffer("bank", bank, persistent=False)
        self.length = bank.shape[1]

    def _analyse(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """Low and high band along ``dim`` (2 = rows, 3 = columns) -> ``[N, 2, ...]``."""
        n, pad = x.shape[dim], self.length - 1
        x = x.index_select(dim, _symmetric_indices(n, pad, x.device))
        # Full convolution sampled at odd positions: drop the first extended sample, stride 2.
        x = x.narrow(dim, 1, x.shape[dim] - 1)
        shape = (2, 1, self.length, 1) if dim == 2 else (2, 1, 1, self.length)
        stride = (2, 1) if dim == 2 else (1, 2)
        return F.conv2d(x, self.bank.to(x.dtype).view(shape), stride=stride)

    def forward(self, x: torch.Tensor):
        b, c, h, w = x.shape
        rows = self._analyse(x.reshape(b * c, 1, h, w), 2)  # [BC, 2(rows), H', W]
        hh_, ww_ = rows.shape[-2], rows.shape[-1]
        both = self._analyse(rows.reshape(b * c * 2, 1, hh_, ww_), 3)  # [BC*2, 2(cols), H', W']
        both = both.reshape(b, c, 2, 2, both.shape[-2], both.shape[-1])
        return both[:, :, 0, 0], both[:, :, 1, 0], both[:, :, 0, 1], both[:, :, 1, 1]


# -- torchvision-named ResNets (SSP's and SEP's ``disc``) ---------------------------------------

# Torchvision's ResNets plus a one-block-per-stage ResNet-10 for the scaled-down profiles.
RESNET_LAYOUTS = {
    "resnet10": ("basic", [1, 1, 1, 1]),
    "resnet18": ("basic", [2, 2, 2, 2]),
    "resnet34": ("basic", [3, 4, 6, 3]),
    "resnet50": ("bottleneck", [3, 4, 6, 3]),
}
_IMAGENET_WEIGHTS = {"resnet18": "ResNet18_Weights", "resnet34": "ResNet34_Weights", "resnet50": "ResNet50_Weights"}
NO_PRETRAINING = ("none", "random", "", None, False)


def build_resnet(arch: str, num_classes: int) -> nn.Module:
    """A torchvision ResNet (keys ``conv1.*``, ``layer1.*`` ... ``fc.*``) with an ``num_classes`` head."""
    from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

    if arch not in RESNET_LAYOUTS:
        raise HarnessError(f"unknown ResNet '{arch}'; expected one of {sorted(RESNET_LAYOUTS)}")
    block, layers = RESNET_LAYOUTS[arch]
    return ResNet(BasicBlock if block == "basic" else Bottleneck, layers, num_classes=num_classes)


def resnet_provenance(arch: str) -> dict:
    """Provenance of a randomly initialised ResNet, in the form of ``harness.backbones``."""
    return {"family": "torchvision", "name": arch, "pretrained": None, "weights": None, "random_init": True}


def load_imagenet_resnet(resnet: nn.Module, arch: str, pretrained, weights_path) -> dict:
    """Load ImageNet weights into ``resnet`` (all but ``fc``) and say where they came from.

    ``weights_path`` (a local torchvision state dict or safetensors file) wins; otherwise
    ``pretrained`` other than 'none' downloads torchvision's IMAGENET1K_V1 weights (the
    ``resnet50-19c8e357`` file the official code loads). A failed download is an error that
    says what to do, never a silent fallback to random weights.
    """
    from harness.checkpoints import load_state, sha256_file, strip_prefix

    if weights_path:
        state = strip_prefix(load_state(weights_path), "module.")
        source = {"weights": str(weights_path), "weights_sha256": sha256_file(weights_path)}
    elif pretrained in NO_PRETRAINING:
        return resnet_provenance(arch)
    else:
        import torchvision.models as tvm

        if arch not in _IMAGENET_WEIGHTS:
            raise HarnessError(
                f"no published ImageNet weights for '{arch}': pass detector.backbone_weights=PATH "
                "or set detector.pretrained='none'"
            )
        try:
            state = getattr(tvm, _IMAGENET_WEIGHTS[arch]).IMAGENET1K_V1.get_state_dict(progress=False)
        except Exception as exc:  # offline or interrupted: the user needs the same advice either way
            raise HarnessError(
                f"could not download the ImageNet weights of {arch} ({type(exc).__name__}: {exc}). Pass a local "
                "file with detector.backbone_weights=PATH, or set detector.pretrained='none' to train from "
                "random initialisation on purpose."
            ) from None
        source = {"weights": f"torchvision {_IMAGENET_WEIGHTS[arch]}.IMAGENET1K_V1"}
    own = {k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise HarnessError(
            f"ImageNet weights do not fit {arch}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}, "
            f"wrong shapes {wrong[:5]}"
        )
    resnet.load_state_dict(state, strict=False)  # strict apart from the head, checked above
    return {**resnet_provenance(arch), "pretrained": "imagenet", "random_init": False, **source}


def loaded_resnet_provenance(arch: str, path) -> dict:
    """Provenance of a model whose ResNet came whole from the checkpoint ``path`` (official or harness).

    The keys of :func:`resnet_provenance`, with ``weights`` / ``weights_sha256`` naming the file.
    A harness checkpoint's JSON sidecar records the backbone it was trained from; its root (where
    the backbone started before any harness training: ImageNet, random, an official file) is kept
    as ``init``, the same after any number of resumes.
    """
    path = Path(path)
    prov = {**resnet_provenance(arch), "random_init": False, "weights": str(path), "weights_sha256": sha256_file(path)}
    if path.suffix == ".safetensors":
        backbone = checkpoint_meta(path).get("backbone")
        if isinstance(backbone, dict):
            prov["init"] = backbone.get("init") or backbone
    return prov


def official_state(path, detector_name: str, wrappers: tuple[str, ...] = ("state_dict", "model")) -> dict:
    """Read a checkpoint and unwrap the usual containers (``{'netC': ...}``, ``module.`` prefixes)."""
    from harness.checkpoints import load_state, strip_prefix

    state = load_state(path)
    for key in wrappers:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise HarnessError(f"{path} is not a state dict of tensors that detector '{detector_name}' can read")
    return strip_prefix(state, "module.")


def load_exact(module: nn.Module, state: dict, path, detector_name: str) -> None:
    """``load_state_dict`` that names the mismatching keys and shapes in one clear error."""
    check_state_fits(module.state_dict(), state, path, f"detector '{detector_name}' as configured")
    module.load_state_dict(state, strict=True)
