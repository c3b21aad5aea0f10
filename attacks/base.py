"""The attack interface: poison a training set, and build triggered test inputs."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np

from benchmark.data import TextDataset
from benchmark.errors import InputError
from benchmark.registry import Registry


@dataclass(frozen=True)
class PoisonRecord:
    """Record of the change an attack made to one training example.

    ``method`` is "entity" when a named entity was replaced by the trigger, "insertion"
    when the trigger was inserted at a word boundary, "selection" when the text was kept.
    """

    index: int
    uid: str
    method: str
    original_text: str
    original_label: int
    replaced: str | None = None


@dataclass(frozen=True)
class PoisonedDataset:
    """A training set after poisoning.

    ``poison_mask`` is a boolean array of shape (n,), True where the example is a poison.
    Detectors never see it; only the metrics do.
    """

    dataset: TextDataset
    poison_mask: np.ndarray
    records: tuple[PoisonRecord, ...]
    attack: str
    trigger: str
    target_label: int

    @property
    def n_poisons(self) -> int:
        return int(self.poison_mask.sum())

    def method_counts(self) -> dict[str, int]:
        return dict(Counter(record.method for record in self.records))

    def fingerprint(self) -> str:
        """Return a SHA-256 digest of the poisoned texts, labels and mask."""
        digest = hashlib.sha256(self.dataset.fingerprint().encode())
        digest.update(self.poison_mask.astype(np.uint8).tobytes())
        digest.update(json.dumps([asdict(record) for record in self.records]).encode())
        return digest.hexdigest()


class Attack(ABC):
    """A poisoning attack.

    Subclasses set ``description`` (one line). Parameters are stored unchanged in
    ``__init__``; :meth:`poison` validates them against the data set.

    ``revision`` counts changes of an attack's defaults that change what it produces. Stage
    caches key on it (from revision 2 on), so data poisoned under older defaults is not
    reused.
    """

    description: ClassVar[str]
    revision: ClassVar[int] = 1

    def __init__(self, trigger: str, target_label: int):
        self.trigger = trigger
        self.target_label = target_label

    @abstractmethod
    def poison(self, dataset: TextDataset, ratio: float, seed: int) -> PoisonedDataset:
        """Return ``dataset`` with round(ratio * len(dataset)) poisons."""

    @abstractmethod
    def apply_trigger(self, text: str, seed: int) -> str:
        """Return ``text`` carrying the trigger, for attack-success-rate inputs."""

    def apply_trigger_batch(self, texts: list[str], seed: int) -> list[str]:
        return [self.apply_trigger(text, seed + i) for i, text in enumerate(texts)]

    def check_arguments(self, dataset: TextDataset, ratio: float) -> int:
        """Validate ``ratio`` and the target label; return the number of poisons."""
        if not 0 < ratio <= 1:
            raise InputError(f"poison ratio must lie in (0, 1], got {ratio}")
        if not 0 <= self.target_label < len(dataset.label_names):
            raise InputError(
                f"target label {self.target_label} is not in the label set of {dataset.name} "
                f"(0..{len(dataset.label_names) - 1}: {list(dataset.label_names)})"
            )
        n_poisons = round(ratio * len(dataset))
        if n_poisons < 1:
            raise InputError(
                f"poison ratio {ratio} of {len(dataset)} examples rounds to 0 poisons; "
                "raise the ratio or use more training examples"
            )
        return n_poisons


ATTACKS: Registry[Attack] = Registry("attack", "poisonbench.attacks")


def get_attack(name: str, **params) -> Attack:
    """Instantiate the registered attack called ``name``."""
    import attacks  # noqa: F401  (registers the built-in attacks)

    return ATTACKS.get(name)(**params)
