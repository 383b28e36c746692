"""Corruption robustness: JPEG, Gaussian blur and resizing (PPL section 5.2, Fig. 6(a)), and the
real-world degradation chains beside them (double JPEG, WebP, AVIF, Gaussian noise, resize then
JPEG as social platforms do, OpenCV's JPEG encoder), off unless their options list levels.

Each corruption is applied to the decoded image (PIL, before the detector's input policy),
identically to real and fake images, and the corrupted images are scored through the score
cache (``transform_key`` names the corruption). Every curve has an explicit identity point,
which is the clean scoring itself: ``jpeg`` none (JPEG at quality 100 is still lossy),
``blur`` sigma 0, ``resize`` scale 1.
"""

from __future__ import annotations

import io
import logging
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from PIL import Image, ImageFilter

from harness import hookimpl
from harness.images import jpeg_roundtrip
from harness.analysis import Analysis, AnalysisContext, AnalysisResult
from harness.errors import HarnessError
from harness.scoring import PRECISIONS, score_samples
from harness.plugins.analyses.tde import (CACHE_DIR_SETTING, analysis_workers, cache_dir_for, generator_order,
                                         skipped_table, stable_subsample)

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # pandas loads where it is used: 'harness list' imports this module
    import pandas as pd

KINDS = ("jpeg", "blur", "resize")
#: Degradation chains, each with its own identity point ``<kind> none`` and its own figure panel.
CHAIN_KINDS = ("double_jpeg", "webp", "avif", "noise", "social", "opencv_jpeg")


def jpeg(quality: int) -> Callable[[Image.Image], Image.Image]:
    return lambda img: jpeg_roundtrip(img, quality)


def blur(sigma: float) -> Callable[[Image.Image], Image.Image]:
    # Pillow's GaussianBlur radius is the standard deviation of the kernel.
    return lambda img: img.filter(ImageFilter.GaussianBlur(radius=float(sigma)))


def resize(scale: float) -> Callable[[Image.Image], Image.Image]:
    def apply(img: Image.Image) -> Image.Image:
        w, h = img.size
        return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
    return apply


def pillow_bytes(img: Image.Image, fmt: str, quality: int) -> bytes:
    """``img`` encoded by Pillow in ``fmt`` (``JPEG``, ``WEBP``, ``AVIF``) at ``quality``."""
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, quality=int(quality))
    return buffer.getvalue()


def opencv_jpeg_bytes(img: Image.Image, quality: int) -> bytes:
    """``img`` encoded as JPEG by OpenCV (``cv2.imencode``), whose output differs from Pillow's at
    the same quality; CNNDetection's augmentation uses both encoders."""
    import cv2

    ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(np.asarray(img)[:, :, ::-1]),
                               [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {img.size} image as JPEG")
    return encoded.tobytes()


def decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as decoded:
        return decoded.convert("RGB")


def double_jpeg(first: int, second: int) -> Callable[[Image.Image], Image.Image]:
    return lambda img: decode(pillow_bytes(decode(pillow_bytes(img, "JPEG", first)), "JPEG", second))


def webp(quality: int) -> Callable[[Image.Image], Image.Image]:
    return lambda img: decode(pillow_bytes(img, "WEBP", quality))


def avif(quality: int) -> Callable[[Image.Image], Image.Image]:
    return lambda img: decode(pillow_bytes(img, "AVIF", quality))


def gaussian_noise(std: float, seed: int = 0) -> Callable[[Image.Image], Image.Image]:
    """Additive Gaussian noise of standard deviation ``std`` in 8-bit units, rounded and clipped.

    The noise is drawn from a generator seeded by ``seed`` and the image's own pixels, so the
    same image always gets the same noise (scores stay cacheable) and two images different noise.
    """
    def apply(img: Image.Image) -> Image.Image:
        pixels = np.asarray(img)
        rng = np.random.default_rng([int(seed), zlib.crc32(pixels.tobytes())])
        noisy = pixels.astype(np.float64) + rng.normal(0.0, float(std), pixels.shape)
        return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))
    return apply


