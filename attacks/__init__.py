"""Poisoning attacks behind one interface; importing the package registers them."""

from attacks.base import ATTACKS, Attack, PoisonedDataset, PoisonRecord, get_attack
from attacks import ner_replacement  # noqa: F401  (registration)

__all__ = ["ATTACKS", "Attack", "PoisonRecord", "PoisonedDataset", "get_attack"]
