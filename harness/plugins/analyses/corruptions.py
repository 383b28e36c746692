"""Corruption robustness: JPEG, Gaussian blur and resizing (PPL section 5.2, Fig. 6(a)).

Each corruption is applied to the decoded image (PIL, before the detector's input policy),
identically to real and fake images, and the corrupted images are scored through the score
cache (``transform_key`` names the corruption). Every curve has an explicit identity point,
which is the clean scoring itself: ``jpeg`` none (JPEG at quality 100 is still lossy),
``blur`` sigma 0, ``resize`` scale 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from PIL import Image, ImageFilter

from harness import hookimpl
from harness.images import jpeg_roundtrip
from harness.analysis import Analysis, AnalysisContext, AnalysisResult
from harness.errors import HarnessError
from harness.scoring import score_samples
from harness.plugins.analyses.tde import analysis_workers, cache_dir_for, generator_order, skipped_table, stable_subsample

if TYPE_CHECKING:  # pandas loads where it is used: 'harness list' imports this module
    import pandas as pd

KINDS = ("jpeg", "blur", "resize")


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


@dataclass(frozen=True)
class Level:
    """One point of a corruption curve; ``transform`` None marks the identity point."""

    kind: str
    value: float | None
    label: str
    transform: Callable[[Image.Image], Image.Image] | None

    @property
    def key(self) -> str | None:
        return None if self.transform is None else f"corruption:{self.label}"


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
    description = "Accuracy per generator under JPEG compression, Gaussian blur and resizing."
    reference = "PPL, Sec. 5.2, Fig. 6(a)"
    defaults: dict[str, Any] = {
        "jpeg": [100, 90, 80, 70, 60],
        "blur": [0.5, 1.0, 1.5, 2.0, 2.5],
        "resize": [0.6, 0.8, 1.0, 1.2, 1.4],
        "batch_size": None,        # None: the run's eval.batch_size, else 64
        "workers": None,
        "max_per_group": 0,        # 0: every image
        "cache_dir": None,         # None: the run's eval.cache_dir, else the score cache; false: off
        "precision": "auto",
        "seed": 0,
    }

    def run(self, context: AnalysisContext) -> AnalysisResult:
        import pandas as pd

        cfg = self.config
        samples = stable_subsample(context.samples, cfg["max_per_group"], cfg["seed"])
        generators = generator_order(samples)
        batch_size = int(cfg["batch_size"] or context.config.get("eval", {}).get("batch_size") or 64)
        cache_dir = cache_dir_for(cfg, context)
        rows, skipped, scored = [], {}, {}
        for kind in KINDS:
            for level in levels(kind, list(cfg[kind])):
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
                                         context.detector.name)}
        tables = {"summary": summary_table, "per_generator": per_generator}
        if skipped:
            tables["skipped"] = skipped_table(sorted(skipped.items()))
        summary = {
            "images": int(len(scored[None])),
            "skipped": len(skipped),
            "mAcc": {row.condition: _round(row.mAcc) for row in summary_table.itertuples()},
        }
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


def plot_curves(per_generator: pd.DataFrame, generators: list[str], path, name: str):
    """One panel per corruption: accuracy per generator (thin) and the mean over generators (bold)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13.0, 3.8), layout="constrained")
    axes = fig.subplots(1, len(KINDS), sharey=True)
    for ax, kind in zip(axes, KINDS):
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
    fig.suptitle(f"Corruption robustness ({name})", fontsize=10)
    fig.savefig(path, dpi=110)
    return path


@hookimpl
def register_analyses(register):
    register(CorruptionsAnalysis)
