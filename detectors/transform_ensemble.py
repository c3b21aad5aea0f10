"""Transform-ensemble detectors of arXiv 2504.09026: variance, voting and combined scores.

Variance and voting rest on one observation: a clean example's influence on the queries
changes when the queries are semantically transformed, while a poison's influence rides on
its trigger and stays strong and unchanged. See :mod:`detectors.influence_change` for the
quantities. The combined detector adds the KL divergence between an example's influence
distributions over the original and the transformed queries, so it reads per-query
influence.

NOTE: the paper's text describes poisons as strong and unchanged, but the authors' public
code (``ensemble_detector.py``) flags *high* variance for its variance method. The variance
and voting detectors follow the paper's stated principle; the direction is a documented
choice. The combined detector reproduces the code's formula, high variance included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

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


KL_EPSILON = 1e-10
"""Added to absolute influences before they are normalised into distributions over queries."""


@dataclass(frozen=True)
class CombinedComponents:
    """The three terms of the combined score, each of shape (n_train,), before scaling."""

    kl_divergence: np.ndarray
    variance: np.ndarray
    negated_influence: np.ndarray


def combined_components(
    original: np.ndarray, transformed: list[np.ndarray] | tuple[np.ndarray, ...]
) -> CombinedComponents:
    """Compute the combined score's terms from per-query influence, shape (n_queries, n_train).

    Query j of every transformed matrix must be the transform of original query j. For
    training example i, with p the distribution ``|original[:, i]| + eps`` normalised over
    the queries and q_t the same for transformed set t:

    * KL divergence: the mean over t of KL(p || q_t), natural logarithm;
    * variance: the population variance, across the original and every transformed set, of
      the example's mean influence on the set's queries;
    * negated influence: minus the mean influence on the original queries.
    """
    if not transformed:
        raise ValueError("the combined score needs at least one transformed query set")
    for index, matrix in enumerate(transformed):
        if matrix.shape != original.shape:
            raise ValueError(
                f"transformed influence {index} has shape {matrix.shape}, but the original "
                f"influence has {original.shape}; both must be (n_queries, n_train)"
            )
    p = np.abs(original) + KL_EPSILON
    p = p / p.sum(axis=0, keepdims=True)
    log_p = np.log(p)
    divergences = []
    for matrix in transformed:
        q = np.abs(matrix) + KL_EPSILON
        q = q / q.sum(axis=0, keepdims=True)
        divergences.append((p * (log_p - np.log(q))).sum(axis=0))
    means = np.stack([original.mean(axis=0)] + [matrix.mean(axis=0) for matrix in transformed])
    return CombinedComponents(
        kl_divergence=np.mean(divergences, axis=0),
        variance=means.var(axis=0),
        negated_influence=-means[0],
    )


def min_max_scale(values: np.ndarray) -> np.ndarray:
    """Scale ``values`` linearly onto [0, 1], mapping constant values to 0 as MinMaxScaler does."""
    span = values.max() - values.min()
    if span == 0:
        return np.zeros_like(values, dtype=np.float64)
    return (values - values.min()) / span


DEFAULT_COMBINED_MAX_QUERIES = 28
"""Leading queries of each query set that the combined detector reads by default.

