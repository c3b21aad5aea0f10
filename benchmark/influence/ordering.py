"""Order training examples by length so that padded batches waste little compute.

Batches are padded to their longest item. In the data set's own order a batch of 32 SST-2
sentences is padded to nearly the longest sentence of the sample, so most token positions
of the factor and scoring passes are padding. Sorting by length makes batches of similar
lengths. Influence scores do not depend on the order of the training examples, and EK-FAC
factors are sums over examples, so only the Fisher labels that kronfluence samples from the
model change with the order (they are drawn batch by batch from the seeded generator).

kronfluence fits on a prefix of the data set when ``covariance_max_examples`` or
``lambda_max_examples`` is set, so the order starts from a seeded random permutation and
sorts each segment between those caps separately: every such prefix stays a uniform random
sample of the training set.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from torch.utils.data import Dataset, Subset


def length_sorted_order(
    lengths: Sequence[int], seed: int, prefixes: Iterable[int | None] = ()
) -> np.ndarray:
    """Return a permutation of ``range(len(lengths))``, longest first within each segment.

    ``prefixes`` are prefix sizes that must each hold a uniform random sample; None entries
    are ignored. Ties keep the order of the seeded permutation.
    """
    n = len(lengths)
    permutation = np.random.default_rng(seed).permutation(n)
    bounds = sorted({int(p) for p in prefixes if p is not None and 0 < int(p) < n})
    lengths_array = np.asarray(lengths, dtype=np.int64)
    segments = []
    for start, stop in zip([0, *bounds], [*bounds, n], strict=True):
        segment = permutation[start:stop]
        segments.append(segment[np.argsort(-lengths_array[segment], kind="stable")])
    return np.concatenate(segments) if segments else permutation


def item_lengths(dataset: Dataset) -> list[int]:
    """Return the token count of every item (the length of its ``input_ids``)."""
    return [int(dataset[i]["input_ids"].shape[-1]) for i in range(len(dataset))]


def reorder(dataset: Dataset, order: np.ndarray) -> Subset:
    """Return ``dataset`` viewed in ``order``."""
    return Subset(dataset, [int(i) for i in order])


def restore_order(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Undo :func:`reorder` on per-example values along the last axis."""
    restored = np.empty_like(values)
    restored[..., order] = values
    return restored
