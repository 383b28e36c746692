"""Per-patch total direct effect (TDE) maps and their distribution statistics.

PPL paper, section 3.2, eq. 1: for an m x m grid over the detector's input,
``TDE(i, j) = delta_I - delta_{I-(i,j)}`` with ``delta`` the detector's logit (one-logit
detectors: logit_fake - logit_real is the logit itself) and ``I-(i,j)`` the input with cell
(i, j) set to ``fill`` (0 = black) in [0, 1] pixel space, before normalisation.
The definitions of the statistics are in ``docs/analyses.md``.
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch
from tqdm import tqdm

from harness import hookimpl
from harness.analysis import Analysis, AnalysisContext, AnalysisResult
from harness.data import SampleDataset, make_loader
from harness.patchgrid import grid_skip_reason, apply_masks, grid_masks, resolve_grid
from harness.runs import autocast
from harness.scoring import default_cache_dir, model_key, stamp
from harness.suite import FAKE, REAL, Sample

if TYPE_CHECKING:  # pandas loads where it is used: 'harness list' imports this module
    import pandas as pd

log = logging.getLogger(__name__)

CLASS_NAMES = {REAL: "real", FAKE: "fake"}
SAVE_EVERY = 20  # batches between cache writes
STAT_COLUMNS = ["mean", "std", "gini", "entropy", "effective_patches", "top1_share", "top10_share",
                "active_fraction", "few_patch_bias"]


# -- computing TDE --------------------------------------------------------------------------

@torch.no_grad()
def tde_batched(detector, x: torch.Tensor, m: int, *, fill: float = 0.0, batch_size: int = 256,
                amp: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """TDE maps of a batch of inputs ``x`` ``[B, ..., H, W]`` (already on the detector's device).

    The unmasked logits come from one forward; the B * m^2 masked variants are built on the
    device and scored ``batch_size`` at a time. Returns ``(logits [B], tde [B, m, m])`` float32.
    """
    device = x.device
    b, n = x.shape[0], m * m
    masks = grid_masks(x.shape[-2], x.shape[-1], m, device=device)
    with autocast(device, enabled=amp):
        base = detector(x).float()
        masked = torch.empty(b * n, device=device)
        for start in range(0, b * n, batch_size):
            idx = torch.arange(start, min(start + batch_size, b * n), device=device)
            variants = apply_masks(x[idx // n], masks[idx % n], fill)
            masked[start : start + len(idx)] = detector(variants).float()
    return base, (base[:, None] - masked.view(b, n)).view(b, m, m)


@torch.no_grad()
def tde_naive(detector, x: torch.Tensor, m: int, *, fill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: one forward per image and per masked variant, batch size 1."""
    masks = grid_masks(x.shape[-2], x.shape[-1], m, device=x.device)
    base = torch.empty(x.shape[0], device=x.device)
    tde = torch.empty(x.shape[0], m * m, device=x.device)
    for b in range(x.shape[0]):
        image = x[b : b + 1]
        base[b] = detector(image).float()[0]
        for k in range(m * m):
            tde[b, k] = base[b] - detector(apply_masks(image, masks[k : k + 1], fill)).float()[0]
    return base, tde.view(-1, m, m)


# -- statistics -----------------------------------------------------------------------------

def patch_statistics(tde: np.ndarray, active_fraction: float = 0.1) -> pd.DataFrame:
    """One row of statistics per TDE map (``tde`` ``[N, m, m]`` or ``[N, n]``).

    The distribution statistics use p = max(TDE, 0) / sum(max(TDE, 0)); a map without any
    positive TDE has no such distribution, and those statistics are NaN for it.
    """
    import pandas as pd

    t = np.asarray(tde, dtype=np.float64).reshape(len(tde), -1)
    n = t.shape[1]
    pos = np.clip(t, 0.0, None)
    mass = pos.sum(axis=1)
    has_mass = mass > 0
    p = np.divide(pos, mass[:, None], out=np.zeros_like(pos), where=has_mass[:, None])
    ranked = np.sort(p, axis=1)  # ascending
    ranks = np.arange(1, n + 1)
    # Gini of p (sum p = 1): 2 * sum_i i p_(i) / n - (n + 1) / n; one patch -> (n-1)/n, equal -> 0.
    gini = 2.0 * (ranked * ranks).sum(axis=1) / n - (n + 1) / n
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    top_k = max(1, math.ceil(0.1 * n))
    peak = t.max(axis=1)
    active = np.where(peak > 0, (t > active_fraction * peak[:, None]).mean(axis=1), 0.0)
    effective = np.exp(entropy)
    nan = np.where(has_mass, 1.0, np.nan)
    return pd.DataFrame({
        "mean": t.mean(axis=1),
        "std": t.std(axis=1),
        "gini": gini * nan,
        "entropy": entropy * nan,
        "effective_patches": effective * nan,
        "top1_share": ranked[:, -1] * nan,
        "top10_share": ranked[:, -top_k:].sum(axis=1) * nan,
        "active_fraction": active,
        "few_patch_bias": (1.0 - effective / n) * nan,
    })


def aggregate(per_image: pd.DataFrame, generators: list[str]) -> pd.DataFrame:
    """Mean of every statistic per generator x class, plus an ``all`` row per class."""
    import pandas as pd

    frames = []
    for generator, group in [(g, per_image[per_image.generator == g]) for g in generators] + [("all", per_image)]:
        for label, rows in group.groupby("label"):
            row = {"generator": generator, "class": CLASS_NAMES[int(label)], "images": len(rows),
                   "no_positive_tde": int(rows["gini"].isna().sum())}
            row.update({col: rows[col].mean() for col in STAT_COLUMNS})
            frames.append(row)
    return pd.DataFrame(frames)


# -- data -----------------------------------------------------------------------------------

def stable_subsample(samples: list[Sample], per_group: int | None, seed: int = 0) -> list[Sample]:
    """At most ``per_group`` samples per generator x class, chosen by a hash of each sample's
    ``portable_key`` (the same images whatever the order of the list and wherever the suite
    lies on disk); ``None`` or 0 keeps all."""
    if not per_group:
        return list(samples)
    keyed = sorted(range(len(samples)), key=lambda i: zlib.crc32(f"{seed}:{samples[i].portable_key}".encode()))
    kept, counts = set(), {}
    for i in keyed:
        group = (samples[i].generator, samples[i].label)
        if counts.get(group, 0) < per_group:
            counts[group] = counts.get(group, 0) + 1
            kept.add(i)
    return [s for i, s in enumerate(samples) if i in kept]  # in the suite's order


def iter_inputs(detector, samples: list[Sample], *, device: torch.device, batch_size: int, workers: int = 0,
                skipped: list[tuple[str, str]], desc: str = "") -> Iterator[tuple[list[int], torch.Tensor]]:
    """Yield ``(sample indices, inputs on device)``; undecodable files go to ``skipped``."""
    loader = make_loader(SampleDataset(samples, detector), batch_size=batch_size, workers=workers)
    for batch in tqdm(loader, desc=desc, disable=not desc, leave=False):
        skipped.extend((samples[i].path, reason) for i, reason in batch["skipped"])
        if "x" in batch:
            yield batch["index"].tolist(), batch["x"].to(device)


class TDECache:
    """Per-image TDE maps of one model key, stored in one ``.npz`` under the score cache root.

    The key is the score cache's model key (detector, configuration, input policy, weights,
    precision) with the grid and fill as its transform; an entry counts only while its file
    keeps the same size and modification time, as with cached scores.
    """

    def __init__(self, directory: Path | None, key: str):
        self.path = Path(directory) / f"tde-{key[:20]}.npz" if directory else None
        self.entries: dict[str, tuple[int, int, float, np.ndarray]] = {}
        if self.path and self.path.is_file():
            with np.load(self.path) as data:
                for row in zip(data["paths"], data["sizes"], data["mtimes"], data["logits"], data["tde"]):
                    self.entries[str(row[0])] = (int(row[1]), int(row[2]), float(row[3]), row[4])

    def get(self, path: str) -> tuple[float, np.ndarray] | None:
        entry = self.entries.get(path)
        try:
            st = stamp(path)
        except OSError:
            return None
        if entry is None or (entry[0], entry[1]) != (st.size, st.mtime_ns):
            return None
        return entry[2], entry[3]

    def put(self, path: str, logit: float, tde: np.ndarray) -> None:
        st = stamp(path)
        self.entries[path] = (st.size, st.mtime_ns, logit, tde)

    def save(self) -> None:
        if not self.path or not self.entries:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        paths = sorted(self.entries)
        rows = [self.entries[p] for p in paths]
        tmp = self.path.with_name(f"{self.path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, paths=np.array(paths), sizes=np.array([r[0] for r in rows], dtype=np.int64),
                 mtimes=np.array([r[1] for r in rows], dtype=np.int64),
                 logits=np.array([r[2] for r in rows], dtype=np.float32),
                 tde=np.stack([r[3] for r in rows]).astype(np.float32))
        tmp.replace(self.path)


def compute_tde(detector, samples: list[Sample], *, device: torch.device, m: int, fill: float = 0.0,
                batch_size: int = 256, images_per_batch: int = 16, workers: int = 0, amp: bool = False,
                cache_dir: Path | None = None) -> tuple[pd.DataFrame, np.ndarray, list[tuple[str, str]]]:
    """TDE maps of ``samples``, reading and extending the cache in ``cache_dir`` (None: no cache).

    Returns the decodable samples as a frame (path, generator, split, label, logit), their maps
    ``[N, m, m]`` in the same order, and the skipped files ``(path, reason)``.
    """
    import pandas as pd

    precision = "bf16-autocast" if (amp and device.type == "cuda") else "fp32"
    key = model_key(detector, precision=precision, transform_key=f"tde(grid={m}, fill={fill!r})")["key"]
    cache = TDECache(cache_dir, key)
    results = {s.path: cache.get(s.path) for s in samples}
    todo = list({s.path: s for s in samples if results[s.path] is None}.values())
    skipped: list[tuple[str, str]] = []
    if todo:
        log.info("TDE: %d images to compute, %d read from the cache", len(todo), len(samples) - len(todo))
        batches = iter_inputs(detector, todo, device=device, batch_size=images_per_batch, workers=workers,
                              skipped=skipped, desc=f"TDE {m}x{m}")
        for step, (indices, x) in enumerate(batches, start=1):
            base, tde = tde_batched(detector, x, m, fill=fill, batch_size=batch_size, amp=amp)
            for i, logit, t in zip(indices, base.cpu().tolist(), tde.cpu().numpy()):
                results[todo[i].path] = (logit, t)
                cache.put(todo[i].path, logit, t)
            if step % SAVE_EVERY == 0:  # a killed run keeps most of its maps
                cache.save()
        cache.save()
    kept = [s for s in samples if results[s.path] is not None]
    frame = pd.DataFrame([{"path": s.path, "generator": s.generator, "split": s.split, "label": s.label,
                           "logit": results[s.path][0]} for s in kept],
                         columns=["path", "generator", "split", "label", "logit"])
    maps = np.stack([results[s.path][1] for s in kept]) if kept else np.zeros((0, m, m), np.float32)
    return frame, maps, skipped


# -- figures --------------------------------------------------------------------------------

def _symmetric_limit(values: np.ndarray) -> float:
    limit = float(np.nanmax(np.abs(values))) if values.size else 0.0
    return limit if limit > 0 else 1.0


def plot_mean_heatmaps(frame: pd.DataFrame, maps: np.ndarray, generators: list[str], path: Path, title: str) -> Path:
    """Mean TDE map per generator (columns) and class (rows), one shared colour scale."""
    from matplotlib.figure import Figure

    classes = [c for c in (FAKE, REAL) if (frame.label == c).any()]
    cells = {(c, g): maps[((frame.label == c) & (frame.generator == g)).to_numpy()].mean(axis=0)
             for c in classes for g in generators if ((frame.label == c) & (frame.generator == g)).any()}
    limit = _symmetric_limit(np.stack(list(cells.values()))) if cells else 1.0
    fig = Figure(figsize=(2.2 * len(generators) + 1.0, 2.3 * len(classes) + 0.6), layout="constrained")
    axes = fig.subplots(len(classes), len(generators), squeeze=False)
    image = None
    for r, c in enumerate(classes):
        for k, g in enumerate(generators):
            ax = axes[r][k]
            ax.set_xticks([])
            ax.set_yticks([])
            if (c, g) in cells:
                image = ax.imshow(cells[(c, g)], cmap="RdBu_r", vmin=-limit, vmax=limit)
            if r == 0:
                ax.set_title(g, fontsize=9)
            if k == 0:
                ax.set_ylabel(CLASS_NAMES[c])
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="mean TDE (logit)")
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    return path