def social(scale: float, quality: int) -> Callable[[Image.Image], Image.Image]:
    """What sharing platforms do to an upload: downscale (bicubic) by ``scale``, then JPEG at ``quality``."""
    return lambda img: decode(pillow_bytes(resize(scale)(img), "JPEG", quality))


def opencv_jpeg(quality: int) -> Callable[[Image.Image], Image.Image]:
    return lambda img: decode(opencv_jpeg_bytes(img, quality))


def _opencv_version() -> str:
    import cv2

    return cv2.__version__


def chain_skip_reason(kind: str) -> str | None:
    """Why a degradation cannot run here (a reported skip), or None."""
    if kind == "avif":
        from PIL import features

        if not features.check("avif"):
            return "this Pillow has no AVIF support (PIL.features.check('avif') is False)"
    if kind == "opencv_jpeg":
        try:
            import cv2  # noqa: F401
        except ImportError:
            return "OpenCV is not installed (pip install opencv-python-headless)"
    return None


@dataclass(frozen=True)
class Level:
    """One point of a corruption curve; ``transform`` None marks the identity point."""

    kind: str
    value: float | None
    label: str
    transform: Callable[[Image.Image], Image.Image] | None
    #: What else the output depends on (the noise seed, the OpenCV version): part of the cache key.
    cache_tag: str = ""

    @property
    def key(self) -> str | None:
        return None if self.transform is None else f"corruption:{self.label}{self.cache_tag}"


def levels(kind: str, values: list) -> list[Level]:
    """The curve of one corruption in plotting order, its identity point included once."""
    if kind == "jpeg":
        out = [Level("jpeg", None, "jpeg none", None)]
        for q in values:
            if not 1 <= int(q) <= 100:
                raise HarnessError(f"analyses.corruptions.jpeg qualities must lie in 1..100, got {q}")
            out.append(Level("jpeg", float(q), f"jpeg q={int(q)}", jpeg(int(q))))
        return out
    if kind == "blur":
        out = [Level("blur", 0.0, "blur sigma=0", None)]
        for s in values:
            if float(s) < 0:
                raise HarnessError(f"analyses.corruptions.blur sigmas must be >= 0, got {s}")
            if float(s) > 0:
                out.append(Level("blur", float(s), f"blur sigma={float(s):g}", blur(float(s))))
        return out
    out = [Level("resize", 1.0, "resize scale=1", None)]
    for s in values:
        if float(s) <= 0:
            raise HarnessError(f"analyses.corruptions.resize scales must be > 0, got {s}")
        if float(s) != 1.0:
            out.append(Level("resize", float(s), f"resize scale={float(s):g}", resize(float(s))))
    return sorted(out, key=lambda level: level.value)


def _quality(value, key: str) -> int:
    if not (isinstance(value, (int, float)) and float(value).is_integer() and 1 <= int(value) <= 100):
        raise HarnessError(f"analyses.corruptions.{key}: JPEG/WebP/AVIF qualities must be integers in 1..100, "
                           f"got {value!r}")
    return int(value)


def _pair(value, key: str, example: str) -> tuple:
    if not (isinstance(value, (list, tuple)) and len(value) == 2):
        raise HarnessError(f"analyses.corruptions.{key}: each level is a pair like {example}, got {value!r}")
    return tuple(value)


