"""Detection and attack metrics on hand-computed cases, and flag rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmark.metrics import attack_success_rate, clean_accuracy, detection_metrics
from detectors.base import FlagRule


def test_detection_metrics_hand_computed():
    mask = np.array([True, True, False, False, False, False])
    scores = np.array([0.9, 0.2, 0.8, 0.1, 0.0, 0.3])
    flagged = np.array([True, False, True, False, False, False])
    metrics = detection_metrics(scores, flagged, mask)
    assert metrics.precision == 0.5
    assert metrics.recall == 0.5
    assert metrics.f1 == 0.5
    assert metrics.n_flagged == 2
    assert metrics.n_true_positives == 1
    # Poison scores 0.9 and 0.2 against clean 0.8, 0.1, 0.0, 0.3: 6 of 8 pairs ordered.
    assert metrics.auroc == pytest.approx(6 / 8)
    assert metrics.precision_at_k == 0.5


def test_detection_metrics_nothing_flagged():
    mask = np.array([True, False, False])
    metrics = detection_metrics(np.array([1.0, 0.0, 0.5]), np.zeros(3, bool), mask)
    assert metrics.precision == 0.0
    assert metrics.f1 == 0.0
    assert metrics.auroc == 1.0


def test_detection_metrics_without_poisons_is_nan():
    metrics = detection_metrics(np.zeros(3), np.zeros(3, bool), np.zeros(3, bool))
    assert math.isnan(metrics.auroc)


def test_attack_metrics():
    assert clean_accuracy(np.array([1, 0, 1, 1]), np.array([1, 0, 0, 1])) == 0.75
    assert attack_success_rate(np.array([1, 1, 0, 1]), target_label=1) == 0.75
    with pytest.raises(ValueError):
        attack_success_rate(np.array([]), target_label=1)


def test_flag_rules():
    scores = np.array([0.0, 0.1, -0.1, 0.05, -0.05, 10.0])
    assert FlagRule("robust_zscore", 3.5).apply(scores).tolist() == [False] * 5 + [True]
    assert FlagRule("top_k", 2).apply(scores).tolist() == [False, True, False, False, False, True]
    assert FlagRule("percentile", 80).apply(scores).sum() == 2
    with pytest.raises(ValueError):
        FlagRule("percentile", 120)
    with pytest.raises(ValueError):
        FlagRule("median", 1)
