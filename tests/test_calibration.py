"""Calibration metrics (ECE, class-balanced ECE, NLL, Brier) against hand-computed values and
scikit-learn; the reliability diagram is written."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import brier_score_loss, log_loss

from harness.metrics import (
    binary_metrics,
    evaluate,
    expected_calibration_error,
    negative_log_likelihood,
    plot_reliability,
    reliability_bins,
)

PROBS = np.array([0.05, 0.15, 0.35, 0.62, 0.88, 0.92, 0.95])
LABELS = np.array([0, 0, 1, 0, 1, 1, 0])
LOGITS = np.log(PROBS / (1 - PROBS))


def test_ece_matches_the_hand_computed_value():
    # bins of width 0.1: one image each in bins 0, 1, 3, 6, 8; bin 9 holds 0.92 (fake) and 0.95 (real)
    # |0-.05| + |0-.15| + |1-.35| + |0-.62| + |1-.88| + 2 * |0.5 - 0.935|, over 7 images
    expected = (0.05 + 0.15 + 0.65 + 0.62 + 0.12 + 2 * 0.435) / 7
    assert expected_calibration_error(LABELS, LOGITS) == pytest.approx(expected, abs=1e-9)


def test_class_balanced_ece_weights_each_class_to_one_half():
    # 3 fakes weigh 1/6 each, 4 reals 1/8 each; bin 9: |1/6 - (0.92/6 + 0.95/8)|
    expected = (0.05 / 8 + 0.15 / 8 + 0.65 / 6 + 0.62 / 8 + 0.12 / 6 + abs(1 / 6 - (0.92 / 6 + 0.95 / 8)))
    assert expected == pytest.approx(0.33625, abs=1e-6)
    assert expected_calibration_error(LABELS, LOGITS, balanced=True) == pytest.approx(expected, abs=1e-9)
    assert expected_calibration_error([1, 1], [0.0, 1.0], balanced=True) is None  # one class: undefined


def test_nll_and_brier_match_hand_values_and_scikit_learn():
    true_class_p = np.where(LABELS == 1, PROBS, 1 - PROBS)
    assert negative_log_likelihood(LABELS, LOGITS) == pytest.approx(-np.log(true_class_p).mean(), abs=1e-9)
    assert negative_log_likelihood(LABELS, LOGITS) == pytest.approx(log_loss(LABELS, PROBS), abs=1e-9)
    m = binary_metrics(LABELS, LOGITS)
    assert m["brier"] == pytest.approx(1.7552 / 7, abs=1e-9)
    assert m["brier"] == pytest.approx(brier_score_loss(LABELS, PROBS), abs=1e-12)
    assert m["nll"] == pytest.approx(log_loss(LABELS, PROBS), abs=1e-9)
    assert m["ece"] == pytest.approx(expected_calibration_error(LABELS, LOGITS))


def test_calibrated_bin_has_zero_ece_and_saturated_logits_stay_finite():
    logits = np.full(10, math.log(0.7 / 0.3))
    labels = np.array([1] * 7 + [0] * 3)
    assert expected_calibration_error(labels, logits) == pytest.approx(0.0, abs=1e-12)
    # a confidently wrong score: -log(sigmoid(-60)) = 60 exactly (not inf, as log(0) would give)
    assert negative_log_likelihood([1], [-60.0]) == pytest.approx(60.0, abs=1e-9)
    # P(fake) = 1 falls in the last bin, not past it
    bins = reliability_bins([1, 0], [80.0, -80.0])
    assert bins.weight.tolist() == [1] + [0] * 8 + [1]


def test_evaluate_reports_calibration_per_generator_overall_and_in_the_summary(tmp_path):
    frame = pd.DataFrame({"generator": ["a"] * 4 + ["b"] * 3, "label": LABELS, "logit": LOGITS})
    measured = evaluate(frame, generators=["a", "b"], n_boot=10)
    for key in ("ece", "ece_balanced", "nll", "brier"):
        assert measured["overall"][key] == measured["summary"][key]
    part = frame[frame.generator == "b"]
    assert measured["per_generator"]["b"]["brier"] == pytest.approx(
        brier_score_loss(part.label, PROBS[4:]), abs=1e-12)
    path = plot_reliability(frame, ["a", "b"], tmp_path / "reliability.png")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width > 100
