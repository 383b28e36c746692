"""Masking robustness: random grid-cell masking, one square of growing size, TDE-targeted masking.

All masking happens on the detector's input in [0, 1] pixel space (before normalisation),
the cells filled by ``fill``: ``zero`` (black, pixel value 0: the default, as before), ``mean``
(the detector's normalisation mean, i.e. zero after normalisation), ``blur`` (a Gaussian-blurred
copy of the image) or a constant in [0, 1]. The PPL paper's "set to zero" fits both of the first
two readings. An image is called fake when its logit is >= 0 (the metrics' convention).
Definitions: ``docs/analyses.md``.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from harness import hookimpl
from harness.analysis import Analysis, AnalysisContext, AnalysisResult
from harness.errors import HarnessError
from harness.patchgrid import grid_skip_reason, apply_masks, cells_to_mask, resolve_grid, square_masks, square_positions
from harness.runs import autocast
from harness.suite import FAKE
from harness.plugins.analyses.tde import (
    AUTO_OR_POSITIVE,
    CACHE_DIR_SETTING,
    analysis_workers,
    cache_dir_for,
    compute_tde,
    generator_order,
    iter_inputs,
    skipped_table,
    stable_subsample,
    variant_batch_size,
)

if TYPE_CHECKING:  # pandas loads where it is used: 'harness list' imports this module
    import pandas as pd


def random_cells(key: str, seed: int, n: int) -> np.ndarray:
    """The order in which the image with ``key`` (its ``Sample.portable_key``) loses its cells
    under ``seed``: masking ratio r masks the first round(r * n), so a higher ratio always masks
    a superset of a lower one."""
    return np.random.default_rng([seed, zlib.crc32(key.encode())]).permutation(n)


FILLS = ("zero", "mean", "blur")


def parse_fill(value) -> str | float:
    """``fill``: one of :data:`FILLS`, or a constant pixel value in [0, 1]."""
    if isinstance(value, str) and value in FILLS:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= float(value) <= 1:
        return "zero" if float(value) == 0 else float(value)
    raise HarnessError(f"analyses.masking.fill = {value!r}: use one of {', '.join(FILLS)} or a constant in [0, 1]")


def blur_sigma(cfg_sigma, cell_px: float) -> float:
    """The blur fill's sigma in input pixels: as configured, or ("auto") half a grid cell's side,
    so that the cell keeps its colours but loses the fine detail detectors read."""
    sigma = cell_px / 2 if cfg_sigma in (None, "auto") else float(cfg_sigma)
    if sigma <= 0:
        raise HarnessError(f"analyses.masking.blur_sigma must be > 0, got {cfg_sigma!r}")
    return sigma


def fill_values(x: torch.Tensor, fill: str | float, detector, sigma: float = 1.0) -> torch.Tensor | float:
    """What masked pixels become: a scalar, a per-channel tensor ``[C, 1, 1]`` (``mean``), or a
    per-image tensor of ``x``'s shape (``blur``)."""
    if fill == "zero":
        return 0.0
    if isinstance(fill, float):
        return fill
    if fill == "mean":
        mean = detector.input_policy(False).mean
        if mean is None:  # no normalisation: its zero is the input's zero
            return 0.0
        return torch.tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    from torchvision.transforms.functional import gaussian_blur

    h, w = x.shape[-2:]
    kernel = min(2 * int(np.ceil(3 * sigma)) + 1, 2 * min(h, w) - 1)  # reflect padding needs pad < side
    flat = x.reshape(-1, *x.shape[-3:])
    return gaussian_blur(flat, [kernel, kernel], [sigma, sigma]).view_as(x)


@torch.no_grad()
def forward_masked(detector, x: torch.Tensor, image_index: torch.Tensor, masks: torch.Tensor, *,
                   fill: float | torch.Tensor = 0.0, batch_size: int = 256, amp: bool = True) -> torch.Tensor:
    """Logits of ``x[image_index[v]]`` with ``masks[v]`` filled, for every variant v, in full batches.

    ``fill`` is a scalar, a tensor that broadcasts over one image, or one fill image per input
    image (a tensor of ``x``'s shape, indexed like ``x``)."""
    per_image = isinstance(fill, torch.Tensor) and fill.shape == x.shape
    out = torch.empty(len(image_index), device=x.device)
    with autocast(x.device, enabled=amp):
        for start in range(0, len(image_index), batch_size):
            stop = min(start + batch_size, len(image_index))
            index = image_index[start:stop]
            values = fill[index] if per_image else fill
            out[start:stop] = detector(apply_masks(x[index], masks[start:stop], values)).float()
    return out