def chain_levels(kind: str, values: list, seed: int = 0) -> list[Level]:
    """A degradation chain's curve: its identity point ``<kind> none``, then the levels as given."""
    out = [Level(kind, None, f"{kind} none", None)]
    for v in values:
        if kind == "double_jpeg":
            q1, q2 = (_quality(q, kind) for q in _pair(v, kind, "[90, 70] (first, second quality)"))
            out.append(Level(kind, None, f"double_jpeg q={q1}>{q2}", double_jpeg(q1, q2)))
        elif kind == "social":
            scale, quality = _pair(v, kind, "[0.5, 80] (downscale factor, JPEG quality)")
            if not (isinstance(scale, (int, float)) and 0 < float(scale) <= 1):
                raise HarnessError(f"analyses.corruptions.social: the scale must lie in (0, 1], got {scale!r}")
            quality = _quality(quality, kind)
            out.append(Level(kind, None, f"social scale={float(scale):g},q={quality}", social(float(scale), quality)))
        elif kind == "noise":
            if not (isinstance(v, (int, float)) and float(v) > 0):
                raise HarnessError(f"analyses.corruptions.noise: std values (8-bit units) must be > 0, got {v!r}")
            out.append(Level(kind, float(v), f"noise std={float(v):g}", gaussian_noise(float(v), seed),
                             cache_tag=f"|seed={int(seed)}"))
        else:
            quality = _quality(v, kind)
            make = {"webp": webp, "avif": avif, "opencv_jpeg": opencv_jpeg}[kind]
            tag = f"|opencv={_opencv_version()}" if kind == "opencv_jpeg" else ""
            out.append(Level(kind, float(quality), f"{kind} q={quality}", make(quality), cache_tag=tag))
    return out


def metrics_rows(frame: pd.DataFrame, level: Level, generators: list[str]) -> list[dict[str, Any]]:
    from harness.metrics import binary_metrics

    rows = []
    for generator in generators + ["all"]:
        part = frame if generator == "all" else frame[frame.generator == generator]
        if part.empty:
            continue
        metrics = binary_metrics(part.label.to_numpy(), part.logit.to_numpy())
        rows.append({"corruption": level.kind, "level": level.value, "condition": level.label,
                     "identity": level.transform is None, "generator": generator,
                     **{k: metrics[k] for k in ("n", "acc", "real_acc", "fake_acc", "auc")}})
    return rows


class CorruptionsAnalysis(Analysis):
    name = "corruptions"
    description = ("Accuracy per generator under JPEG, blur and resizing, and optional degradation chains "
                   "(double JPEG, WebP, AVIF, noise, resize+JPEG, OpenCV JPEG).")
    reference = "PPL, Sec. 5.2, Fig. 6(a)"
    defaults: dict[str, Any] = {
        "jpeg": [100, 90, 80, 70, 60],
        "blur": [0.5, 1.0, 1.5, 2.0, 2.5],
        "resize": [0.6, 0.8, 1.0, 1.2, 1.4],
        # degradation chains: [] leaves one out; examples in docs/analyses.md
        "double_jpeg": [],         # [[first, second] JPEG quality], e.g. [[90, 70], [70, 90]]
        "webp": [],                # WebP qualities, e.g. [90, 70, 50]
        "avif": [],                # AVIF qualities (where Pillow has AVIF), e.g. [80, 50]
        "noise": [],               # Gaussian noise std in 8-bit units, e.g. [2, 5, 10]
        "social": [],              # [[downscale factor, JPEG quality]], e.g. [[0.75, 85], [0.5, 75]]
        "opencv_jpeg": [],         # OpenCV encoder qualities (needs opencv-python-headless), e.g. [90, 70]
        "batch_size": None,        # None: the run's eval.batch_size, else 64
        "workers": None,
        "max_per_group": 0,        # 0: every image
        "cache_dir": None,         # None: the run's eval.cache_dir, else the score cache; false: off
        "precision": "auto",
        "seed": 0,
    }
    settings = {
        "batch_size": {"type": ["integer", "null"], "minimum": 1},
        "workers": {"type": ["integer", "null"], "minimum": 0},
        "max_per_group": {"minimum": 0},
        "cache_dir": CACHE_DIR_SETTING,
        "precision": {"enum": list(PRECISIONS)},
    }

    def run(self, context: AnalysisContext) -> AnalysisResult:
        import pandas as pd

        cfg = self.config
        samples = stable_subsample(context.samples, cfg["max_per_group"], cfg["seed"])
        generators = generator_order(samples)
        batch_size = int(cfg["batch_size"] or context.config.get("eval", {}).get("batch_size") or 64)
        cache_dir = cache_dir_for(cfg, context)
        rows, skipped, scored = [], {}, {}
        curves = [(kind, levels(kind, list(cfg[kind]))) for kind in KINDS]
        chains_skipped = {}
        for kind in CHAIN_KINDS:
            if not cfg[kind]:
                continue
            if reason := chain_skip_reason(kind):
                log.warning("corruptions: %s skipped: %s", kind, reason)
                chains_skipped[kind] = reason
                continue
            curves.append((kind, chain_levels(kind, list(cfg[kind]), int(cfg["seed"]))))
        for kind, curve in curves:
            for level in curve:
                if level.key not in scored:
                    scored[level.key] = score_samples(
                        context.detector, samples, device=context.device, batch_size=batch_size,
                        workers=analysis_workers(cfg, context), cache_dir=cache_dir, transform=level.transform,
                        transform_key=level.key, precision=cfg["precision"], desc=level.label)
                    skipped.update(dict(scored[level.key].attrs.get("skipped", [])))
                rows += metrics_rows(scored[level.key], level, generators)
        per_generator = pd.DataFrame(rows)
        summary_table = mean_accuracy_table(per_generator)
        context.out_dir.mkdir(parents=True, exist_ok=True)
        figures = {"curves": plot_curves(per_generator, generators, context.out_dir / "corruptions.png",
                                         context.detector.name, KINDS)}
        chains = [kind for kind, _ in curves if kind in CHAIN_KINDS]
        if chains:
            figures["chains"] = plot_curves(per_generator, generators, context.out_dir / "degradations.png",
                                            context.detector.name, chains, title="Degradation chains")
        tables = {"summary": summary_table, "per_generator": per_generator}
        if skipped:
            tables["skipped"] = skipped_table(sorted(skipped.items()))
        summary = {
            "images": int(len(scored[None])),
            "skipped": len(skipped),
            "mAcc": {row.condition: _round(row.mAcc) for row in summary_table.itertuples()},
        }
        if chains_skipped:
            summary["degradations_skipped"] = chains_skipped
        return AnalysisResult(tables=tables, figures=figures, summary=summary)


