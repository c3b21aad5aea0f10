"""Poisoning attacks behind one interface; importing the package registers them."""

from attacks import (  # noqa: F401  (registration)
    adaptive,
    multi_form,
    ner_replacement,
    syntactic,
    triggers,
)
from attacks.base import ATTACKS, Attack, PoisonedDataset, PoisonRecord, get_attack

__all__ = ["ATTACKS", "Attack", "PoisonRecord", "PoisonedDataset", "get_attack"]
