"""Attack metrics (clean accuracy, ASR) and detection metrics against the poison mask."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def clean_accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of test examples predicted correctly (0..1)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if len(labels) == 0:
        raise ValueError("clean accuracy needs at least one test example")
    return float((predictions == labels).mean())


def attack_success_rate(triggered_predictions: np.ndarray, target_label: int) -> float:
    """Fraction of triggered inputs predicted as the target label (0..1).

    The caller passes only inputs whose true label differs from the target, so a correct
    prediction can never count as a success.
    """
    triggered_predictions = np.asarray(triggered_predictions)
    if len(triggered_predictions) == 0:
        raise ValueError("ASR needs at least one triggered input whose label is not the target")
    return float((triggered_predictions == target_label).mean())


@dataclass(frozen=True)
class DetectionMetrics:
    """Quality of one detector's scores and flagged set against the true poison mask.

    Precision, recall and F1 are those of the flagged set (0 when nothing is flagged).
    AUROC and AUPRC rank all examples by score. ``precision_at_k`` uses k = number of
    poisons.
    """

    precision: float
    recall: float
    f1: float
    auroc: float
    auprc: float
    precision_at_k: float
    n_flagged: int
    n_true_positives: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def detection_metrics(
    scores: np.ndarray, flagged: np.ndarray, poison_mask: np.ndarray
) -> DetectionMetrics:
    """Score a detector's output; all arrays have shape (n_train,)."""
    scores = np.asarray(scores, dtype=np.float64)
    flagged = np.asarray(flagged, dtype=bool)
    truth = np.asarray(poison_mask, dtype=bool)
    if not (scores.shape == flagged.shape == truth.shape):
        raise ValueError(
            f"shapes differ: scores {scores.shape}, flagged {flagged.shape}, mask {truth.shape}"
        )
    n_poisons = int(truth.sum())
    true_positives = int((flagged & truth).sum())
    n_flagged = int(flagged.sum())
    precision = true_positives / n_flagged if n_flagged else 0.0
    recall = true_positives / n_poisons if n_poisons else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0

    if 0 < n_poisons < len(truth):
        auroc = float(roc_auc_score(truth, scores))
        auprc = float(average_precision_score(truth, scores))
        top_k = np.argsort(-scores, kind="stable")[:n_poisons]
        precision_at_k = float(truth[top_k].mean())
    else:
        auroc = auprc = precision_at_k = float("nan")
    return DetectionMetrics(
        precision, recall, f1, auroc, auprc, precision_at_k, n_flagged, true_positives
    )
