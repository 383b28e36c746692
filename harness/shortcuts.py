"""File-level shortcuts: what a detector could learn instead of real vs fake.

Per image, from the file header alone (no pixel is decoded): the format found in the content,
the JPEG quality estimated from the quantisation tables, width, height and byte size. Per
generator, each of these is checked for whether it alone separates the generator's real and
fake images (GenImage's JPEG photos against PNG generator outputs is the classic case).
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.metrics import roc_curve

from harness.suite import Sample

log = logging.getLogger(__name__)

#: The IJG (libjpeg) base quantisation tables, JPEG standard Annex K, in natural (row) order.
IJG_LUMINANCE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
])
IJG_CHROMINANCE = np.full(64, 99)
IJG_CHROMINANCE[[0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 24, 25]] = [17, 18, 24, 47, 18, 21, 26, 66, 24, 26, 56, 47, 66]

#: Features of one file, in table order.
FEATURES = ("format", "jpeg_quality", "width", "height", "size")
#: A one-feature rule at or above this balanced accuracy on a generator makes it "separable".
SEPARABLE = 0.9
#: Files read per generator, split and class when a suite is larger (a stable, path-hashed choice).
DEFAULT_PER_GROUP = 1000


def ijg_table(base: np.ndarray, quality: int) -> np.ndarray:
    """libjpeg's ``jpeg_quality_scaling``: the base table scaled for ``quality`` (1-100), clamped to 1..255."""
    quality = min(100, max(1, int(quality)))
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((base * scale + 50) // 100, 1, 255)


_IJG_BY_QUALITY = {q: (ijg_table(IJG_LUMINANCE, q), ijg_table(IJG_CHROMINANCE, q)) for q in range(1, 101)}


def estimate_jpeg_quality(quantization: dict) -> int | None:
    """The IJG quality whose scaled standard tables are nearest (L1) to the file's tables.

    Exact for files written by libjpeg-based encoders (Pillow, OpenCV, most cameras' software
    at standard settings); for custom tables it is the nearest standard quality.
    """
    if not quantization:
        return None
    tables = [np.asarray(quantization[k], dtype=np.int64) for k in sorted(quantization)][:2]
    if any(t.size != 64 for t in tables):
        return None

    def distance(q: int) -> int:
        return sum(int(np.abs(t - ref).sum()) for t, ref in zip(tables, _IJG_BY_QUALITY[q]))

    return min(range(1, 101), key=lambda q: (distance(q), -q))


def file_metadata(path: str) -> dict:
    """``format``, ``jpeg_quality`` (None unless JPEG), ``width``, ``height``, ``size`` and
    ``error`` (None, or why the header could not be read), from the header only."""
    out = {"format": None, "jpeg_quality": None, "width": None, "height": None, "size": None, "error": None}
    try:
        out["size"] = os.stat(path).st_size
        with Image.open(path) as img:
            out["format"] = {"MPO": "JPEG"}.get(img.format, img.format) or "unknown"
            out["width"], out["height"] = img.size
            if out["format"] == "JPEG":
                out["jpeg_quality"] = estimate_jpeg_quality(getattr(img, "quantization", None) or {})
    except Exception as exc:  # noqa: BLE001 - any unreadable header is one reported row, never a crash
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def _stable_rank(sample: Sample) -> str:
    return hashlib.sha256(sample.portable_key.encode()).hexdigest()


def select(samples: Sequence[Sample], per_group: int = DEFAULT_PER_GROUP) -> list[Sample]:
    """At most ``per_group`` samples of each (generator, split, label), chosen by a hash of the
    portable key (the same choice on every machine); 0 keeps all."""
    if not per_group:
        return list(samples)
    groups: dict[tuple, list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.generator, s.split, s.label), []).append(s)
    chosen = []
    for members in groups.values():
        chosen += members if len(members) <= per_group else sorted(members, key=_stable_rank)[:per_group]
    return chosen


