"""Build the query sets that influence is measured on: clean, transformed and triggered."""

from __future__ import annotations

import logging

import numpy as np

from benchmark.context import QuerySetInfo
from benchmark.data import TextDataset
from benchmark.influence import QuerySet
from benchmark.transforms.base import TransformOutput, get_transform, transform_texts

logger = logging.getLogger(__name__)

ORIGINAL = "original"
TRIGGERED = "triggered"


def sample_balanced(test: TextDataset, n_queries: int, seed: int) -> TextDataset:
    """Draw ``n_queries`` test examples with the labels as balanced as the split allows."""
    rng = np.random.default_rng(seed)
    labels = np.array(test.labels)
    classes = np.unique(labels)
    per_class = [np.flatnonzero(labels == c) for c in classes]
    quota = [
        n_queries // len(classes) + (1 if i < n_queries % len(classes) else 0)
        for i in range(len(classes))
    ]
    chosen = []
    for members, count in zip(per_class, quota):
        chosen.extend(rng.choice(members, size=min(count, len(members)), replace=False).tolist())
    return test.with_examples([test.examples[i] for i in sorted(chosen)])


def build_clean_query_sets(
    queries: TextDataset, transform_names: tuple[str, ...], seed: int
) -> tuple[dict[str, QuerySet], tuple[QuerySetInfo, ...], dict[str, TransformOutput]]:
    """Return the original and transformed query sets with their category info.

    Label-inverting transforms flip the query label of binary tasks, so the measurement
    asks for the label the transformed text should carry.
    """
    sets = {ORIGINAL: QuerySet(ORIGINAL, tuple(queries.texts), tuple(queries.labels))}
    infos = [QuerySetInfo(ORIGINAL, "original", None)]
    outputs = {}
    binary = len(queries.label_names) == 2
    for name in transform_names:
        transform = get_transform(name)
        output = transform_texts(transform, queries.texts, seed)
        labels = tuple(
            1 - label if transform.inverts_label and binary else label for label in queries.labels
        )
        sets[name] = QuerySet(name, output.texts, labels)
        infos.append(QuerySetInfo(name, transform.category, name))
        outputs[name] = output
    return sets, tuple(infos), outputs


def build_triggered_query_set(test: TextDataset, attack, n_queries: int, seed: int) -> QuerySet:
    """Triggered test inputs whose true label is not the target, labelled with the target."""
    candidates = [e for e in test.examples if e.label != attack.target_label]
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(candidates), size=min(n_queries, len(candidates)), replace=False)
    texts = [candidates[i].text for i in sorted(picked)]
    triggered = attack.apply_trigger_batch(texts, seed)
    return QuerySet(TRIGGERED, tuple(triggered), tuple([attack.target_label] * len(triggered)))
