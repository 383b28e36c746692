"""Shared by ``tests/test_parity.py`` and ``scripts/make_parity_goldens.py``.

Neither the official code nor its real weights are needed to *check* a golden: the images
are made from scikit-image's bundled photos, and the official-layout weights are regenerated
from the layout (key, shape, dtype) recorded in the golden and a seed, by :func:`seeded_state`.
The generator script fills the official model with the same function, so the official
outputs recorded in the golden came from exactly these tensors.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

GOLDEN_DIR = Path(__file__).resolve().parent

#: The bundled images: a scikit-image photo resized (PIL bicubic) to (width, height). The sizes
#: cover a crop larger than 224 with an odd margin (torchvision's rounded centre vs a floored
#: one), one side smaller than the crop (padding), and a small image.
IMAGES = {
    "astronaut": ("astronaut", (251, 227)),
    "coffee": ("coffee", (230, 180)),
    "chelsea": ("chelsea", (96, 64)),
}


#: Images only some goldens use: ``flats`` has two flat areas of different colours above a photo,
#: so that several candidate patches tie at complexity 0 with different content, and which one a
#: patch selector keeps (SSP) or in which order it tiles them (PatchCraft) shows in the output.
EXTRA_IMAGES = {"flats": ("flats", (96, 96))}


def make_image(source: str, size: tuple[int, int]) -> Image.Image:
    from skimage import data

    if source == "flats":
        w, h = size
        pixels = np.asarray(make_image("astronaut", (w, h))).copy()
        pixels[: h // 2, : w // 2] = (200, 30, 30)
        pixels[: h // 2, w // 2 :] = (30, 30, 200)
        return Image.fromarray(pixels)
    return Image.fromarray(getattr(data, source)()).convert("RGB").resize(tuple(size), Image.BICUBIC)


def image_digest(image: Image.Image) -> str:
    return hashlib.sha256(np.asarray(image).tobytes()).hexdigest()


def _key_seed(seed: int, key: str) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(key.encode())) % (1 << 62)


def seeded_tensor(key: str, shape: list[int], dtype: str, seed: int, conv_gain: float = 1.0) -> torch.Tensor:
    """One tensor of an official state dict, drawn from ``seed`` and its key only.

    Scales keep a deep network's activations of order one, so that the outputs are neither
    saturated nor constant and a 1e-5 agreement means something: convolutions
    N(0, conv_gain/fan_in) (2 = He for plain ReLU stacks such as NPR's and RPTC's; 1 for
    ResNet-50s, whose residual sums grow), other matrices N(0, 1/fan_in), norm scales
    1 + N(0, 0.1^2), biases and embeddings N(0, 0.1^2), BN running variances U(0.5, 1.5).
    """
    if not dtype.startswith("torch.float"):
        return torch.zeros(shape, dtype=getattr(torch, dtype.removeprefix("torch.")))
    g = torch.Generator().manual_seed(_key_seed(seed, key))
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "running_var":
        t = 0.5 + torch.rand(shape, generator=g)
    elif leaf == "running_mean":
        t = 0.1 * torch.randn(shape, generator=g)
    elif len(shape) == 1 and leaf in ("weight", "gamma"):  # BatchNorm / LayerNorm scales, layer scales
        t = 1.0 + 0.1 * torch.randn(shape, generator=g)
    elif len(shape) <= 1:
        t = 0.1 * torch.randn(shape, generator=g)
    else:
        gain = conv_gain if len(shape) == 4 else 1.0
        t = torch.randn(shape, generator=g) * math.sqrt(gain / math.prod(shape[1:]))
    return t


def seeded_state(weights: dict) -> dict[str, torch.Tensor]:
    """The official-layout state dict a golden's ``weights`` section describes.

    ``weights``: ``seed``, ``conv_gain`` (default 1), ``layout`` ([key, shape(, dtype if not
    float32)] in the official order), ``fixed``
    (key -> nested list: tensors the official model fixes, e.g. SRM filters, kept at their
    official values) and ``fp16`` (round every float to half precision, as OpenAI CLIP's
    loader stores its weights).
    """
    fixed = weights.get("fixed", {})
    state = {}
    for key, shape, *dtype in weights["layout"]:
        dtype = dtype[0] if dtype else "torch.float32"
        if key in fixed:
            t = torch.tensor(fixed[key], dtype=torch.float32).reshape(shape)
        else:
            t = seeded_tensor(key, shape, dtype, weights["seed"], float(weights.get("conv_gain", 1.0)))
        if weights.get("fp16") and t.is_floating_point():
            t = t.half().float()
        state[key] = t
    return state


def layout_of(state: dict[str, torch.Tensor]) -> list:
    """[key, shape] per tensor, in order, with the dtype appended where it is not float32."""
    return [[k, list(v.shape)] + ([] if v.dtype == torch.float32 else [str(v.dtype)]) for k, v in state.items()]


def write_official_files(weights: dict, state: dict[str, torch.Tensor], folder: Path) -> dict[str, Path]:
    """Save ``state`` as the official checkpoint file(s): ``weights['files']`` lists, per file,
    the key prefix it holds (stripped) and the container key it is wrapped in, if any."""
    paths = {}
    for spec in weights["files"]:
        prefix = spec.get("prefix", "")
        part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        add = spec.get("add_prefix", "")
        part = {add + k: v for k, v in part.items()}
        obj = {spec["wrap"]: part} if spec.get("wrap") else part
        path = Path(folder) / spec["name"]
        torch.save(obj, path)
        paths[spec["name"]] = path
    return paths


def load_golden(name: str) -> dict:
    return json.loads((GOLDEN_DIR / f"{name}.json").read_text())


def _dump(value, depth: int = 0) -> str:
    """JSON with the outer dicts and the layout one item a line, numbers packed: small diffs."""
    pad = " " * (depth + 1)
    if isinstance(value, dict) and depth <= 1 and value:
        items = [f"{pad}{json.dumps(k)}: {_dump(v, depth + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}"
    if isinstance(value, list) and value and isinstance(value[0], list) and depth <= 2:
        return "[\n" + ",\n".join(pad + json.dumps(v, separators=(",", ":")) for v in value) + "\n" + " " * depth + "]"
    return json.dumps(value, separators=(",", ":"))


def write_golden(name: str, golden: dict) -> Path:
    path = GOLDEN_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(_dump(golden) + "\n")
    tmp.replace(path)
    return path
