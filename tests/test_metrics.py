"""Metrics against hand-computed values, brute-force loops and scikit-learn."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from harness import metrics

# 4 real, 4 fake; by hand: acc@0 = 6/8, AUC = 15/16, AP = (1 + 1 + 1 + 4/5) / 4,
# ROC points (fpr, tpr): (0, .75) then (.25, .75) -> EER .25, TPR at 1 % / 5 % FPR = .75,
# best threshold "logit >= 1" -> 7/8 correct, as is any threshold in (0.5, 1]: reported mid-gap, 0.75.
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1])
LOGITS = np.array([-2.0, -1.0, 0.5, -0.5, 1.0, 2.0, -0.2, 3.0])


def test_crafted_scores_match_hand_computed_values():
    m = metrics.binary_metrics(LABELS, LOGITS)
    assert (m["n"], m["n_real"], m["n_fake"]) == (8, 4, 4)
    assert m["acc"] == 0.75 and m["real_acc"] == 0.75 and m["fake_acc"] == 0.75
    assert m["balanced_acc"] == 0.75
    assert m["auc"] == pytest.approx(15 / 16)
    assert m["ap"] == pytest.approx(0.95)
    assert m["eer"] == pytest.approx(0.25)
    assert m["tpr_at_fpr_1"] == 0.75 and m["tpr_at_fpr_5"] == 0.75
    assert m["oracle_acc"] == 0.875 and m["oracle_threshold"] == 0.75
    assert m["acc_val_threshold"] is None


def test_val_threshold_is_applied_to_test():
    m = metrics.binary_metrics(LABELS, LOGITS, val_threshold=0.75)
    # logit >= .75 -> fake: reals all right, fakes 1, 2, 3 right, -0.2 wrong
    assert m["acc_val_threshold"] == 0.875 and m["val_threshold"] == 0.75


def test_threshold_at_zero_is_probability_half():
    # a fake exactly at P(fake) = 0.5 counts as fake (">=" as scikit-learn's roc_curve)
    m = metrics.binary_metrics([1, 0], [0.0, -1e-9])
    assert m["acc"] == 1.0
    assert metrics.sigmoid([0.0])[0] == 0.5 and metrics.sigmoid([-800.0])[0] == 0.0


def brute_best(labels, logits):
    best = 0.0
    for t in list(np.unique(logits)) + [np.inf]:
        best = max(best, float(((logits >= t).astype(int) == labels).mean()))
    return best


def brute_tpr(labels, logits, max_fpr):
    best = 0.0
    for t in list(np.unique(logits)) + [np.inf]:
        pred = logits >= t
        fpr = pred[labels == 0].mean()
        if fpr <= max_fpr:
            best = max(best, pred[labels == 1].mean())
    return best


@pytest.mark.parametrize("seed", range(5))
def test_random_scores_against_sklearn_and_brute_force(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    logits = np.round(rng.normal(labels * 1.2, 1.0), 1)  # rounding makes ties
    m = metrics.binary_metrics(labels, logits)
    assert m["auc"] == pytest.approx(roc_auc_score(labels, logits))
    assert m["ap"] == pytest.approx(average_precision_score(labels, logits))
    assert m["oracle_acc"] == pytest.approx(brute_best(labels, logits))
    thr_acc = float(((logits >= m["oracle_threshold"]).astype(int) == labels).mean())
    assert thr_acc == pytest.approx(m["oracle_acc"])
    assert m["tpr_at_fpr_5"] == pytest.approx(brute_tpr(labels, logits, 0.05))
    assert m["tpr_at_fpr_1"] == pytest.approx(brute_tpr(labels, logits, 0.01))
    assert m["eer"] == pytest.approx(brute_eer(labels, logits), abs=2e-3)


def brute_eer(labels, logits):
    """Walk the ROC polyline (points from a threshold loop) densely; FPR where FPR = FNR."""
    points = [(0.0, 1.0)]
    for t in sorted(np.unique(logits), reverse=True):
        pred = logits >= t
        points.append((pred[labels == 0].mean(), 1 - pred[labels == 1].mean()))
    best = (np.inf, None)
    for (f0, n0), (f1, n1) in zip(points, points[1:]):
        w = np.linspace(0, 1, 2001)
        fpr, fnr = f0 + w * (f1 - f0), n0 + w * (n1 - n0)
        k = int(np.argmin(np.abs(fpr - fnr)))
        if abs(fpr[k] - fnr[k]) < best[0]:
            best = (abs(fpr[k] - fnr[k]), fpr[k])
    return best[1]


def test_one_class_subsets_give_none_and_json_stays_strict():
    m = metrics.binary_metrics([1, 1, 1], [0.3, -1.0, 2.0])
    assert m["fake_acc"] == pytest.approx(2 / 3) and m["real_acc"] is None
    assert m["auc"] is None and m["ap"] is None and m["eer"] is None and m["oracle_acc"] is None
    json.dumps(m, allow_nan=False)


def frame(rows):
    return pd.DataFrame(rows, columns=["generator", "label", "logit"])


def test_evaluate_per_generator_and_summary_by_hand():
    test = frame(
        [("a", 0, -1.0), ("a", 1, 1.0), ("a", 0, -2.0), ("a", 1, 2.0)]  # acc 1.0
        + [("b", 0, 1.0), ("b", 1, 1.0), ("b", 0, -1.0), ("b", 1, -1.0)]  # acc 0.5
        + [("c", 0, -1.0), ("c", 1, 1.0), ("c", 0, 1.0), ("c", 1, 1.0)]  # acc 0.75
    )
    val = frame([("a", 0, 0.0), ("a", 0, 0.4), ("a", 1, 0.6), ("a", 1, 3.0)])  # best: (0.4, 0.6], middle 0.5
    out = metrics.evaluate(test, val, generators=["c", "a", "b"], n_boot=500)
    assert list(out["per_generator"]) == ["c", "a", "b"]
    assert [out["per_generator"][g]["acc"] for g in "abc"] == [1.0, 0.5, 0.75]
    s = out["summary"]
    assert s["mAcc"] == pytest.approx(0.75)
    assert s["std"] == pytest.approx(np.sqrt((0.25**2 + 0.25**2) / 2))  # sample std, as the papers' tables
    assert (s["worst_generator"], s["worst_acc"]) == ("b", 0.5)
    lo, hi = s["mAcc_ci95"]
    assert lo <= 0.75 <= hi and hi - lo > 0
    assert out["per_generator"]["b"]["val_threshold"] == pytest.approx(0.5)
    # at 0.5: b's 1.0 logits are fake -> real(1.0) wrong, fake(1.0) right, real(-1) right, fake(-1) wrong
    assert out["per_generator"]["b"]["acc_val_threshold"] == 0.5
    assert out["overall"]["n"] == 12 and out["overall"]["acc"] == pytest.approx(9 / 12)
    json.dumps(out, allow_nan=False)


def test_bootstrap_ci_collapses_for_a_perfect_detector_and_widens_with_noise():
    perfect = [(np.array([0, 1] * 50), np.array([-1.0, 1.0] * 50))]
    assert metrics.bootstrap_macc_ci(perfect) == (1.0, 1.0)
    rng = np.random.default_rng(0)
    groups = []
    for _ in range(4):
        labels = np.array([0, 1] * 200)
        correct = rng.random(400) < 0.8
        logits = np.where(correct == labels.astype(bool), 1.0, -1.0)
        groups.append((labels, logits))
    lo, hi = metrics.bootstrap_macc_ci(groups, n_boot=2000, seed=1)
    # normal approximation of the mean of 4 accuracies of 400 images at p ~ 0.8
    expected_half_width = 1.96 * np.sqrt(0.8 * 0.2 / 400) / 2
    assert (hi - lo) / 2 == pytest.approx(expected_half_width, rel=0.25)
    assert metrics.bootstrap_macc_ci(groups, n_boot=2000, seed=1) == (lo, hi)  # seeded


def test_direction_check_warns_loudly_on_inverted_scores(capsys):
    ok = metrics.check_direction(LABELS, LOGITS, where="train generator 'g'")
    assert ok["inverted"] is False and ok["auc"] == pytest.approx(15 / 16)
    assert capsys.readouterr().err == ""
    bad = metrics.check_direction(LABELS, -LOGITS, where="train generator 'g'")
    assert bad["inverted"] is True
    err = capsys.readouterr().err
    assert "LABEL DIRECTION WARNING" in err and "train generator 'g'" in err
    assert metrics.check_direction([1, 1], [0.1, 0.2], where="x")["auc"] is None


def test_metrics_frame_has_a_row_per_generator_plus_overall():
    out = metrics.evaluate(frame([("a", 0, -1.0), ("a", 1, 1.0), ("b", 0, 1.0), ("b", 1, 1.0)]), n_boot=10)
    table = metrics.metrics_frame(out["per_generator"], out["overall"])
    assert list(table.index) == ["a", "b", "overall"]
    assert table.loc["b", "acc"] == 0.5 and table.loc["overall", "n"] == 4
