"""Spectral-signature baseline of Tran, Li and Madry (2018).

Source: Brandon Tran, Jerry Li and Aleksander Madry, "Spectral Signatures in Backdoor
Attacks", NeurIPS 2018 (arXiv 1811.00636).
"""

from __future__ import annotations

import numpy as np

from benchmark.context import DetectionContext
from detectors.base import DETECTORS, Detector, FlagRule


def class_indices(labels: np.ndarray) -> list[np.ndarray]:
    """Return the indices of the examples of each training label, in label order."""
    return [np.flatnonzero(labels == label) for label in np.unique(labels)]


def spectral_scores(representations: np.ndarray) -> np.ndarray:
    """Return the squared projection of each centered row onto the top right singular vector.

    ``representations`` has shape (n, hidden) and contains the examples of one class.
    Fewer than two rows define no direction, so they score 0.
    """
    if len(representations) < 2:
        return np.zeros(len(representations))
    centered = representations - representations.mean(axis=0)
    # The first row of Vt is the direction of largest variance of the class.
    _, _, right_singular_vectors = np.linalg.svd(centered, full_matrices=False)
    return (centered @ right_singular_vectors[0]) ** 2


def divide_by_median(scores: np.ndarray) -> np.ndarray:
    """Return ``scores`` divided by their median, or by their mean when the median is 0.

    Scores that are all 0 stay 0.
    """
    scale = np.median(scores) if len(scores) else 0.0
    if scale <= 0:
        scale = scores.mean() if len(scores) else 0.0
    if scale <= 0:
        return np.zeros_like(scores)
    return scores / scale


@DETECTORS.register("spectral-signature")
class SpectralSignatureDetector(Detector):
    """Squared projection onto the top singular direction of each class's representations.

    For each training label, the last-layer [CLS] representations of the examples with
    that label are centered, and each example scores its squared projection onto the
    top right singular vector of the centered matrix. Poisons that share a trigger form
    a shifted subpopulation, which dominates that direction. The raw score of one class
    is divided by the class's median score, so that scores of different classes are on
    one scale (1 is the typical example of every class) and can be ranked together.

    The paper removes the 1.5 * epsilon highest-scoring examples of each class, where
    epsilon is the attacker's poison budget, which a blind detector does not know. ``flag``
    instead applies ``flag_rule`` to each class separately. The default robust z-score
    above 10 flags about 1% of a class whose projections are Gaussian. The normalised
    score of such a class is chi-squared with one degree of freedom divided by its
    median, and about 1% of such scores have a robust z-score above 10. Pass
    ``FlagRule("percentile", 95)`` to remove a fixed 5% of every class instead.

    NOTE: the 1.5 * epsilon removal rule is quoted from summaries of the paper and was
    not checked against its text.
    """

    description = "squared projection onto each class's top singular vector (Tran et al. 2018)"
    track = "blind"
    default_flag_rule = FlagRule("robust_zscore", 10.0)

    def __init__(self, flag_rule: FlagRule | None = None):
        super().__init__(flag_rule)

    def score(self, context: DetectionContext) -> np.ndarray:
        representations = np.asarray(context.representations(), dtype=np.float64)
        labels = np.asarray(context.train.labels)
        scores = np.zeros(context.n_train)
        for indices in class_indices(labels):
            raw = spectral_scores(representations[indices])
            scores[indices] = divide_by_median(raw)
        return scores

    def flag(self, scores: np.ndarray, context: DetectionContext) -> np.ndarray:
        """Return the flagged mask, shape (n_train,), with ``flag_rule`` applied per class."""
        labels = np.asarray(context.train.labels)
        flagged = np.zeros(len(scores), dtype=bool)
        for indices in class_indices(labels):
            flagged[indices] = self.flag_rule.apply(scores[indices])
        return flagged
