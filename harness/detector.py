"""The detector contract.

A detector is one module: the model (an ``nn.Module``), its input policy, its checkpoint
adapter and, when it can be trained, its training step. The harness owns everything else
(loops, metrics, caching, provenance, distribution).

Conventions every detector follows:

- ``preprocess`` turns decoded RGB images into input tensors with values in [0, 1],
  *before* normalisation. Analyses that mask or corrupt inputs work in that space.
- ``forward`` normalises internally and returns one raw logit per image, shape ``[B]``,
  whose sigmoid is P(fake). A model whose official head says class 1 = real converts here.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from harness.config import merge
from harness.errors import HarnessError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

GEOMETRIES = ("center_crop", "resize", "resize_crop", "tile_crop", "native", "custom")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@dataclass(frozen=True)
class InputPolicy:
    """How a decoded image becomes the detector's input; recorded with every score.

    geometry:
      - ``center_crop``: pad with ``pad_value`` up to ``size`` where smaller, then crop ``size``
        (centre at test, random in training);
      - ``resize``: resize to ``size`` x ``size``;
      - ``resize_crop``: resize the shorter side to ``resize_to``, then crop ``size``;
      - ``tile_crop``: tile an image smaller than ``size`` until it covers it, then crop;
      - ``native``: the image at its own size, an odd last row / column dropped (NPR's
        AIGCDetectBenchmark rule); images differ in size, so score with ``eval.batch_size = 1``;
      - ``custom``: the detector's own ``preprocess`` (described in ``description``).

    Resizes run on the decoded PIL image (torchvision's ``Resize`` on PIL), as the official
    loaders do, with ``interpolation`` (``bilinear``, torchvision's default; ``bicubic`` for
    timm's and open_clip's evaluation transforms). ``center_rounding`` places the test-time centre crop: ``round``
    (torchvision's ``CenterCrop``: ``round((h - size) / 2)``) or ``floor``
    (albumentations' ``CenterCrop``: ``(h - size) // 2``); they differ when ``h - size`` is
    3 mod 4, which shifts the 2x2 pixel grid that upsampling traces live on.
    """

    geometry: str
    size: int
    resize_to: int | None = None
    pad_value: int = 0
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    patch_grid: int | None = None
    flip: bool = False
    description: str = ""
    center_rounding: str = "round"
    interpolation: str = "bilinear"

    def __post_init__(self):
        if self.geometry not in GEOMETRIES:
            raise ValueError(f"unknown geometry {self.geometry!r}; expected one of {GEOMETRIES}")
        if self.center_rounding not in ("round", "floor"):
            raise ValueError(f"center_rounding must be 'round' or 'floor', got {self.center_rounding!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if self.geometry == "resize_crop" and not self.resize_to:
            raise ValueError("geometry 'resize_crop' needs resize_to")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_array(img: Image.Image) -> np.ndarray:
    """A decoded image as an ``[H, W, C]`` uint8 array (a view of Pillow's buffer where it can be)."""
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected an 8-bit image, got mode {img.mode}")
    return arr[:, :, None] if arr.ndim == 2 else arr


def _tile_to(arr: np.ndarray, size: int) -> np.ndarray:
    h, w = arr.shape[:2]
    reps_h, reps_w = -(-size // h), -(-size // w)
    return np.tile(arr, (reps_h, reps_w, 1)) if (reps_h > 1 or reps_w > 1) else arr


def _crop_origin(h: int, w: int, size: int, train: bool, generator: torch.Generator | None,
                 rounding: str = "round"):
    if not train:
        if rounding == "floor":
            return (h - size) // 2, (w - size) // 2
        return int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    top = int(torch.randint(0, h - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - size + 1, (1,), generator=generator))
    return top, left


def _unit_array(arr: np.ndarray) -> np.ndarray:
    """``[H, W, C]`` uint8 -> ``[C, H, W]`` float32 in [0, 1], bit for bit what torchvision's
    ``to_dtype(pil_to_tensor(img), float32, scale=True)`` gives."""
    out = np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)
    out *= np.float32(1 / 255)  # torchvision multiplies by the float32 reciprocal
    return out


def apply_policy(
    policy: InputPolicy,
    images: list[Image.Image],
    *,
    train: bool = False,
    generator: torch.Generator | None = None,
) -> list[torch.Tensor]:
    """Apply one policy's geometry to images of the same size, with one shared random draw.

    Sharing the draw keeps an image and its paired real image aligned patch for patch.
    Returns float tensors ``[3, size, size]`` in [0, 1], not normalised. Tiling and cropping
    work on the 8-bit pixels and only the crop is converted to float, in numpy (no small torch
    ops that would wake the thread pool the forward needs); padding is the border of the crop.
    """
    size = policy.size
    if policy.geometry in ("resize", "resize_crop"):
        from torchvision.transforms.v2 import functional as TF  # torchvision takes seconds to import

        mode = TF.InterpolationMode(policy.interpolation)
        if policy.geometry == "resize":
            images = [TF.resize(img, [size, size], interpolation=mode) for img in images]
        else:
            images = [TF.resize(img, [policy.resize_to], interpolation=mode) for img in images]
    arrays = [_as_array(img) for img in images]
    if policy.geometry == "native":  # the whole image, the odd last row / column dropped
        h, w = arrays[0].shape[:2]
        return [torch.from_numpy(_unit_array(a[: h - h % 2, : w - w % 2])) for a in arrays]
    if policy.geometry == "resize":
        outs = [_unit_array(a) for a in arrays]
    else:
        if policy.geometry == "tile_crop":
            arrays = [_tile_to(a, size) for a in arrays]
        h, w = arrays[0].shape[:2]
        # The crop is placed on the image padded up to ``size``; only the pixels it takes are converted.
        pad_top, pad_left = max(0, size - h) // 2, max(0, size - w) // 2
        top, left = _crop_origin(max(h, size), max(w, size), size, train, generator, policy.center_rounding)
        rows = slice(max(top, pad_top) - pad_top, min(top + size, pad_top + h) - pad_top)
        cols = slice(max(left, pad_left) - pad_left, min(left + size, pad_left + w) - pad_left)
        at_row, at_col = max(pad_top - top, 0), max(pad_left - left, 0)
        outs = []
        for a in arrays:
            inside = _unit_array(a[rows, cols])
            if inside.shape[1:] != (size, size):
                out = np.full((a.shape[2], size, size), policy.pad_value / 255.0, dtype=np.float32)
                out[:, at_row : at_row + inside.shape[1], at_col : at_col + inside.shape[2]] = inside
                inside = out
            outs.append(inside)
    if train and policy.flip and bool(torch.rand((), generator=generator) < 0.5):
        outs = [np.ascontiguousarray(a[:, :, ::-1]) for a in outs]
    return [torch.from_numpy(a) for a in outs]


_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def fold_batchnorm(module: nn.Module) -> int:
    """Fold each eval-mode batch norm that directly follows a convolution into it, in place.

    The convolution is replaced by torch's ``fuse_conv_bn_eval`` of the two and the batch norm
    by ``nn.Identity``: exact in eval mode up to float rounding. Which batch norm follows which
    convolution is read from a ``torch.fx`` trace of the module's forward, and a pair is folded
    only when the convolution's output feeds that batch norm alone and each is called once; a
    module whose forward cannot be traced (Python that looks at tensor values or shapes) is
    searched child by child. Returns how many batch norms were folded.
    """
    if not any(isinstance(m, _BATCH_NORMS) for m in module.modules()):
        return 0
    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception:  # noqa: BLE001 - any tracing failure only means: look one level down
        return sum(fold_batchnorm(child) for child in module.children())
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    folded = 0
    for node in graph.nodes:
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        source = node.args[0]
        if not isinstance(source, torch.fx.Node) or source.op != "call_module":
            continue
        bn, conv = module.get_submodule(node.target), module.get_submodule(source.target)
        if not (isinstance(bn, _BATCH_NORMS) and isinstance(conv, _CONVS)) or bn.training or conv.training:
            continue
        if bn.running_mean is None or len(source.users) != 1 or calls[node.target] != 1 or calls[source.target] != 1:
            continue
        _replace_submodule(module, source.target, fuse_conv_bn_eval(conv, bn))
        _replace_submodule(module, node.target, nn.Identity())
        folded += 1
    return folded


def _replace_submodule(root: nn.Module, target: str, new: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, new)


def _config_hint(path: Path, config: dict[str, Any]) -> str:
    """The detector settings a harness checkpoint was saved with that differ from ``config``."""
    import json

    from harness.checkpoints import checkpoint_meta

    saved = checkpoint_meta(path).get("config")
    if not isinstance(saved, dict):
        return ""
    differ = [f"detector.{k}={json.dumps(v)}" for k, v in sorted(saved.items()) if config.get(k) != v]
    return f"; it was saved with {', '.join(differ[:6])}" if differ else ""


class Detector(nn.Module):
    """Base class of every detector plugin.

    Subclasses set the class attributes, build their model in ``__init__`` from
    ``self.config`` and implement ``forward``. Everything else has a working default.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    #: Default configuration; the run's ``[detector]`` section is layered on top.
    defaults: ClassVar[dict[str, Any]] = {}
    #: JSON Schema per key of ``defaults`` where its default value does not tell the type and
    #: range: ``{"crop_size": {"minimum": 8}, "backbone_weights": {"type": ["string", "null"]}}``.
    settings: ClassVar[dict[str, dict]] = {}
    #: The published training recipe (epochs, batch_size, lr, ...): the run's ``[train]`` defaults.
    training: ClassVar[dict[str, Any]] = {}
    #: Named scaled-down overlays, e.g. ``{"mini": {"detector": {...}, "train": {...}}}``; a
    #: benchmark protocol picks one and the run records that it did.
    profiles: ClassVar[dict[str, dict[str, Any]]] = {}
    #: Whether ``training_step`` is meaningful (``harness run`` trains when no weights are given).
    trainable: ClassVar[bool] = True
    #: Whether the training step wants each fake's paired real image (``batch["pair"]``).
    needs_pairs: ClassVar[bool] = False
    #: Whether it also wants each real's reconstruction, where the suite has one (a fake, in
    #: ``batch["pair"]`` of the real's row: ``batch["label"]`` tells the two kinds apart).
    needs_reconstructions: ClassVar[bool] = False
    #: Whether the input's last two dimensions are one plane of the image, so that a grid cell
    #: is an image region (TDE and masking analyses); False for inputs such as SEP's two views
    #: at different scales, where one plane mask would hit unrelated regions.
    spatial_input: ClassVar[bool] = True
    #: Keep 4-D weights in NHWC memory: convolutional models run faster so (oneDNN on CPU,
    #: tensor cores on CUDA); the values, checkpoints and hashes are unchanged.
    channels_last: ClassVar[bool] = False
    #: Set by :meth:`fold_batchnorm`: the digest of the weights before folding, which the
    #: score caches keep using as the model's identity (None: the weights are not folded).
    unfolded_weights_digest: str | None = None

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__()
        self.config = merge(copy.deepcopy(self.defaults), config or {})

    def fold_batchnorm(self) -> int:
        """For inference only: switch to eval mode and fold batch norms into the convolutions
        before them (:func:`fold_batchnorm`). The score-cache key stays that of the unfolded
        weights; a folded detector refuses to train. Returns how many were folded."""
        from harness.checkpoints import state_digest

        digest = self.unfolded_weights_digest or state_digest(self)
        folded = fold_batchnorm(self.eval())
        if folded:
            self.unfolded_weights_digest = digest
        return folded

    def train(self, mode: bool = True) -> "Detector":
        if mode and self.unfolded_weights_digest:
            raise HarnessError(f"detector '{self.name}' has its batch norms folded for inference and cannot be "
                               "trained: build it again (eval.fuse = false keeps them unfolded)")
        return super().train(mode)

    def place(self, device: torch.device | str) -> "Detector":
        """Move to ``device`` in the memory format the model runs fastest in."""
        self.to(device)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        return self

    # -- input -----------------------------------------------------------------------------
    def input_policy(self, train: bool = False) -> InputPolicy:
        raise NotImplementedError

    def preprocess(
        self, images: list[Image.Image], *, train: bool = False, generator: torch.Generator | None = None
    ) -> list[torch.Tensor]:
        """Decoded RGB images (same size) -> input tensors in [0, 1], geometry shared."""
        return apply_policy(self.input_policy(train), images, train=train, generator=generator)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        policy = self.input_policy(False)
        if policy.mean is None:
            return x
        # x.new_tensor (x's dtype and device) keeps this traceable by torch.fx (fold_batchnorm)
        mean = x.new_tensor(policy.mean).view(3, 1, 1)
        std = x.new_tensor(policy.std).view(3, 1, 1)
        return (x - mean) / std

    # -- model -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Input batch (values in [0, 1]) -> raw logits ``[B]``; sigmoid = P(fake)."""
        raise NotImplementedError

    # -- checkpoints -----------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """The tensors a harness checkpoint stores (override to store only adapters + head)."""
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}

    def load_weights(self, path: str | Path) -> None:
        """Load a checkpoint; the default reads a harness safetensors checkpoint.

        Plugins override this with their official-checkpoint adapter and fall back to
        ``super().load_weights`` for harness checkpoints.
        """
        from harness.checkpoints import check_state_fits, load_state
        from harness.errors import HarnessError

        state = load_state(path)
        if not isinstance(state, dict):
            raise HarnessError(f"checkpoint {path} is not a state dict (got {type(state).__name__})")
        saved_keys = set(self.checkpoint_state())
        check_state_fits(self.state_dict(), state, path, f"detector '{self.name}'",
                         allow_missing=lambda key: key not in saved_keys, hint=_config_hint(Path(path), self.config))
        self.load_state_dict(state, strict=False)

    # -- training --------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """One step's losses; ``batch`` has ``x`` [B,...], ``label`` [B] (1 = fake) and, for
        detectors with ``needs_pairs``, ``pair`` [B,...] and ``has_pair`` [B].
        Returns a dict with at least ``loss``. The default is BCE on the logits."""
        logits = self(batch["x"])
        loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), batch["label"].float())
        return {"loss": loss}

    def parameters_to_train(self):
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizer(self, params, train_config: dict[str, Any]) -> torch.optim.Optimizer:
        """The optimiser of the published recipe; the default is AdamW from ``[train]`` lr / weight_decay."""
        return torch.optim.AdamW(
            params, lr=float(train_config.get("lr", 1e-4)), weight_decay=float(train_config.get("weight_decay", 0.0))
        )

