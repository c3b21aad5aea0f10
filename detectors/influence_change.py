"""Per-example influence strength, change and relative change under query transforms.

With ``a`` the mean influence of a training example on the original queries and ``b_t`` its
mean influence on the queries after transform t (following arXiv 2504.09026 and the
authors' public code):

* strength ``s = |a|``
* change ``c_t = |a - b_t|``
* relative change ``r_t = c_t / (s + eps)``
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmark.context import DetectionContext

ORIGINAL = "original"
EPSILON = 1e-8


@dataclass(frozen=True)
class InfluenceChange:
    """Strength (n_train,), and change and relative change (n_transforms, n_train)."""

    transforms: tuple[str, ...]
    categories: tuple[str, ...]
    original: np.ndarray
    transformed: np.ndarray
    strength: np.ndarray
    change: np.ndarray
    relative_change: np.ndarray

    def rows_of_category(self, category: str) -> np.ndarray:
        return np.array([c == category for c in self.categories])


def influence_change(
    context: DetectionContext, transforms: tuple[str, ...] | None = None
) -> InfluenceChange:
    """Compute strength and (relative) change for the given transforms (default: all)."""
    infos = [
        info
        for info in context.transformed_sets()
        if transforms is None or info.transform in transforms
    ]
    if not infos:
        raise ValueError(
            f"no transformed query sets match {transforms}; the run computed "
            f"{[info.transform for info in context.transformed_sets()]}"
        )
    original = context.influence(ORIGINAL)
    transformed = np.stack([context.influence(info.name) for info in infos])
    strength = np.abs(original)
    change = np.abs(original[None, :] - transformed)
    relative = change / (strength[None, :] + EPSILON)
    return InfluenceChange(
        transforms=tuple(info.transform for info in infos),
        categories=tuple(info.category for info in infos),
        original=original,
        transformed=transformed,
        strength=strength,
        change=change,
        relative_change=relative,
    )


def rank_fraction(values: np.ndarray) -> np.ndarray:
    """Return each value's rank scaled to [0, 1] (0 = smallest); ties share the mean rank."""
    from scipy.stats import rankdata

    if len(values) <= 1:
        return np.zeros(len(values))
    return (rankdata(values) - 1) / (len(values) - 1)
