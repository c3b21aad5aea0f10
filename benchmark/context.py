"""Inputs of detectors for one trained model, computed lazily and cached."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from benchmark.data import TextDataset

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuerySetInfo:
    """Name and transform category of a query set ("original" for untransformed queries)."""

    name: str
    category: str
    transform: str | None


@dataclass
class DetectionContext:
    """Lazily computed inputs of detectors.

    The poison mask is deliberately absent. ``influence_provider(name)`` returns the mean
    influence of every training example on the query set ``name``, shape (n_train,);
    ``query_sets`` lists the clean query sets (original and transformed). The triggered query
    set, available only to oracle detectors, is named by ``oracle_query_set`` and is None
    when the runner does not allow oracle detectors.
    ``per_query_influence_provider(name, max_queries)`` returns the influence on each of the
    first ``max_queries`` queries (None: all) of the clean query set ``name``, shape
    (n_queries, n_train). It is None where the runner computes only the means.
    """

    train: TextDataset
    victim: object
    epoch_losses: np.ndarray
    influence_provider: Callable[[str], np.ndarray]
    query_sets: tuple[QuerySetInfo, ...]
    seed: int
    oracle_query_set: str | None = None
    per_query_influence_provider: Callable[[str, int | None], np.ndarray] | None = None
    _cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def n_train(self) -> int:
        return len(self.train)

    def _cached(self, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def final_losses(self) -> np.ndarray:
        """Cross-entropy of each training example under the trained model, shape (n_train,)."""
        return self._cached(
            "final_losses",
            lambda: self.victim.example_losses(self.train.texts, self.train.labels),
        )

    def representations(self) -> np.ndarray:
        """Last-layer representation of each training input, shape (n_train, hidden)."""
        return self._cached(
            "representations", lambda: self.victim.representations(self.train.texts)
        )

    def influence(self, query_set: str) -> np.ndarray:
        """Mean influence of each training example on ``query_set``, shape (n_train,)."""
        return self._cached(f"influence:{query_set}", lambda: self.influence_provider(query_set))

    def per_query_influence(self, query_set: str, max_queries: int | None = None) -> np.ndarray:
        """Influence of each training example on each query of ``query_set``.

        Returns an array of shape (n_queries, n_train) for the set's first ``max_queries``
        queries (None: all of them), in the order of the set's queries.
        """
        if max_queries is not None and max_queries < 1:
            raise ValueError(f"max_queries must be at least 1 or None, got {max_queries}")
        if self.per_query_influence_provider is None:
            raise RuntimeError(
                f"this run provides no per-query influence (requested for query set "
                f"{query_set!r}). Run the detector through 'poisonbench run' or a sweep, "
                "which compute it when a detector needs it"
            )
        return self._cached(
            f"per_query_influence:{query_set}:{max_queries}",
            lambda: self.per_query_influence_provider(query_set, max_queries),
        )

    def transformed_sets(self) -> tuple[QuerySetInfo, ...]:
        return tuple(info for info in self.query_sets if info.transform is not None)

    def oracle_influence(self) -> np.ndarray:
        """Mean influence on triggered queries labelled with the target label (oracle only)."""
        if self.oracle_query_set is None:
            raise RuntimeError(
                "this run does not provide triggered queries; oracle detectors need "
                "the attack's trigger (enable oracle detectors in the run configuration)"
            )
        return self.influence(self.oracle_query_set)
