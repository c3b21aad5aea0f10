"""Per-detector ranks and the consensus ranking across detectors.

A detector's rank of an example is 1 for its highest suspicion score. Its rank fraction is
(rank - 1) / (n - 1), in [0, 1] with 0 the most suspicious, and tied scores share their
mean rank. The consensus score of an example is the mean of its rank fractions over the
detectors, and the consensus rank orders examples by that mean, lowest (most suspicious)
first. Rank fractions put every detector on one scale whatever the units of its scores.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata


@dataclass(frozen=True)
class Consensus:
    """Ranks of one scan.

    ``ranks[name]`` contains detector ``name``'s integer ranks, shape (n,), where tied scores
    share the best (lowest) rank. ``score`` is the mean rank fraction, shape (n,), and
    ``rank`` the consensus rank, shape (n,), 1 for the lowest ``score``.
    """

    ranks: dict[str, np.ndarray]
    score: np.ndarray
    rank: np.ndarray

    def order(self) -> np.ndarray:
        """Return example indices from the most to the least suspicious by consensus."""
        return np.argsort(self.rank, kind="stable")


def rank_fractions(scores: np.ndarray) -> np.ndarray:
    """Return rank fractions of suspicion ``scores`` (0 for the highest score)."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) <= 1:
        return np.zeros(len(scores))
    return (rankdata(-scores, method="average") - 1) / (len(scores) - 1)


def consensus_ranking(scores_by_detector: Mapping[str, np.ndarray]) -> Consensus:
    """Rank every example by each detector and by the mean rank fraction across detectors."""
    if not scores_by_detector:
        raise ValueError("consensus ranking needs the scores of at least one detector")
    ranks = {
        name: rankdata(-np.asarray(scores, dtype=np.float64), method="min").astype(int)
        for name, scores in scores_by_detector.items()
    }
    mean_fraction = np.mean(
        [rank_fractions(scores) for scores in scores_by_detector.values()], axis=0
    )
    consensus_rank = rankdata(mean_fraction, method="min").astype(int)
    return Consensus(ranks=ranks, score=mean_fraction, rank=consensus_rank)
