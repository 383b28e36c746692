"""Per-generator and cross-generator metrics from per-image logits (scikit-learn based).

Every detector emits a raw logit whose sigmoid is P(fake); an image is called fake when
``logit >= threshold`` (scikit-learn's ``roc_curve`` convention), so accuracy "at 0.5" is
accuracy at logit 0. Thresholds are chosen and applied in logit space, where saturated
probabilities cannot tie.

Metrics that a subset cannot define (AUC with one class, say) are ``None``, never NaN, so
that ``results.json`` stays strict JSON.

Calibration treats sigmoid(logit) as the stated P(fake): ``ece`` is the expected calibration
error over :data:`ECE_BINS` equal-width bins of P(fake) (sum over bins of the bin's share of
images times |fraction of fakes - mean P(fake)| in it), ``ece_balanced`` the same with each
class weighted to half of the total (so a test set of 90% reals cannot hide a miscalibrated
fake class), ``nll`` the mean negative log-likelihood (log loss, natural log) and ``brier``
the mean squared error of P(fake).
"""

from __future__ import annotations

import logging
import math
import sys
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    roc_auc_score,
    roc_curve,
)

log = logging.getLogger(__name__)

#: Keys of one metrics dictionary, in table order.
METRICS = (
    "n", "n_real", "n_fake", "acc", "real_acc", "fake_acc", "balanced_acc", "ap", "auc", "eer",
    "tpr_at_fpr_1", "tpr_at_fpr_5", "acc_val_threshold", "val_threshold", "oracle_acc", "oracle_threshold",
    "ece", "ece_balanced", "nll", "brier",
)
#: Calibration metrics (lower is better); the summary carries them for the pooled test set.
CALIBRATION_METRICS = ("ece", "ece_balanced", "nll", "brier")
#: Equal-width bins of P(fake) for the ECE and the reliability diagram (Guo et al. 2017 use 15;
#: 10 keeps a few hundred images per generator from leaving most bins near-empty).
ECE_BINS = 10
#: Metrics that describe how good a detector is (the ones a table or a protocol may pick).
SCORE_METRICS = (
    "acc", "real_acc", "fake_acc", "balanced_acc", "ap", "auc", "eer",
    "tpr_at_fpr_1", "tpr_at_fpr_5", "acc_val_threshold", "oracle_acc", "ece", "ece_balanced", "nll", "brier",
)


def _clean(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def sigmoid(logits) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -logits))


def _accuracy_at(labels: np.ndarray, logits: np.ndarray, threshold: float) -> float | None:
    if labels.size == 0:
        return None
    return float(accuracy_score(labels, (logits >= threshold).astype(int)))


def best_threshold(labels: Sequence[int], logits: Sequence[float]) -> tuple[float | None, float | None]:
    """The logit threshold with the highest accuracy on these scores, and that accuracy.

    Candidates are the thresholds of the ROC curve; ties go to the first (highest) one, which is
    then moved to the middle of the gap below it (to the next lower score): every threshold in
    that gap classifies these scores alike, and the middle does not hug the fakes' lowest score.
    ``(None, None)`` when the scores hold one class only.
    """
    labels = np.asarray(labels, dtype=int)
    logits = np.asarray(logits, dtype=np.float64)
    n_pos, n_neg = int(labels.sum()), int((1 - labels).sum())
    if n_pos == 0 or n_neg == 0:
        return None, None
    fpr, tpr, thresholds = roc_curve(labels, logits, drop_intermediate=False)
    correct = tpr * n_pos + (1 - fpr) * n_neg
    best = int(np.argmax(correct))
    threshold = float(thresholds[best])
    if not math.isfinite(threshold):  # the "call nothing fake" point
        threshold = float(np.nextafter(logits.max(), np.inf))
    elif (logits < threshold).any():
        threshold = (threshold + float(logits[logits < threshold].max())) / 2
    return threshold, float(correct[best] / labels.size)


