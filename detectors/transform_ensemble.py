"""Transform-ensemble detectors of arXiv 2504.09026: variance and voting across transforms.

Both rest on one observation: a clean example's influence on the queries changes when the
queries are semantically transformed, while a poison's influence rides on its trigger and
stays strong and unchanged. See :mod:`detectors.influence_change` for the quantities.

NOTE: the paper's text describes poisons as strong and unchanged, but the authors' public
code (``ensemble_detector.py``) flags *high* variance for its variance method. These
detectors follow the paper's stated principle; the direction is a documented choice.
"""

from __future__ import annotations

import math

import numpy as np

from benchmark.context import DetectionContext
from detectors.base import DETECTORS, Detector, FlagRule
from detectors.influence_change import ORIGINAL, influence_change, rank_fraction


@DETECTORS.register("transform-variance")
class TransformVarianceDetector(Detector):
    """Strength over spread: |a| / (sigma + median sigma).

    sigma is the standard deviation of an example's mean influence across the original and
    every transformed query set (the authors' code includes the original). Dividing by
    ``sigma + median(sigma)`` keeps examples with negligible influence and negligible
    spread from ranking high. Flags by a robust z-score above 3.5 (the authors' code flags
    above the 95th percentile instead; pass ``FlagRule("percentile", 95)`` for that).
    """

    description = "strong influence with low variance across transformed query sets"
    track = "clean-queries"

    def __init__(
        self, transforms: tuple[str, ...] | None = None, flag_rule: FlagRule | None = None
    ):
        super().__init__(flag_rule)
        self.transforms = transforms

    def score(self, context: DetectionContext) -> np.ndarray:
        quantities = influence_change(context, self.transforms)
        stacked = np.vstack([quantities.original[None, :], quantities.transformed])
        sigma = stacked.std(axis=0)
        return quantities.strength / (sigma + np.median(sigma) + 1e-12)


@DETECTORS.register("transform-voting")
class TransformVotingDetector(Detector):
    """Each transform category votes for its ``top_k`` most resistant strong examples.

    An example's resistance in category C is the mean relative change r_t over the
    transforms t of C (lower = more resistant). Only examples whose strength is at or above
    the ``strength_percentile``-th percentile are eligible. ``top_k`` defaults to 20, the
    value in the authors' multi-transform detector. With ``agreement="unanimous"`` an
    example is flagged when every category votes for it; with "majority" when more than
    half do. The score is the vote count plus a tie-breaker below 1: the mean over
    categories of 1 - rank_fraction(resistance).
    """

    description = "categories of transforms vote for their most influence-resistant examples"
    track = "clean-queries"

    def __init__(
        self,
        top_k: int = 20,
        agreement: str = "unanimous",
        strength_percentile: float = 50.0,
        transforms: tuple[str, ...] | None = None,
    ):
        super().__init__(None)
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        if agreement not in ("unanimous", "majority"):
            raise ValueError(f"agreement must be 'unanimous' or 'majority', got {agreement!r}")
        if not 0 <= strength_percentile < 100:
            raise ValueError(f"strength_percentile must lie in [0, 100), got {strength_percentile}")
        self.top_k = top_k
        self.agreement = agreement
        self.strength_percentile = strength_percentile
        self.transforms = transforms

    def _votes(self, context: DetectionContext) -> tuple[np.ndarray, np.ndarray, int]:
        quantities = influence_change(context, self.transforms)
        categories = sorted(set(quantities.categories))
        eligible = quantities.strength >= np.percentile(
            quantities.strength, self.strength_percentile
        )
        votes = np.zeros(context.n_train)
        tie_break = np.zeros(context.n_train)
        for category in categories:
            rows = quantities.rows_of_category(category)
            resistance = quantities.relative_change[rows].mean(axis=0)
            tie_break += 1.0 - rank_fraction(resistance)
            candidates = np.flatnonzero(eligible)
            order = candidates[np.argsort(resistance[candidates], kind="stable")]
            votes[order[: self.top_k]] += 1
        tie_break /= len(categories)
        return votes, tie_break, len(categories)

    def score(self, context: DetectionContext) -> np.ndarray:
        votes, tie_break, _ = self._votes(context)
        return votes + 0.999 * tie_break

    def flag(self, scores: np.ndarray, context: DetectionContext) -> np.ndarray:
        votes, _, n_categories = self._votes(context)
        if self.agreement == "unanimous":
            required = n_categories
        else:
            required = math.floor(n_categories / 2) + 1
        return votes >= required


@DETECTORS.register("transform-voting-majority")
class TransformMajorityVotingDetector(TransformVotingDetector):
    """:class:`TransformVotingDetector` flagging on a majority of categories."""

    description = "transform voting flagged by a majority of categories"

    def __init__(self, top_k: int = 20, strength_percentile: float = 50.0):
        super().__init__(top_k=top_k, agreement="majority", strength_percentile=strength_percentile)


__all__ = [
    "ORIGINAL",
    "TransformMajorityVotingDetector",
    "TransformVarianceDetector",
    "TransformVotingDetector",
]