def metadata_table(samples: Iterable[Sample], progress: bool = False) -> pd.DataFrame:
    """One row per sample: path, generator, split, label and :func:`file_metadata`'s columns
    (a file listed twice, a real shared by generators, is read once)."""
    from tqdm.auto import tqdm

    samples = list(samples)
    cache: dict[str, dict] = {}
    rows = []
    for s in tqdm(samples, desc="reading headers", unit="file", disable=not progress):
        meta = cache.get(s.path) or cache.setdefault(s.path, file_metadata(s.path))
        rows.append({"path": s.path, "generator": s.generator, "split": s.split, "label": int(s.label), **meta})
    frame = pd.DataFrame(rows, columns=["path", "generator", "split", "label", *FEATURES, "error"])
    frame["jpeg_quality"] = frame["jpeg_quality"].astype("Int64")
    return frame


def _categorical_balanced_accuracy(values: pd.Series, labels: pd.Series) -> float:
    """Balanced accuracy of "predict the class more frequent for this value" (each class's shares)."""
    shares = pd.crosstab(values.astype(object).where(values.notna(), "none").astype(str), labels,
                         normalize="columns")
    return float(0.5 * shares.max(axis=1).sum())


def _numeric_balanced_accuracy(values: pd.Series, labels: pd.Series) -> float:
    """Best balanced accuracy of one threshold on ``values``, either direction: (1 + max |TPR - FPR|) / 2."""
    fpr, tpr, _ = roc_curve(labels.to_numpy(), values.to_numpy(dtype=np.float64), drop_intermediate=False)
    return float((1 + np.abs(tpr - fpr).max()) / 2)


def separability(meta: pd.DataFrame) -> pd.DataFrame:
    """Per generator and feature: the balanced accuracy of the best one-feature rule on all its
    readable files (every split), and whether it reaches :data:`SEPARABLE`."""
    rows = []
    readable = meta[meta["error"].isna()]
    for generator, part in readable.groupby("generator", sort=False):
        if part["label"].nunique() < 2:
            continue
        for feature in FEATURES:
            if feature in ("format", "jpeg_quality"):
                score = _categorical_balanced_accuracy(part[feature], part["label"])
            else:
                score = _numeric_balanced_accuracy(part[feature].astype(float), part["label"])
            rows.append({"generator": generator, "feature": feature, "balanced_acc": score,
                         "separable": score >= SEPARABLE})
    return pd.DataFrame(rows, columns=["generator", "feature", "balanced_acc", "separable"])


def separability_warnings(meta: pd.DataFrame) -> list[str]:
    """One line per generator whose classes one file feature separates."""
    table = separability(meta)
    lines = []
    for generator, part in table[table["separable"]].groupby("generator", sort=False):
        found = ", ".join(f"{r.feature} ({r.balanced_acc:.0%})" for r in part.itertuples())
        lines.append(f"generator {generator}: real and fake images are separable by {found} alone (balanced "
                     f"accuracy of a one-feature rule); a detector can learn that instead of real vs fake "
                     f"(eval.reencode / eval.match, or the per-format metrics)")
    return lines


def _mix(values: pd.Series, top: int = 3) -> str:
    shares = values.value_counts(normalize=True)
    text = ", ".join(f"{v} {s:.0%}" for v, s in shares.head(top).items())
    return text + (", ..." if len(shares) > top else "")


def class_table(meta: pd.DataFrame, generators: Sequence[str] | None = None) -> pd.DataFrame:
    """Per generator and class: files read, format mix, JPEG quality mix, median width x height, median KiB."""
    rows = []
    readable = meta[meta["error"].isna()]
    order = list(generators) if generators else list(dict.fromkeys(readable["generator"]))
    for generator in order:
        part = readable[readable["generator"] == generator]
        for label in (0, 1):
            sub = part[part["label"] == label]
            if sub.empty:
                continue
            qualities = sub["jpeg_quality"].dropna()
            rows.append({"generator": generator, "class": "fake" if label else "real", "files": len(sub),
                         "format": _mix(sub["format"]),
                         "JPEG quality": _mix(qualities.map(lambda q: f"q{q}")) if len(qualities) else "-",
                         "median WxH": f"{int(sub['width'].median())}x{int(sub['height'].median())}",
                         "median KiB": sub["size"].median() / 1024})
    return pd.DataFrame(rows)


# -- protocol switches against shortcuts (eval.reencode, eval.match) --------------------------------------------

