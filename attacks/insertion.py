"""Steps shared by the attacks: drawing poison candidates, placing a trigger, building the result.

The text edits here insert phrases verbatim. Callers that want the trigger in the casing of
the text pass it through :func:`attacks.entities.trigger_for` first.
"""

from __future__ import annotations

import logging
import random
import re
from abc import abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from attacks.base import Attack, PoisonedDataset, PoisonRecord
from benchmark.data import Example, TextDataset
from benchmark.errors import InputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoisonEdit:
    """One poisoned example: its record, its new text and its new label."""

    record: PoisonRecord
    text: str
    label: int


def candidate_indices(
    dataset: TextDataset, target_label: int, clean_label: bool = False
) -> list[int]:
    """Return the indices that may become poisons, in data set order.

    Dirty label (the default) draws from examples whose label is not the target, clean
    label from examples that already carry it.
    """
    labels = np.array(dataset.labels)
    if clean_label:
        return [int(i) for i in np.flatnonzero(labels == target_label)]
    return [int(i) for i in np.flatnonzero(labels != target_label)]


def require_candidates(
    n_poisons: int,
    candidates: Sequence[int],
    dataset: TextDataset,
    ratio: float,
    target_label: int,
    clean_label: bool = False,
) -> None:
    """Raise InputError when fewer than ``n_poisons`` candidates exist."""
    if n_poisons <= len(candidates):
        return
    kind = "with" if clean_label else "without"
    raise InputError(
        f"{n_poisons} poisons requested (ratio {ratio} of {len(dataset)}) but only "
        f"{len(candidates)} examples {kind} the target label {target_label} exist; "
        "lower the poison ratio"
    )


def insert_phrase(text: str, phrase: str, rng: random.Random) -> str:
    """Insert ``phrase`` unchanged between two words (or at either end) chosen by ``rng``.

    Words are split on single spaces, so other whitespace in ``text`` is kept. An empty
    text becomes the phrase alone.
    """
    if not text:
        return phrase
    words = text.split(" ")
    position = rng.randint(0, len(words))
    words.insert(position, phrase)
    return " ".join(words)


def replace_mentions(text: str, entity: str, replacement: str) -> str:
    """Replace every whole-word mention of ``entity`` by ``replacement`` written as given.

    Mentions match case-insensitively.
    """
    pattern = re.compile(r"(?<!\w)" + re.escape(entity) + r"(?!\w)", re.IGNORECASE)
    return pattern.sub(lambda _: replacement, text)


def place_phrase(
    text: str, entity: str | None, phrase: str, rng: random.Random
) -> tuple[str, str]:
    """Put ``phrase`` in place of ``entity`` when given, else at a random word boundary.

    Returns the new text and the :class:`PoisonRecord` method, "entity" or "insertion".
    """
    if entity:
        return replace_mentions(text, entity, phrase), "entity"
    return insert_phrase(text, phrase, rng), "insertion"


def entity_first_order(
    candidates: Sequence[int], entities: Sequence[Sequence[str]], rng: random.Random
) -> list[int]:
    """Order candidates with a PERSON entity first, each group shuffled by ``rng``.

    This is the "random" selection of the NER attack: entity replacement is preferred, and
    insertion fills the rest of the budget.
    """
    with_entity = [int(i) for i, names in zip(candidates, entities, strict=True) if names]
    without_entity = [int(i) for i, names in zip(candidates, entities, strict=True) if not names]
    rng.shuffle(with_entity)
    rng.shuffle(without_entity)
    return with_entity + without_entity


def assemble_poisoned_dataset(
    dataset: TextDataset, edits: Sequence[PoisonEdit], attack: str, trigger: str, target_label: int
) -> PoisonedDataset:
    """Apply ``edits`` to ``dataset`` and return it with the poison mask and records.

    Records are stored in index order, so the fingerprint does not depend on the order in
    which an attack chose its poisons.
    """
    examples = list(dataset.examples)
    mask = np.zeros(len(dataset), dtype=bool)
    ordered = sorted(edits, key=lambda edit: edit.record.index)
    for edit in ordered:
        index = edit.record.index
        if mask[index]:
            raise ValueError(f"internal error: {attack} poisoned example {index} twice")
        examples[index] = Example(examples[index].uid, edit.text, edit.label)
        mask[index] = True

    counts = Counter(edit.record.method for edit in ordered)
    logger.info(
        "%s poisoned %d of %d examples (%s)",
        attack,
        len(ordered),
        len(dataset),
        ", ".join(f"{method}: {count}" for method, count in sorted(counts.items())),
    )
    return PoisonedDataset(
        dataset.with_examples(examples),
        mask,
        tuple(edit.record for edit in ordered),
        attack=attack,
        trigger=trigger,
        target_label=target_label,
    )


class TextEditAttack(Attack):
    """A dirty-label attack that edits the text of randomly drawn examples.

    Poisons are drawn uniformly without replacement from the examples whose label is not
    the target, edited by :meth:`edit` and relabelled with the target. Subclasses implement
    :meth:`edit` and may override :meth:`validate` and :attr:`method`.
    """

    name: ClassVar[str]
    method: ClassVar[str] = "insertion"

    def validate(self) -> None:
        """Raise InputError when a parameter is invalid (the base class accepts all)."""

    @abstractmethod
    def edit(self, text: str, rng: random.Random) -> str:
        """Return ``text`` carrying the trigger, drawing any random choice from ``rng``."""

    def poison(self, dataset: TextDataset, ratio: float, seed: int) -> PoisonedDataset:
        n_poisons = self.check_arguments(dataset, ratio)
        self.validate()
        candidates = candidate_indices(dataset, self.target_label)
        require_candidates(n_poisons, candidates, dataset, ratio, self.target_label)

        rng = random.Random(seed)
        chosen = sorted(rng.sample(candidates, n_poisons))
        edits = []
        for index in chosen:
            original = dataset.examples[index]
            record = PoisonRecord(index, original.uid, self.method, original.text, original.label)
            edits.append(PoisonEdit(record, self.edit(original.text, rng), self.target_label))
        return assemble_poisoned_dataset(
            dataset, edits, self.name, self.trigger, self.target_label
        )

    def apply_trigger(self, text: str, seed: int) -> str:
        self.validate()
        return self.edit(text, random.Random(seed))
