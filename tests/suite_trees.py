"""Tiny image trees with the real datasets' folder names, written by the suite tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

_RNG = np.random.default_rng(0)
_PNG = None
_JPEG = None


def _bytes(fmt: str) -> bytes:
    global _PNG, _JPEG
    if _PNG is None:
        arr = _RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        for kind in ("PNG", "JPEG"):
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, kind)
            if kind == "PNG":
                _PNG = buf.getvalue()
            else:
                _JPEG = buf.getvalue()
    return _JPEG if fmt == "JPEG" else _PNG


def touch_images(folder: Path, names: list[str]) -> list[Path]:
    """Write a small valid image for each name (JPEG bytes for .jpg/.jpeg names, else PNG)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / name
        fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
        path.write_bytes(_bytes(fmt))
        paths.append(path)
    return paths


def numbered(prefix: str, n: int, ext: str, start: int = 0) -> list[str]:
    return [f"{prefix}{i:05d}{ext}" for i in range(start, start + n)]