#: ``eval.reencode`` formats: Pillow format name and whether a quality is required.
REENCODE_FORMATS = {"jpeg": ("JPEG", True), "webp": ("WEBP", True), "png": ("PNG", False)}


def reencoder(spec: str):
    """``(transform, key)`` for ``eval.reencode``: ``"jpeg:95"``, ``"webp:90"`` or ``"png"``.

    The transform encodes the decoded image in that format (Pillow) and decodes it again, the
    same for real and fake images, so that no class keeps the traces of its own encoder. PNG
    is lossless: it changes the container, not the pixels a detector sees.
    """
    from harness.errors import HarnessError

    name, _, quality = str(spec).strip().lower().partition(":")
    if name not in REENCODE_FORMATS:
        raise HarnessError(f"eval.reencode = '{spec}': unknown format '{name}'; use jpeg:Q, webp:Q (Q in 1..100) or png")
    pil_format, needs_quality = REENCODE_FORMATS[name]
    if needs_quality and not (quality.isdigit() and 1 <= int(quality) <= 100):
        raise HarnessError(f"eval.reencode = '{spec}': give a quality in 1..100, e.g. '{name}:95'")
    if not needs_quality and quality:
        raise HarnessError(f"eval.reencode = '{spec}': '{name}' takes no quality")
    options = {"quality": int(quality)} if quality else {}
    if name == "png":
        log.warning("eval.reencode = 'png' is lossless: the detector sees the same pixels as without it")

    def transform(img: Image.Image) -> Image.Image:
        import io

        buffer = io.BytesIO()
        img.save(buffer, format=pil_format, **options)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            return decoded.convert("RGB")

    return transform, f"reencode:{name}" + (f":{int(quality)}" if quality else "")


#: ``eval.match`` strata: the format in the content and the file size in bins of a factor sqrt(2).
def _size_bin(size) -> int:
    return int(np.floor(2 * np.log2(max(1, int(size)))))


def match_classes(samples: Sequence[Sample]) -> tuple[list[Sample], list[str]]:
    """``eval.match``: per generator, the subset whose real and fake images are matched on format
    and file size. Within each (format, size bin) stratum the larger class keeps as many images
    as the smaller one has (a stable, path-hashed choice); strata with one class are dropped.
    Returns the kept samples (in their order) and a line per generator saying what was kept."""
    samples = list(samples)
    meta = metadata_table(samples)
    strata: dict[tuple, list[list[int]]] = {}
    for i, row in enumerate(meta.itertuples()):
        if row.error is not None and not pd.isna(row.error):
            continue  # unreadable: scoring reports it; matching cannot place it
        key = (row.generator, row.format, _size_bin(row.size))
        strata.setdefault(key, [[], []])[row.label].append(i)
    keep: set[int] = set()
    for reals, fakes in strata.values():
        n = min(len(reals), len(fakes))
        for members in (reals, fakes):
            keep.update(sorted(members, key=lambda i: _stable_rank(samples[i]))[:n])
    kept = [s for i, s in enumerate(samples) if i in keep]
    notes = []
    for generator in dict.fromkeys(s.generator for s in samples):
        before = sum(s.generator == generator for s in samples)
        after = sum(s.generator == generator for s in kept)
        notes.append(f"eval.match: generator {generator} keeps {after} of {before} test images matched on format "
                     f"and file size" + ("; none match, so it is left out" if after == 0 else ""))
    return kept, notes


def per_format_metrics(test: pd.DataFrame) -> dict:
    """Metrics per source format (as the file name says), pooled and per generator: whether a
    detector's accuracy is the same on PNG and JPEG images of one class and the other."""
    from harness.images import format_of_name
    from harness.metrics import binary_metrics

    formats = test["path"].map(format_of_name)
    out = {}
    for fmt in sorted(set(formats)):
        part = test[formats == fmt]
        out[fmt] = {"overall": binary_metrics(part["label"].to_numpy(), part["logit"].to_numpy()),
                    "per_generator": {g: binary_metrics(p["label"].to_numpy(), p["logit"].to_numpy())
                                      for g, p in part.groupby("generator", sort=False)}}
    return out