def recall_and_accuracy(labels: np.ndarray, logits: np.ndarray) -> tuple[float, float]:
    """Recall on fakes and accuracy at logit 0 (NaN recall without fakes)."""
    from sklearn.metrics import accuracy_score, recall_score

    predicted = (logits >= 0).astype(int)
    recall = recall_score(labels, predicted, pos_label=FAKE, zero_division=np.nan) if (labels == FAKE).any() else np.nan
    return float(recall), float(accuracy_score(labels, predicted))


def decline(recall_0: float, recall_r: float) -> float:
    """(recall_0 - recall_r) / recall_0, as in PPL Fig. 6(b); NaN when recall_0 is 0."""
    return (recall_0 - recall_r) / recall_0 if recall_0 > 0 else float("nan")


class MaskingAnalysis(Analysis):
    name = "masking"
    description = "Recall and accuracy under random, single-square and TDE-targeted masking."
    reference = "PPL, Fig. 3(b) and Fig. 6(b)"
    defaults: dict[str, Any] = {
        "grid": "auto",                  # m; "auto" = the detector's token grid, else 8
        "fill": "zero",                  # zero | mean | blur | a constant in [0, 1] (module docstring)
        "blur_sigma": "auto",            # blur fill: sigma in input pixels; auto = half a grid cell
        "ratios": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
        "seeds": [0, 1, 2],
        "square_sizes": [0.125, 0.25, 0.375, 0.5],   # square side as a fraction of the input side
        "targeted_fractions": [0.02, 0.05, 0.1, 0.25, 0.5],  # k = max(1, round(f * m^2)) cells
        "batch_size": "auto",            # masked variants per forward: 256 on CUDA, 32 on CPU
        "images_per_batch": 16,
        "workers": None,
        "max_per_group": 50,
        "amp": True,                     # as scoring: bf16 autocast on CUDA, fp32 elsewhere
        "cache_dir": None,               # for the TDE maps that targeted masking needs
        "seed": 0,
    }
    settings = {
        "grid": AUTO_OR_POSITIVE,
        "fill": {"minimum": 0, "maximum": 1},
        "batch_size": AUTO_OR_POSITIVE,
        "images_per_batch": {"minimum": 1},
        "workers": {"type": ["integer", "null"], "minimum": 0},
        "max_per_group": {"minimum": 0},
        "cache_dir": CACHE_DIR_SETTING,
    }

    @classmethod
    def skip_reason(cls, detector_cls) -> str | None:
        return grid_skip_reason(detector_cls)

    def run(self, context: AnalysisContext) -> AnalysisResult:
        import pandas as pd

        cfg = self.config
        detector, device = context.detector, context.device
        m = resolve_grid(detector, cfg["grid"])
        n = m * m
        fill, amp = parse_fill(cfg["fill"]), bool(cfg["amp"])
        # TDE ranks the cells for targeted masking by the tde analysis' own definition (a constant
        # fill); with the mean or blur fill the ranking stays the zero-filled TDE.
        tde_fill = fill if isinstance(fill, float) else 0.0
        batch_size = variant_batch_size(cfg["batch_size"], device)
        ratios = [float(r) for r in cfg["ratios"]]
        if any(not 0 <= r < 1 for r in ratios):
            raise HarnessError(f"analyses.masking.ratios must lie in [0, 1), got {ratios}")
        seeds = [int(s) for s in cfg["seeds"]]
        fractions = [float(f) for f in cfg["targeted_fractions"]]
        samples = stable_subsample(context.samples, cfg["max_per_group"], cfg["seed"])
        generators = generator_order(samples)
        workers = analysis_workers(cfg, context)

        tde_maps: dict[str, np.ndarray] = {}
        skipped: list[tuple[str, str]] = []
        if fractions:
            frame, maps, skipped = compute_tde(
                detector, samples, device=device, m=m, fill=tde_fill, batch_size=batch_size,
                images_per_batch=int(cfg["images_per_batch"]), workers=workers, cache_dir=cache_dir_for(cfg, context))
            tde_maps = dict(zip(frame.path, maps.reshape(len(maps), n)))

        clean_rows, random_rows, square_rows, targeted_rows = [], [], [], []
        seen_skips = {path for path, _ in skipped}
        sigma = None
        loop_skipped: list[tuple[str, str]] = []
        for indices, x in iter_inputs(detector, samples, device=device, batch_size=int(cfg["images_per_batch"]),
                                      workers=workers, skipped=loop_skipped, desc="masking"):
            batch = [samples[i] for i in indices]
            h, w = x.shape[-2:]
            b = len(batch)
            sigma = blur_sigma(cfg["blur_sigma"], min(h, w) / m) if fill == "blur" else None
            values = fill_values(x, fill, detector, sigma or 1.0)
            common = [{"path": s.path, "generator": s.generator, "label": s.label} for s in batch]
            clean = forward_masked(detector, x, torch.arange(b, device=device),
                                   torch.zeros(b, h, w, dtype=torch.bool, device=device), batch_size=batch_size,
                                   amp=amp).cpu()
            clean_rows += [{**common[i], "logit": float(clean[i])} for i in range(b)]

            # Random masking: every (ratio, seed) variant of every image, one stream of batches.
            orders = {seed: [random_cells(s.portable_key, seed, n) for s in batch] for seed in seeds}
            conditions = [(r, seed) for r in ratios for seed in seeds]
            cells = torch.zeros(len(conditions) * b, n, dtype=torch.bool)
            for c, (r, seed) in enumerate(conditions):
                k = round(r * n)
                for i in range(b):
                    cells[c * b + i, orders[seed][i][:k]] = True
            masks = cells_to_mask(cells.view(-1, m, m).to(device), h, w)
            index = torch.arange(b, device=device).repeat(len(conditions))
            logits = forward_masked(detector, x, index, masks, fill=values, batch_size=batch_size, amp=amp).cpu()
            for c, (r, seed) in enumerate(conditions):
                for i in range(b):
                    random_rows.append({**common[i], "ratio": r, "masked_cells": round(r * n), "seed": seed,
                                        "logit": float(logits[c * b + i])})

            # One square of growing size at every position of a stride-side tiling.
            for size in cfg["square_sizes"]:
                side = max(1, round(float(size) * min(h, w)))
                positions = square_positions(h, w, side)
                squares = square_masks(h, w, side, device=device)
                p = len(positions)
                index = torch.arange(b, device=device).repeat_interleave(p)
                logits = forward_masked(detector, x, index, squares.repeat(b, 1, 1), fill=values,
                                        batch_size=batch_size, amp=amp).cpu().view(b, p)
                for i in range(b):
                    # The worst square pushes the logit furthest towards the wrong class.
                    worst = int(logits[i].argmin() if batch[i].label == FAKE else logits[i].argmax())
                    square_rows.append({**common[i], "size": float(size), "side_px": side,
                                        "clean_logit": float(clean[i]), "position_logits": logits[i].numpy(),
                                        "worst_top": positions[worst][0], "worst_left": positions[worst][1],
                                        "worst_logit": float(logits[i, worst])})

            # Targeted: the k cells of highest TDE vs the k cells of lowest TDE.
            have = [i for i, s in enumerate(batch) if s.path in tde_maps]
            if fractions and have:
                ks = [max(1, round(f * n)) for f in fractions]
                cells = torch.zeros(len(ks) * 2 * len(have), n, dtype=torch.bool)
                order = {("top", i): np.argsort(-tde_maps[batch[i].path], kind="stable") for i in have}
                order.update({("bottom", i): np.argsort(tde_maps[batch[i].path], kind="stable") for i in have})
                row = 0
                for k in ks:
                    for which in ("top", "bottom"):
                        for i in have:
                            cells[row, order[which, i][:k]] = True
                            row += 1
                masks = cells_to_mask(cells.view(-1, m, m).to(device), h, w)
                index = torch.tensor(have, device=device).repeat(len(ks) * 2)
                logits = forward_masked(detector, x, index, masks, fill=values, batch_size=batch_size, amp=amp).cpu()
                row = 0
                for f, k in zip(fractions, ks):
                    for which in ("top", "bottom"):
                        for i in have:
                            targeted_rows.append({**common[i], "fraction": f, "k": k, "which": which,
                                                  "logit": float(logits[row])})
                            row += 1

        skipped += [item for item in loop_skipped if item[0] not in seen_skips]
        clean_frame = pd.DataFrame(clean_rows)
        tables: dict[str, pd.DataFrame] = {}
        figures = {}
        context.out_dir.mkdir(parents=True, exist_ok=True)
        summary: dict[str, Any] = {"grid": m, "fill": fill, "tde_fill": tde_fill, "images": len(clean_rows),
                                   "skipped": len(skipped)}
        if fill == "blur":
            summary["blur_sigma"] = sigma
        if clean_rows:
            summary["recall_clean"], summary["acc_clean"] = map(_round, recall_and_accuracy(
                clean_frame.label.to_numpy(), clean_frame.logit.to_numpy()))
        if random_rows:
            tables["random"], tables["random_per_generator"] = random_tables(
                pd.DataFrame(random_rows), clean_frame, generators)
            figures["random_masking"] = plot_random(tables["random"], tables["random_per_generator"], generators,
                                                    context.out_dir / "masking_random.png", detector.name)
            summary["recall_decline"] = {str(r.ratio): _round(r.recall_decline) for r in tables["random"].itertuples()}
            summary["acc"] = {str(r.ratio): _round(r.acc) for r in tables["random"].itertuples()}
        if square_rows:
            tables["square"], tables["square_per_image"] = square_tables(pd.DataFrame(square_rows))
            figures["square_masking"] = plot_square(tables["square"], context.out_dir / "masking_square.png",
                                                    detector.name)
            summary["square_acc_drop"] = {str(r.size): _round(r.acc_drop) for r in tables["square"].itertuples()}
            summary["square_worst_per_image_acc"] = {
                str(r.size): _round(r.acc_worst_per_image) for r in tables["square"].itertuples()}
        if targeted_rows:
            tables["targeted"] = targeted_table(pd.DataFrame(targeted_rows), clean_frame)
            figures["targeted_masking"] = plot_targeted(tables["targeted"], context.out_dir / "masking_targeted.png",
                                                        detector.name)
            summary["targeted_recall"] = {
                which: {str(r.fraction): _round(getattr(r, f"recall_{which}")) for r in tables["targeted"].itertuples()}
                for which in ("top", "bottom")}
        if skipped:
            tables["skipped"] = skipped_table(skipped)
        return AnalysisResult(tables=tables, figures=figures, summary=summary)


