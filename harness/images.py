"""The one image loader every suite and every detector input goes through."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, ImageOps

# Larger than any real benchmark image (GenImage tops out near 2k x 2k), far below a bomb.
MAX_PIXELS = 64 * 1024 * 1024


class ImageDecodeError(Exception):
    """A file that cannot be used as an image; ``reason`` is one short line."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode ``path`` to an 8-bit RGB image, the same way every time.

    EXIF orientation is applied; palette, grey, RGBA, CMYK and 16-bit images are converted
    to RGB. Raises :class:`ImageDecodeError` for empty, truncated, oversized or non-image files.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageDecodeError(path, f"cannot stat: {exc.strerror}") from None
    if size == 0:
        raise ImageDecodeError(path, "zero-byte file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > max_pixels:
                    raise ImageDecodeError(path, f"{img.width}x{img.height} exceeds the {max_pixels}-pixel cap")
                img.load()
                img = ImageOps.exif_transpose(img)
                return to_rgb(img)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(path, f"decompression bomb: {exc}") from None
    except Exception as exc:  # PIL raises many types for bad files; each becomes a reported skip
        raise ImageDecodeError(path, f"{type(exc).__name__}: {exc}") from None


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey: scale to 8 bits rather than clip.
        arr = __import__("numpy").asarray(img, dtype="float64")
        scale = 255.0 / 65535.0 if arr.max() > 255 else 1.0
        return Image.fromarray((arr * scale).clip(0, 255).astype("uint8"), "L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
        return background
    return img.convert("RGB")
