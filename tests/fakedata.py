"""Small labelled images that tests write themselves.

Real images are smooth random fields with fine texture; fakes are the same kind of image
passed through a 2x nearest-neighbour down/up-sampling, the periodic trace that upsampling
generators leave and that a small model learns in a few steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def real_image(rng: np.random.Generator, size: int = 32) -> np.ndarray:
    coarse = rng.uniform(0, 255, (size // 8 + 1, size // 8 + 1, 3))
    smooth = np.kron(coarse, np.ones((8, 8, 1)))[:size, :size]
    texture = rng.normal(0, 18, (size, size, 3))
    return np.clip(smooth + texture, 0, 255).astype(np.uint8)


def fake_from(real: np.ndarray) -> np.ndarray:
    low = real[::2, ::2]
    return np.repeat(np.repeat(low, 2, axis=0), 2, axis=1)


def write_pairs(real_dir: Path, fake_dir: Path, n: int, size: int = 32, seed: int = 0, ext: str = ".png") -> list[tuple[Path, Path]]:
    """Write ``n`` real images and their fake reconstructions (same file stem)."""
    rng = np.random.default_rng(seed)
    real_dir.mkdir(parents=True, exist_ok=True)
    fake_dir.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(n):
        real = real_image(rng, size)
        rp, fp = real_dir / f"img_{i:04d}{ext}", fake_dir / f"img_{i:04d}{ext}"
        Image.fromarray(real).save(rp)
        Image.fromarray(fake_from(real)).save(fp)
        pairs.append((rp, fp))
    return pairs