def _round(value) -> float | None:
    import pandas as pd

    return None if value is None or pd.isna(value) else round(float(value), 6)


# -- tables ---------------------------------------------------------------------------------

def random_tables(frame: pd.DataFrame, clean: pd.DataFrame, generators: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per ratio (mean and std over seeds) and per generator x ratio (means over seeds); the
    decline is relative to the recall of the unmasked inputs (``clean``) of the same images."""
    import pandas as pd

    def per_seed(rows: pd.DataFrame, clean_rows: pd.DataFrame) -> pd.DataFrame:
        recall_0 = recall_and_accuracy(clean_rows.label.to_numpy(), clean_rows.logit.to_numpy())[0]
        out = []
        for (ratio, seed), group in rows.groupby(["ratio", "seed"], sort=True):
            recall, acc = recall_and_accuracy(group.label.to_numpy(), group.logit.to_numpy())
            out.append({"ratio": ratio, "masked_cells": int(group.masked_cells.iloc[0]), "seed": seed,
                        "recall": recall, "acc": acc})
        out = pd.DataFrame(out)
        out["recall_decline"] = [decline(recall_0, r) for r in out.recall]
        return out

    overall = per_seed(frame, clean)
    table = overall.groupby(["ratio", "masked_cells"], as_index=False).agg(
        recall=("recall", "mean"), recall_std=("recall", "std"), recall_decline=("recall_decline", "mean"),
        recall_decline_std=("recall_decline", "std"), acc=("acc", "mean"), acc_std=("acc", "std"),
        seeds=("seed", "nunique"))
    rows = []
    for generator in generators:
        subset = frame[frame.generator == generator]
        if len(subset):
            stats = per_seed(subset, clean[clean.generator == generator]).groupby("ratio", as_index=False)[["recall", "recall_decline", "acc"]].mean()
            rows.append(stats.assign(generator=generator))
    per_generator = pd.concat(rows, ignore_index=True)[["generator", "ratio", "recall", "recall_decline", "acc"]]
    return table, per_generator


def square_tables(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per square size: mean over positions, the worst single position over the dataset, and
    each image under its own worst square; plus the per-image worst squares."""
    import pandas as pd

    rows = []
    for (size, side), group in frame.groupby(["size", "side_px"], sort=True):
        labels = group.label.to_numpy()
        clean_recall, clean_acc = recall_and_accuracy(labels, group.clean_logit.to_numpy())
        per_position = np.stack(group.position_logits.to_numpy())  # [images, positions]
        scores = [recall_and_accuracy(labels, per_position[:, p]) for p in range(per_position.shape[1])]
        recalls, accs = np.array([s[0] for s in scores]), np.array([s[1] for s in scores])
        worst_recall, worst_acc = recall_and_accuracy(labels, group.worst_logit.to_numpy())
        rows.append({"size": size, "side_px": side, "positions": per_position.shape[1],
                     "acc_clean": clean_acc, "acc": accs.mean(), "acc_drop": clean_acc - accs.mean(),
                     "acc_worst_position": accs.min(), "acc_worst_per_image": worst_acc,
                     "recall_clean": clean_recall, "recall": recalls.mean(), "recall_drop": clean_recall - recalls.mean(),
                     "recall_worst_position": recalls.min(), "recall_worst_per_image": worst_recall})
    per_image = frame.drop(columns=["position_logits"]).assign(
        flipped=lambda f: ((f.clean_logit >= 0) == (f.label == FAKE)) & ((f.worst_logit >= 0) != (f.label == FAKE)))
    return pd.DataFrame(rows), per_image


def targeted_table(frame: pd.DataFrame, clean: pd.DataFrame) -> pd.DataFrame:
    """Recall and accuracy with the top-k vs the bottom-k cells by TDE masked."""
    import pandas as pd

    clean = clean[clean.path.isin(frame.path)]
    recall_0 = recall_and_accuracy(clean.label.to_numpy(), clean.logit.to_numpy())[0]
    rows = []
    for (fraction, k), group in frame.groupby(["fraction", "k"], sort=True):
        row = {"fraction": fraction, "k": k}
        for which in ("top", "bottom"):
            part = group[group.which == which]
            recall, acc = recall_and_accuracy(part.label.to_numpy(), part.logit.to_numpy())
            row.update({f"recall_{which}": recall, f"acc_{which}": acc,
                        f"recall_decline_{which}": decline(recall_0, recall)})
        rows.append(row)
    return pd.DataFrame(rows)


# -- figures --------------------------------------------------------------------------------

def plot_random(table: pd.DataFrame, per_generator: pd.DataFrame, generators: list[str], path, name: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    for generator in generators:
        rows = per_generator[per_generator.generator == generator]
        left.plot(rows.ratio, rows.recall_decline, marker=".", alpha=0.6, label=generator)
        right.plot(rows.ratio, rows.acc, marker=".", alpha=0.6, label=generator)
    left.errorbar(table.ratio, table.recall_decline, yerr=table.recall_decline_std.fillna(0), color="black",
                  linewidth=2, label="all")
    right.errorbar(table.ratio, table.acc, yerr=table.acc_std.fillna(0), color="black", linewidth=2, label="all")
    left.set(xlabel="masked ratio of grid cells", ylabel="recall decline (r0 - r) / r0", title="Recall decline")
    right.set(xlabel="masked ratio of grid cells", ylabel="accuracy", title="Accuracy")
    left.legend(fontsize=7)
    fig.suptitle(f"Random masking ({name})", fontsize=10)
    fig.savefig(path, dpi=110)
    return path


def plot_square(table: pd.DataFrame, path, name: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 3.8), layout="constrained")
    ax = fig.subplots()
    ax.plot(table.side_px, table.acc, marker="o", label="accuracy, mean over positions")
    ax.plot(table.side_px, table.acc_worst_per_image, marker="o", label="accuracy, each image's worst square")
    ax.plot(table.side_px, table.recall, marker="s", linestyle="--", label="recall, mean over positions")
    ax.plot(table.side_px, table.recall_worst_per_image, marker="s", linestyle="--",
            label="recall, each image's worst square")
    ax.axhline(float(table.acc_clean.iloc[0]), color="grey", linewidth=0.8, label="accuracy, clean")
    ax.set(xlabel="square side (pixels of the detector input)", ylabel="rate", title=f"One masked square ({name})")
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    return path


def plot_targeted(table: pd.DataFrame, path, name: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 3.8), layout="constrained")
    ax = fig.subplots()
    ax.plot(table.k, table.recall_top, marker="o", label="top-k cells by TDE masked")
    ax.plot(table.k, table.recall_bottom, marker="o", label="bottom-k cells by TDE masked")
    ax.set_xscale("log")
    ax.set(xlabel="masked cells k", ylabel="recall on fakes", title=f"Targeted masking ({name})")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    return path


@hookimpl
def register_analyses(register):
    register(MaskingAnalysis)
