"""The one image loader every suite and every detector input goes through.

Every file ends as an 8-bit RGB image converted by the same fixed rules, or as an
:class:`ImageDecodeError` whose one-line ``reason`` the run counts and lists; nothing here
may crash a data-loader worker. The JPEG round trip and CNNDetection's blur / JPEG
augmentation that corruptions and several detectors share live here too.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps

log = logging.getLogger(__name__)

# Larger than any real benchmark image (GenImage tops out near 2k x 2k), far below a bomb.
MAX_PIXELS = 64 * 1024 * 1024

#: File extensions (lower case) that the suites list as images.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})

_FORMAT_OF_EXTENSION = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP",
                        ".tif": "TIFF", ".tiff": "TIFF", ".gif": "GIF"}

_SIXTEEN_BIT_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageDecodeError(Exception):
    """A file that cannot be used as an image; ``reason`` is one short line."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def jpeg_roundtrip(img: Image.Image, quality: int) -> Image.Image:
    """``img`` encoded as a JPEG of ``quality`` (Pillow, default 4:2:0 chroma) and decoded to RGB:
    the JPEG corruption and augmentations all use this one."""
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def blur_jpeg(
    images: list[Image.Image], generator: torch.Generator | None, *, blur_prob: float, blur_sigma, jpeg_prob: float,
    jpeg_quality,
) -> list[Image.Image]:
    """CNNDetection's training augmentation (``data_augment``; UnivFD, AIGCDetectBenchmark), one draw
    for all images (an image and its pair alike).

    With probability ``blur_prob``: Gaussian blur, sigma ~ U(``blur_sigma``), by
    ``scipy.ndimage.gaussian_filter`` on each 8-bit channel as the official code; then with
    probability ``jpeg_prob``: a JPEG round trip at a quality drawn uniformly from the integers
    of ``jpeg_quality`` (PIL's encoder; the official code also picks OpenCV's half the time).
    A probability of 0 draws nothing from ``generator``.
    """
    def happens(p: float) -> bool:
        return float(p) > 0 and float(torch.rand((), generator=generator)) < float(p)

    if happens(blur_prob):
        from scipy.ndimage import gaussian_filter  # scipy loads only where it is used

        lo, hi = (float(s) for s in blur_sigma)
        sigma = lo + (hi - lo) * float(torch.rand((), generator=generator))
        images = [Image.fromarray(gaussian_filter(np.array(img), sigma=(sigma, sigma, 0))) for img in images]
    if happens(jpeg_prob):
        lo, hi = (int(q) for q in jpeg_quality)
        quality = int(torch.randint(lo, hi + 1, (1,), generator=generator))
        images = [jpeg_roundtrip(img, quality) for img in images]
    return images


def name_suffix(name: str) -> str:
    """``pathlib.PurePath(name).suffix``, by string operations (manifests read millions of names)."""
    base = name.rstrip("/").rpartition("/")[2]
    dot = base.rfind(".")
    return base[dot:] if 0 < dot < len(base) - 1 else ""


def is_image_name(name: str) -> bool:
    base = name.rstrip("/").rpartition("/")[2]  # name_suffix, inlined: called once per file of a scan
    dot = base.rfind(".")
    return 0 < dot < len(base) - 1 and base[dot:].lower() in IMAGE_EXTENSIONS


def format_of_name(name: str) -> str:
    """The format a file name claims (``JPEG``, ``PNG``, ...), from its extension alone."""
    suffix = name_suffix(name).lower()
    return _FORMAT_OF_EXTENSION.get(suffix, suffix.lstrip(".").upper() or "none")


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode ``path`` to an 8-bit RGB image, the same way every time.

    EXIF orientation is applied; palette, grey, RGBA, CMYK and 16-bit images are converted
    to RGB (see :func:`to_rgb`); only the first frame of an animation is used. Raises
    :class:`ImageDecodeError` for missing, empty, truncated, oversized or non-image files.
    """
    return decode_image(path, max_pixels)[0]


def decode_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> tuple[Image.Image, str]:
    """Like :func:`load_image`, also returning the format found in the file's content."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageDecodeError(path, f"cannot read: {exc.strerror or exc}") from None
    if not path.is_file():
        raise ImageDecodeError(path, "not a regular file")
    if size == 0:
        raise ImageDecodeError(path, "zero-byte file")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Another library switched Pillow to padding truncated files with grey; a half-grey
        # image would be scored as if it were whole, so refuse to run that way.
        raise ImageDecodeError(path, "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; truncated files would pass unseen")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                fmt = img.format or "unknown"
                # The header gives the size before any pixel is decoded: refuse bombs here.
                if img.width * img.height > max_pixels:
                    raise ImageDecodeError(
                        path, f"decompression bomb: {img.width}x{img.height} exceeds the {max_pixels}-pixel cap")
                if img.width < 1 or img.height < 1:
                    raise ImageDecodeError(path, f"empty image ({img.width}x{img.height})")
                img.load()
                oriented = _apply_orientation(img)
                return to_rgb(oriented), fmt
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(path, f"decompression bomb: {exc}") from None
    except Image.UnidentifiedImageError:
        raise ImageDecodeError(path, "not an image file (unknown format)") from None
    except OSError as exc:
        # Pillow reports truncated and corrupt data as OSError ("image file is truncated ...").
        raise ImageDecodeError(path, f"corrupt or truncated image: {exc}") from None
    except Exception as exc:  # PIL raises many types for bad files; each becomes a reported skip
        raise ImageDecodeError(path, f"{type(exc).__name__}: {exc}") from None


def check_file(path: str) -> tuple[str, str | None, str | None]:
    """(path, format found, None) or (path, None, reason): one file of ``harness suite verify``.

    Lives here, with no heavy imports, because decoding processes import it by name.
    """
    try:
        _, fmt = decode_image(path)
    except ImageDecodeError as exc:
        return path, None, exc.reason
    return path, fmt, None


def _apply_orientation(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except Exception as exc:
        # A broken EXIF block says nothing reliable about orientation; the pixels are fine.
        log.debug("ignoring an unreadable EXIF orientation (%s: %s)", type(exc).__name__, exc)
        return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB by fixed rules.

    - 16-bit grey (and 32-bit integer grey) keeps the high byte, as Pillow does for 16-bit RGB;
    - float grey is clipped to [0, 255];
    - transparency (RGBA, LA, palette with a transparent entry) is composited on white;
    - everything else (CMYK, YCbCr, L, 1, ...) goes through Pillow's own ``convert("RGB")``.

    Embedded ICC profiles are not applied: pixel values are used as stored, for every file alike.
    """
    if img.mode == "RGB":
        return img
    if img.mode in _SIXTEEN_BIT_GREY:
        arr = np.asarray(img).astype(np.int64)
        grey = (np.clip(arr, 0, 65535) >> 8).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        grey = np.clip(np.nan_to_num(arr), 0, 255).round().astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")