def equal_error_rate(labels: np.ndarray, logits: np.ndarray) -> float:
    """EER: where the false-positive rate meets the false-negative rate on the ROC curve.

    Linear interpolation between the two ROC points that bracket the crossing.
    """
    fpr, tpr, _ = roc_curve(labels, logits, drop_intermediate=False)
    fnr = 1.0 - tpr
    diff = fnr - fpr  # falls from 1 (first point) to -1 (last point) along the curve
    cross = int(np.argmax(diff <= 0))
    if diff[cross] == 0:
        return float(fpr[cross])
    # interpolate between point cross-1 (diff > 0) and cross (diff < 0)
    w = diff[cross - 1] / (diff[cross - 1] - diff[cross])
    return float(fpr[cross - 1] + w * (fpr[cross] - fpr[cross - 1]))


def tpr_at_fpr(labels: np.ndarray, logits: np.ndarray, max_fpr: float) -> float:
    """The highest true-positive rate among operating points with FPR <= ``max_fpr``."""
    fpr, tpr, _ = roc_curve(labels, logits, drop_intermediate=False)
    return float(tpr[fpr <= max_fpr + 1e-12].max())


def reliability_bins(labels, logits, n_bins: int = ECE_BINS, weights=None) -> pd.DataFrame:
    """Per equal-width bin of P(fake) over [0, 1] (the last bin closed): weight, mean P(fake),
    fraction of fakes. Empty bins have weight 0 and NaN means."""
    labels = np.asarray(labels, dtype=np.float64)
    probs = sigmoid(logits)
    weights = np.ones_like(probs) if weights is None else np.asarray(weights, dtype=np.float64)
    index = np.minimum((probs * n_bins).astype(int), n_bins - 1)
    total = np.bincount(index, weights=weights, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(index, weights=weights * probs, minlength=n_bins) / total
        frequency = np.bincount(index, weights=weights * labels, minlength=n_bins) / total
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return pd.DataFrame({"lo": edges[:-1], "hi": edges[1:], "weight": total,
                         "mean_p_fake": confidence, "fraction_fake": frequency})


def expected_calibration_error(labels, logits, n_bins: int = ECE_BINS, balanced: bool = False) -> float | None:
    """ECE over equal-width bins of P(fake); ``balanced`` weights each class to half the total."""
    labels = np.asarray(labels, dtype=int)
    if labels.size == 0:
        return None
    weights = None
    if balanced:
        n_fake = int(labels.sum())
        n_real = labels.size - n_fake
        if n_fake == 0 or n_real == 0:
            return None
        weights = np.where(labels == 1, 0.5 / n_fake, 0.5 / n_real)
    bins = reliability_bins(labels, logits, n_bins, weights)
    used = bins[bins.weight > 0]
    share = used.weight / used.weight.sum()
    return float((share * (used.fraction_fake - used.mean_p_fake).abs()).sum())


def negative_log_likelihood(labels, logits) -> float | None:
    """Mean -log P(true class), computed from logits (softplus) so saturated scores stay finite."""
    labels = np.asarray(labels, dtype=int)
    if labels.size == 0:
        return None
    logits = np.asarray(logits, dtype=np.float64)
    return float(np.mean(np.logaddexp(0.0, np.where(labels == 1, -logits, logits))))


def calibration_metrics(labels, logits) -> dict[str, float | None]:
    labels = np.asarray(labels, dtype=int)
    empty = labels.size == 0
    return {
        "ece": expected_calibration_error(labels, logits),
        "ece_balanced": expected_calibration_error(labels, logits, balanced=True),
        "nll": negative_log_likelihood(labels, logits),
        "brier": None if empty else float(brier_score_loss(labels, sigmoid(logits), pos_label=1)),
    }


def binary_metrics(labels: Sequence[int], logits: Sequence[float], val_threshold: float | None = None) -> dict[str, Any]:
    """All per-subset metrics of one set of labelled logits (see :data:`METRICS`).

    ``val_threshold`` is a logit threshold chosen on the validation split; ``acc_val_threshold``
    applies it here. ``oracle_acc`` picks the best threshold on these very scores: it is an
    upper bound that some papers report, not a fair accuracy, and is named so.
    """
    labels = np.asarray(labels, dtype=int)
    logits = np.asarray(logits, dtype=np.float64)
    if labels.shape != logits.shape:
        raise ValueError(f"labels {labels.shape} and logits {logits.shape} differ in shape")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    real, fake = labels == 0, labels == 1
    both = bool(real.any() and fake.any())
    out: dict[str, Any] = {
        "n": int(labels.size),
        "n_real": int(real.sum()),
        "n_fake": int(fake.sum()),
        "acc": _accuracy_at(labels, logits, 0.0),
        "real_acc": _accuracy_at(labels[real], logits[real], 0.0),
        "fake_acc": _accuracy_at(labels[fake], logits[fake], 0.0),
        "balanced_acc": float(balanced_accuracy_score(labels, (logits >= 0).astype(int))) if both else None,
        "ap": float(average_precision_score(labels, logits)) if both else None,
        "auc": float(roc_auc_score(labels, logits)) if both else None,
        "eer": equal_error_rate(labels, logits) if both else None,
        "tpr_at_fpr_1": tpr_at_fpr(labels, logits, 0.01) if both else None,
        "tpr_at_fpr_5": tpr_at_fpr(labels, logits, 0.05) if both else None,
        "acc_val_threshold": _accuracy_at(labels, logits, val_threshold) if val_threshold is not None else None,
        "val_threshold": val_threshold,
    }
    out["oracle_threshold"], out["oracle_acc"] = best_threshold(labels, logits)
    out.update(calibration_metrics(labels, logits))
    return {key: out[key] for key in METRICS}


def bootstrap_macc_ci(
    groups: Iterable[tuple[np.ndarray, np.ndarray]], *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap CI of the mean per-generator accuracy.

    Each generator's images are resampled with replacement, real and fake separately
    (stratified, so every replicate keeps each generator's class balance).
    """
    rng = np.random.default_rng(seed)
    per_group = []
    for labels, logits in groups:
        correct = ((np.asarray(logits) >= 0).astype(int) == np.asarray(labels)).astype(np.float64)
        labels = np.asarray(labels)
        n = correct.size
        if n == 0:
            continue
        total = np.zeros(n_boot)
        for cls in (0, 1):
            values = correct[labels == cls]
            if values.size:
                draws = rng.integers(0, values.size, size=(n_boot, values.size))
                total += values[draws].sum(axis=1)
        per_group.append(total / n)
    if not per_group:
        return None
    means = np.mean(per_group, axis=0)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def missing_classes(frame: pd.DataFrame, generators: Sequence[str]) -> dict[str, list[str]]:
    """``{generator: ["real"]}`` for each generator with no row of a class (``label`` column) in ``frame``."""
    out = {}
    for gen in generators:
        present = set(frame.loc[frame["generator"] == gen, "label"].astype(int))
        absent = [name for label, name in ((0, "real"), (1, "fake")) if label not in present]
        if absent:
            out[gen] = absent
    return out


def evaluate(
    test: pd.DataFrame,
    val: pd.DataFrame | None = None,
    *,
    generators: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics of a scored test split: per generator, pooled overall, and across generators.

    ``test`` and ``val`` are frames with ``generator``, ``label`` and ``logit`` columns (as
    :func:`harness.scoring.score_samples` returns). The validation threshold is chosen on
    all of ``val`` (the training generators' validation split) and applied to every test
    generator. ``generators`` fixes the order (default: order of first appearance).
    """
    val_threshold = None
    if val is not None and len(val):
        val_threshold, _ = best_threshold(val["label"].to_numpy(), val["logit"].to_numpy())
    order = list(generators) if generators is not None else list(dict.fromkeys(test["generator"]))
    per_generator = {}
    groups = []
    for gen in order:
        part = test[test["generator"] == gen]
        if part.empty:
            log.warning("generator '%s' has no scored test images", gen)
            continue
        labels, logits = part["label"].to_numpy(), part["logit"].to_numpy()
        per_generator[gen] = binary_metrics(labels, logits, val_threshold)
        groups.append((labels, logits))
    overall = binary_metrics(test["label"].to_numpy(), test["logit"].to_numpy(), val_threshold)
    summary = summarize(per_generator, groups, n_boot=n_boot, seed=seed)
    summary.update({key: overall[key] for key in CALIBRATION_METRICS})  # pooled: the leaderboard shows them
    return {"per_generator": per_generator, "overall": overall, "summary": summary}


def summarize(per_generator: dict[str, dict], groups, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """mAcc, std (sample std, ddof=1, as the papers' tables), worst generator and the bootstrap CI."""
    accs = {gen: m["acc"] for gen, m in per_generator.items() if m["acc"] is not None}
    if not accs:
        return {"mAcc": None, "std": None, "worst_generator": None, "worst_acc": None, "mAcc_ci95": None}
    values = np.array(list(accs.values()))
    worst = min(accs, key=accs.get)
    ci = bootstrap_macc_ci(groups, n_boot=n_boot, seed=seed)
    return {
        "mAcc": float(values.mean()),
        "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "worst_generator": worst,
        "worst_acc": accs[worst],
        "mAcc_ci95": list(ci) if ci else None,
    }


def plot_reliability(test: pd.DataFrame, generators: Sequence[str], path, title: str = "", n_bins: int = ECE_BINS):
    """Reliability diagram: fraction of fakes against mean P(fake) per bin, pooled (bold) and per
    generator (thin), with the share of images per bin below."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 6.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    for gen in generators:
        part = test[test["generator"] == gen]
        if len(part):
            bins = reliability_bins(part["label"], part["logit"], n_bins)
            top.plot(bins.mean_p_fake, bins.fraction_fake, marker=".", alpha=0.5, linewidth=1, label=str(gen))
    pooled = reliability_bins(test["label"], test["logit"], n_bins)
    ece = expected_calibration_error(test["label"], test["logit"], n_bins)
    top.plot(pooled.mean_p_fake, pooled.fraction_fake, color="black", marker="o", linewidth=2,
             label=f"all (ECE {ece:.3f})" if ece is not None else "all")
    top.set_ylabel("fraction of fakes")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.legend(fontsize=7)
    top.set_title(title or f"Reliability diagram ({n_bins} equal-width bins)", fontsize=10)
    bottom.bar((pooled.lo + pooled.hi) / 2, pooled.weight / max(1.0, pooled.weight.sum()), width=1 / n_bins,
               color="grey", edgecolor="black")
    bottom.set_xlabel("P(fake) = sigmoid(logit)")
    bottom.set_ylabel("share of images")
    fig.savefig(path, dpi=110)
    return path


def check_direction(labels: Sequence[int], logits: Sequence[float], *, where: str) -> dict[str, Any]:
    """Check that higher logits mean "fake" on a labelled set; warn loudly when they do not.

    An AUC below 0.5 on the training generator almost always means the detector's head
    says class 1 = real and its plugin forgot to flip it.
    """
    labels = np.asarray(labels, dtype=int)
    result: dict[str, Any] = {"where": where, "n": int(labels.size), "auc": None, "inverted": None}
    if labels.size == 0 or labels.min() == labels.max():
        return result
    auc = float(roc_auc_score(labels, np.asarray(logits, dtype=np.float64)))
    result.update(auc=auc, inverted=auc < 0.5)
    if auc < 0.5:
        message = (
            f"LABEL DIRECTION WARNING: AUC {auc:.3f} < 0.5 on {where}. Scores look inverted: "
            "the detector's logit should rise with P(fake). Check its head convention (class 1 = real?)."
        )
        log.warning(message)
        print(f"harness: {message}", file=sys.stderr)
    return result


def metrics_frame(per_generator: dict[str, dict], overall: dict | None = None) -> pd.DataFrame:
    """Per-generator metrics as a table (one row per generator, plus ``overall``)."""
    rows = dict(per_generator)
    if overall is not None:
        rows["overall"] = overall
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=list(METRICS))
    frame.index.name = "generator"
    return frame