def plot_examples(detector, samples: list[Sample], maps: np.ndarray, logits: np.ndarray, path: Path,
                  title: str) -> Path:
    """Input image and its TDE map for each example (PPL Fig. 4)."""
    from matplotlib.figure import Figure

    dataset = SampleDataset(samples, detector)
    fig = Figure(figsize=(2.0 * len(samples) + 1.0, 4.4), layout="constrained")
    axes = fig.subplots(2, len(samples), squeeze=False)
    limit = _symmetric_limit(maps)
    image = None
    for k, sample in enumerate(samples):
        item = dataset[k]
        top, bottom = axes[0][k], axes[1][k]
        for ax in (top, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
        if item["error"] is None:
            x = item["x"]
            while x.dim() > 3:  # multi-view inputs (PatchCraft): show the first view
                x = x[0]
            top.imshow(x.permute(1, 2, 0).clamp(0, 1).numpy())
        top.set_title(f"{sample.generator}\nlogit {logits[k]:.2f}", fontsize=8)
        image = bottom.imshow(maps[k], cmap="RdBu_r", vmin=-limit, vmax=limit)
    fig.colorbar(image, ax=axes[1].tolist(), shrink=0.8, label="TDE (logit)")
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    return path


def plot_histogram(frame: pd.DataFrame, maps: np.ndarray, path: Path, title: str) -> Path:
    """Histogram of every per-patch TDE value, per class."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 3.6), layout="constrained")
    ax = fig.subplots()
    values = maps.reshape(len(maps), -1)
    bins = np.linspace(values.min(), values.max(), 60) if values.size and values.max() > values.min() else 60
    for c in (FAKE, REAL):
        selected = values[(frame.label == c).to_numpy()].ravel()
        if selected.size:
            ax.hist(selected, bins=bins, alpha=0.6, label=f"{CLASS_NAMES[c]} ({selected.size} patches)")
    ax.set_yscale("log")
    ax.set_xlabel("per-patch TDE (logit)")
    ax.set_ylabel("patches")
    ax.legend()
    ax.set_title(title, fontsize=10)
    fig.savefig(path, dpi=110)
    return path


def pick_examples(frame: pd.DataFrame, generators: list[str], count: int) -> list[int]:
    """Row indices of up to ``count`` fake images, taken round-robin over the generators."""
    queues = {g: list(frame.index[(frame.generator == g) & (frame.label == FAKE)]) for g in generators}
    picked: list[int] = []
    while len(picked) < count and any(queues.values()):
        for g in generators:
            if queues[g] and len(picked) < count:
                picked.append(queues[g].pop(0))
    return picked


def skipped_table(skipped: list[tuple[str, str]]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(skipped, columns=["path", "reason"])


def generator_order(samples: list[Sample]) -> list[str]:
    """Generators in the order the samples list them (the suite's order)."""
    return list(dict.fromkeys(s.generator for s in samples))


def cache_dir_for(analysis_config: dict, context: AnalysisContext) -> Path | None:
    """``cache_dir`` of the analysis, else the run's ``eval.cache_dir``, else the score cache's
    default; ``cache_dir = false`` (or the run's ``eval.cache = false``) turns caching off."""
    directory = analysis_config.get("cache_dir")
    evaluation = context.config.get("eval", {})
    if directory is False or (directory is None and evaluation.get("cache", True) is False):
        return None
    directory = directory or evaluation.get("cache_dir")
    return Path(directory) if directory else default_cache_dir()


def variant_batch_size(requested, device: torch.device) -> int:
    """Masked variants per forward: ``auto`` = 256 on CUDA, 32 on CPU (where bigger batches
    fall out of cache and run slower per image)."""
    if requested in (None, "auto"):
        return 256 if device.type == "cuda" else 32
    return int(requested)


def analysis_workers(analysis_config: dict, context: AnalysisContext) -> int:
    workers = analysis_config.get("workers")
    return int(workers if workers is not None else context.config.get("eval", {}).get("workers", 0))


# -- the analysis ---------------------------------------------------------------------------

#: Settings schemas the analyses share: ``"auto"`` or a positive integer; a cache folder or false.
AUTO_OR_POSITIVE = {"type": ["string", "integer"], "pattern": "^auto$", "minimum": 1,
                    "description": "auto or an integer >= 1"}
CACHE_DIR_SETTING = {"type": ["string", "boolean", "null"], "description": "a folder, false (off) or unset"}

class TDEAnalysis(Analysis):
    name = "tde"
    description = "Per-patch total direct effect maps (PPL eq. 1) and how concentrated they are."
    reference = "PPL, Sec. 3.2, eq. 1, Fig. 4"
    defaults: dict[str, Any] = {
        "grid": "auto",            # m; "auto" = the detector's token grid, else 8
        "fill": 0.0,               # value of a masked cell in [0, 1] pixel space
        "batch_size": "auto",      # masked variants per forward: 256 on CUDA, 32 on CPU
        "images_per_batch": 16,
        "workers": None,           # None: the run's eval.workers
        "max_per_group": 50,       # images per generator x class (0: all)
        "active_fraction": 0.1,    # active patch: TDE > this x the image's largest TDE
        "examples": 8,
        "amp": False,              # TDE are differences of logits: fp32 unless asked
        "cache_dir": None,         # None: the run's eval.cache_dir, else the score cache; false: off
        "seed": 0,
    }
    settings = {
        "grid": AUTO_OR_POSITIVE,
        "fill": {"minimum": 0, "maximum": 1},
        "batch_size": AUTO_OR_POSITIVE,
        "images_per_batch": {"minimum": 1},
        "workers": {"type": ["integer", "null"], "minimum": 0},
        "max_per_group": {"minimum": 0},
        "active_fraction": {"exclusiveMinimum": 0, "maximum": 1},
        "examples": {"minimum": 0},
        "cache_dir": CACHE_DIR_SETTING,
    }

    @classmethod
    def skip_reason(cls, detector_cls) -> str | None:
        return grid_skip_reason(detector_cls)

    def run(self, context: AnalysisContext) -> AnalysisResult:
        import pandas as pd

        cfg = self.config
        detector = context.detector
        m = resolve_grid(detector, cfg["grid"])
        fill = float(cfg["fill"])
        samples = stable_subsample(context.samples, cfg["max_per_group"], cfg["seed"])
        generators = generator_order(samples)
        frame, maps, skipped = compute_tde(
            detector, samples, device=context.device, m=m, fill=fill,
            batch_size=variant_batch_size(cfg["batch_size"], context.device),
            images_per_batch=int(cfg["images_per_batch"]), workers=analysis_workers(cfg, context),
            amp=bool(cfg["amp"]), cache_dir=cache_dir_for(cfg, context))
        stats = patch_statistics(maps, float(cfg["active_fraction"]))
        per_image = pd.concat([frame.reset_index(drop=True), stats], axis=1)
        summary_table = aggregate(per_image, generators)

        context.out_dir.mkdir(parents=True, exist_ok=True)
        label = f"{detector.name}, {m}x{m} grid"
        figures = {}
        if len(frame):
            figures["mean_heatmaps"] = plot_mean_heatmaps(
                frame, maps, generators, context.out_dir / "tde_mean_heatmaps.png", f"Mean TDE per generator ({label})")
            figures["histogram"] = plot_histogram(
                frame, maps, context.out_dir / "tde_histogram.png", f"Per-patch TDE ({label})")
            picked = pick_examples(frame, generators, int(cfg["examples"]))
            if picked:
                by_path = {s.path: s for s in samples}
                figures["examples"] = plot_examples(
                    detector, [by_path[frame.path[i]] for i in picked], maps[picked],
                    frame.logit.to_numpy()[picked], context.out_dir / "tde_examples.png", f"TDE maps ({label})")

        tables = {"summary": summary_table, "per_image": per_image}
        if skipped:
            tables["skipped"] = skipped_table(skipped)
        return AnalysisResult(tables=tables, figures=figures, summary=summarise(per_image, m, fill, len(skipped)))


def summarise(per_image: pd.DataFrame, m: int, fill: float, skipped: int) -> dict[str, Any]:
    """The few numbers that go into results.json (fake images only: PPL's object)."""
    import pandas as pd

    fakes = per_image[per_image.label == FAKE]

    def mean(col, rows=fakes):
        value = rows[col].mean()
        return None if pd.isna(value) else round(float(value), 6)

    return {
        "grid": m,
        "fill": fill,
        "images": int(len(per_image)),
        "skipped": skipped,
        "few_patch_bias": mean("few_patch_bias"),
        "effective_patches": mean("effective_patches"),
        "gini": mean("gini"),
        "top1_share": mean("top1_share"),
        "active_fraction": mean("active_fraction"),
        "few_patch_bias_per_generator": {g: mean("few_patch_bias", rows) for g, rows in fakes.groupby("generator")},
    }


@hookimpl
def register_analyses(register):
    register(TDEAnalysis)
