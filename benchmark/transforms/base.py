"""The transform interface, its registry and helpers to apply transforms to query texts."""

from __future__ import annotations

import logging
import random
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from benchmark.registry import Registry

logger = logging.getLogger(__name__)

CATEGORIES = ("lexicon", "semantic", "structural")


class Transform(ABC):
    """A semantic transformation of one query text.

    Subclasses set ``name``, ``category`` (one of :data:`CATEGORIES`), ``description`` (one
    line for ``poisonbench list transforms``) and ``inverts_label``: True when the transform
    is meant to flip the sentiment of the text, so the query's label is flipped with it for
    binary tasks. ``apply`` must be deterministic given the text and the state of ``rng``.
    """

    name: ClassVar[str]
    category: ClassVar[str]
    description: ClassVar[str]
    inverts_label: ClassVar[bool]

    @abstractmethod
    def apply(self, text: str, rng: random.Random) -> str:
        """Return the transformed text (the input unchanged where no rule applies)."""


TRANSFORMS: Registry[Transform] = Registry("transform", "poisonbench.transforms")


@dataclass(frozen=True)
class TransformOutput:
    """The result of applying one transform to a list of texts."""

    name: str
    category: str
    inverts_label: bool
    texts: tuple[str, ...]
    changed: tuple[bool, ...]

    @property
    def n_changed(self) -> int:
        return sum(self.changed)

    @property
    def changed_fraction(self) -> float:
        return self.n_changed / len(self.changed) if self.changed else 0.0


def transform_texts(transform: Transform, texts: Sequence[str], seed: int) -> TransformOutput:
    """Apply ``transform`` to every text with one seeded RNG; warn when under half changed."""
    rng = random.Random(f"{transform.name}:{seed}")
    outputs = tuple(transform.apply(text, rng) for text in texts)
    changed = tuple(new != old for new, old in zip(outputs, texts))
    result = TransformOutput(
        transform.name, transform.category, transform.inverts_label, outputs, changed
    )
    logger.info(
        "Transform %s changed %d of %d queries", transform.name, result.n_changed, len(texts)
    )
    if texts and result.changed_fraction < 0.5:
        logger.warning(
            "Transform %s changed only %d of %d queries (under half); its influence scores "
            "mostly repeat the original query set",
            transform.name,
            result.n_changed,
            len(texts),
        )
    return result


def get_transform(name: str) -> Transform:
    """Instantiate the registered transform called ``name``."""
    import benchmark.transforms  # noqa: F401  (registers the built-in transforms)

    return TRANSFORMS.get(name)()


def select_transforms(
    names: Iterable[str] | None = None, exclude_categories: Iterable[str] = ()
) -> list[Transform]:
    """Return the named transforms (all registered ones when None) minus excluded categories."""
    import benchmark.transforms  # noqa: F401

    excluded = set(exclude_categories)
    unknown = excluded - set(CATEGORIES)
    if unknown:
        raise ValueError(f"unknown transform categories {sorted(unknown)}; known: {CATEGORIES}")
    chosen = list(names) if names is not None else TRANSFORMS.names()
    transforms = [TRANSFORMS.get(name)() for name in chosen]
    return [t for t in transforms if t.category not in excluded]
