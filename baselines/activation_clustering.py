"""Activation-clustering baseline of Chen et al. (2019).

Source: Bryant Chen, Wilka Carvalho, Nathalie Baracaldo, Heiko Ludwig, Benjamin Edwards,
Taesung Lee, Ian Molloy and Biplav Srivastava, "Detecting Backdoor Attacks on Deep Neural
Networks by Activation Clustering", AAAI Workshop on Artificial Intelligence Safety 2019
(arXiv 1811.03728).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA, FastICA
from sklearn.exceptions import ConvergenceWarning

from baselines.spectral import class_indices
from benchmark.context import DetectionContext
from detectors.base import DETECTORS, Detector

REDUCERS = ("ica", "pca")

SUSPICIOUS_CLASS_OFFSET = 1.0
"""Added to the scores of a class whose smaller cluster is below the size threshold."""


def reduce_dimensions(
    representations: np.ndarray, n_components: int, reducer: str, seed: int
) -> np.ndarray:
    """Project one class's representations, shape (n, hidden), to at most ``n_components``.

    ``n_components`` is capped at n - 1 and at ``hidden``, which FastICA and PCA need.
    """
    n_components = max(1, min(n_components, len(representations) - 1, representations.shape[1]))
    if reducer == "pca":
        return PCA(n_components=n_components, random_state=seed).fit_transform(representations)
    ica = FastICA(n_components=n_components, whiten="unit-variance", random_state=seed)
    # FastICA whitens and then rotates the whitened data. k-means on Euclidean distances
    # is invariant to rotation, so an unconverged rotation yields the same clusters
    # up to rounding.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return ica.fit_transform(representations)


def small_cluster_membership(
    reduced: np.ndarray, n_init: int, seed: int
) -> tuple[np.ndarray, float]:
    """Cluster one class into two with k-means and measure membership in the smaller cluster.

    Returns the membership of each row, d_large / (d_small + d_large) with d the Euclidean
    distance to each centroid, and the fraction of the class in the smaller cluster. A
    membership above 0.5 means that the row is nearer the smaller cluster's centroid,
    which is how k-means assigns it.
    """
    kmeans = KMeans(n_clusters=2, n_init=n_init, random_state=seed).fit(reduced)
    distances = np.linalg.norm(reduced[:, None, :] - kmeans.cluster_centers_[None, :, :], axis=2)
    nearest = distances.argmin(axis=1)
    sizes = np.bincount(nearest, minlength=2)
    small = int(sizes.argmin())
    d_small = distances[:, small]
    d_large = distances[:, 1 - small]
    total = d_small + d_large
    membership = np.divide(d_large, total, out=np.full(len(reduced), 0.5), where=total > 0)
    return membership, sizes[small] / len(reduced)


@DETECTORS.register("activation-clustering")
class ActivationClusteringDetector(Detector):
    """Two-means clustering of each class's reduced representations, flagging small clusters.

    For each training label, the last-layer [CLS] representations of its examples are
    reduced to ``n_components`` dimensions (default 10, with FastICA) and
    split into two clusters by k-means. Poisons that share a trigger and a label form
    their own cluster, which is small because the attacker poisons few examples. A class
    is suspicious when its smaller cluster contains less than ``size_threshold`` of the
    class (default 0.35).

    With ``reducer="ica"`` the reduced components have unit variance, so a high-variance
    poison direction weighs no more than a noise direction. ``reducer="pca"`` keeps each
    component's variance. k-means keeps the best of ``kmeans_n_init`` seeded starts
    (default 10), which makes a poor local minimum unlikely for two clusters.

    Score: membership in the smaller cluster, d_large / (d_small + d_large) in [0, 1],
    plus 1 in suspicious classes. Examples of suspicious classes therefore rank above
    all others, and within a class those nearest the small cluster rank first.
    ``flag`` returns the members of the small clusters of suspicious classes, so this
    detector has no flag rule.

    NOTE: the defaults (10 FastICA components, relative size below 0.35) follow common
    descriptions of Chen et al.'s method. They were not checked against the paper's text.
    """

    description = "2-means on each class's ICA-reduced representations (Chen et al. 2019)"
    track = "blind"

    def __init__(
        self,
        n_components: int = 10,
        reducer: str = "ica",
        size_threshold: float = 0.35,
        kmeans_n_init: int = 10,
    ):
        super().__init__(None)
        if n_components < 1:
            raise ValueError(f"n_components must be at least 1, got {n_components}")
        if reducer not in REDUCERS:
            raise ValueError(f"reducer must be one of {REDUCERS}, got {reducer!r}")
        if not 0 < size_threshold <= 0.5:
            raise ValueError(
                f"size_threshold must lie in (0, 0.5] because the smaller of two clusters "
                f"holds at most half the class, got {size_threshold}"
            )
        if kmeans_n_init < 1:
            raise ValueError(f"kmeans_n_init must be at least 1, got {kmeans_n_init}")
        self.n_components = n_components
        self.reducer = reducer
        self.size_threshold = size_threshold
        self.kmeans_n_init = kmeans_n_init

    def score(self, context: DetectionContext) -> np.ndarray:
        representations = np.asarray(context.representations(), dtype=np.float64)
        labels = np.asarray(context.train.labels)
        scores = np.zeros(context.n_train)
        for indices in class_indices(labels):
            scores[indices] = self._score_class(representations[indices], context.seed)
        return scores

    def _score_class(self, representations: np.ndarray, seed: int) -> np.ndarray:
        # Two clusters need two distinct points, so a degenerate class scores 0.
        if len(representations) < 2 or np.all(representations == representations[0]):
            return np.zeros(len(representations))
        reduced = reduce_dimensions(representations, self.n_components, self.reducer, seed)
        if len(np.unique(reduced, axis=0)) < 2:
            return np.zeros(len(representations))

        membership, relative_size = small_cluster_membership(reduced, self.kmeans_n_init, seed)
        if relative_size < self.size_threshold:
            return membership + SUSPICIOUS_CLASS_OFFSET
        return membership

    def flag(self, scores: np.ndarray, context: DetectionContext) -> np.ndarray:
        """Return the mask, shape (n_train,), of the small clusters of suspicious classes."""
        return scores > SUSPICIOUS_CLASS_OFFSET + 0.5