Per-query influence is costly. Measured with ``InfluenceEngine.score_per_query`` on the
paper-cpu cell at ratio 0.03, seed 0 (MiniLM, 1,000 SST-2 examples, 7 sets of 50
queries), on 2 shared x86-64 CPU cores: all 350 queries took 344 s wall (549 s CPU).
28 queries per set (196 queries, two training passes at the default memory budget) took
142 s (270 s CPU). Both peaked at 6.3 GiB RSS. On that cell the score from 28 queries per
set has a Spearman correlation of 0.87 with the one from all 50 (0.50 at 24, 0.33 at 10).
A few queries probably carry most of the influence mass and dominate the KL term. Pass
``max_queries=None`` to read every query, as the authors' code does.
"""


@DETECTORS.register("transform-combined")
class TransformCombinedDetector(Detector):
    """The authors' combined score: KL divergence, variance and low influence, weighted.

    Each term of :func:`combined_components` is min-max scaled over the training examples,
    and the score is ``0.4 KL + 0.3 variance + 0.3 negated influence``. Examples with a
    score strictly above the 90th percentile of the scores are flagged, so about 10% of
    the training set is flagged whatever the poison ratio. Weights, percentile and the
    epsilon are those of ``detect_by_combined_score`` and ``compute_kl_divergence`` in the
    authors' public code (``poison_detection/detection/ensemble_detector.py``).

    ``transforms`` restricts the transformed query sets (None: all of them), as for the
    other ensembles. The detector reads per-query influence
    (:meth:`benchmark.context.DetectionContext.per_query_influence`) on the first
    ``max_queries`` queries of each set (None: all of them); see
    :data:`DEFAULT_COMBINED_MAX_QUERIES` for the default.
    """

    description = "KL divergence of per-query influence, variance and low influence, weighted"
    track = "clean-queries"
    uses_per_query_influence: ClassVar[bool] = True

    def __init__(
        self,
        kl_weight: float = 0.4,
        variance_weight: float = 0.3,
        influence_weight: float = 0.3,
        percentile: float = 90.0,
        transforms: tuple[str, ...] | None = None,
        max_queries: int | None = DEFAULT_COMBINED_MAX_QUERIES,
    ):
        super().__init__(None)
        for name, weight in (
            ("kl_weight", kl_weight),
            ("variance_weight", variance_weight),
            ("influence_weight", influence_weight),
        ):
            if weight < 0:
                raise ValueError(f"{name} must be non-negative, got {weight}")
        if not 0 <= percentile < 100:
            raise ValueError(f"percentile must lie in [0, 100), got {percentile}")
        if max_queries is not None and max_queries < 1:
            raise ValueError(f"max_queries must be at least 1 or None, got {max_queries}")
        self.kl_weight = kl_weight
        self.variance_weight = variance_weight
        self.influence_weight = influence_weight
        self.percentile = percentile
        self.transforms = transforms
        self.max_queries = max_queries

    def components(self, context: DetectionContext) -> CombinedComponents:
        """Compute the unscaled terms from the context's per-query influence."""
        infos = [
            info
            for info in context.transformed_sets()
            if self.transforms is None or info.transform in self.transforms
        ]
        if not infos:
            raise ValueError(
                f"no transformed query sets match {self.transforms}; the run computed "
                f"{[info.transform for info in context.transformed_sets()]}"
            )
        original = context.per_query_influence(ORIGINAL, self.max_queries)
        transformed = [context.per_query_influence(info.name, self.max_queries) for info in infos]
        for info, matrix in zip(infos, transformed):
            if matrix.shape != original.shape:
                raise ValueError(
                    f"per-query influence on query set {info.name!r} has shape "
                    f"{matrix.shape}, but on {ORIGINAL!r} {original.shape}; every "
                    "transformed set must hold one transform of each original query"
                )
        return combined_components(original, transformed)

    def score(self, context: DetectionContext) -> np.ndarray:
        terms = self.components(context)
        return (
            self.kl_weight * min_max_scale(terms.kl_divergence)
            + self.variance_weight * min_max_scale(terms.variance)
            + self.influence_weight * min_max_scale(terms.negated_influence)
        )

    def flag(self, scores: np.ndarray, context: DetectionContext) -> np.ndarray:
        return scores > np.percentile(scores, self.percentile)


__all__ = [
    "ORIGINAL",
    "CombinedComponents",
    "TransformCombinedDetector",
    "TransformMajorityVotingDetector",
    "TransformVarianceDetector",
    "TransformVotingDetector",
    "combined_components",
    "min_max_scale",
]