def _round(value) -> float | None:
    import pandas as pd

    return None if value is None or pd.isna(value) else round(float(value), 6)


def mean_accuracy_table(per_generator: pd.DataFrame) -> pd.DataFrame:
    """Per condition: mean accuracy over generators (mAcc), its worst generator, pooled acc and AUC."""
    import pandas as pd

    rows = []
    for condition, group in per_generator.groupby("condition", sort=False):
        gens = group[group.generator != "all"]
        pooled = group[group.generator == "all"].iloc[0]
        worst = gens.loc[gens.acc.idxmin()]
        rows.append({"corruption": pooled.corruption, "level": pooled.level, "condition": condition,
                     "mAcc": gens.acc.mean(), "worst_generator": worst.generator, "worst_acc": worst.acc,
                     "acc": pooled.acc, "auc": pooled.auc})
    return pd.DataFrame(rows)


def plot_curves(per_generator: pd.DataFrame, generators: list[str], path, name: str, kinds=KINDS,
                title: str = "Corruption robustness"):
    """One panel per corruption: accuracy per generator (thin) and the mean over generators (bold)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(4.5, 4.35 * len(kinds)), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(kinds), sharey=True))
    for ax, kind in zip(axes, kinds):
        rows = per_generator[per_generator.corruption == kind]
        conditions = list(dict.fromkeys(rows.condition))
        ticks = np.arange(len(conditions))
        for generator in generators:
            part = rows[rows.generator == generator].set_index("condition").reindex(conditions)
            ax.plot(ticks, part.acc, marker=".", alpha=0.6, label=generator)
        means = rows[rows.generator != "all"].groupby("condition", sort=False).acc.mean().reindex(conditions)
        ax.plot(ticks, means, color="black", linewidth=2, marker="o", label="mean")
        ax.set_xticks(ticks, [c.split(" ", 1)[1] for c in conditions], rotation=30, fontsize=8)
        ax.set_title(kind)
        ax.set_ylim(0, 1.02)
    axes[0].set_ylabel("accuracy (logit >= 0 is fake)")
    axes[-1].legend(fontsize=7)
    fig.suptitle(f"{title} ({name})", fontsize=10)
    fig.savefig(path, dpi=110)
    return path


@hookimpl
def register_analyses(register):
    register(CorruptionsAnalysis)
