"""Inputs for the attack success rate (ASR), built the same way for every attack."""

from __future__ import annotations

from attacks.base import Attack
from benchmark.data import Example, TextDataset
from benchmark.errors import InputError


def asr_examples(test_dataset: TextDataset, target_label: int) -> list[Example]:
    """Return the test examples whose true label is not ``target_label``, in data set order.

    Only these count towards the ASR, because a triggered input that already has the target
    label would count as a success without any backdoor.
    """
    if not 0 <= target_label < len(test_dataset.label_names):
        raise InputError(
            f"target label {target_label} is not in the label set of {test_dataset.name} "
            f"(0..{len(test_dataset.label_names) - 1}: {list(test_dataset.label_names)})"
        )
    examples = [example for example in test_dataset if example.label != target_label]
    if not examples:
        raise InputError(
            f"{test_dataset.name} has no example with a label other than the target label "
            f"{target_label}, so the attack success rate cannot be measured; use a test set "
            "with other labels"
        )
    return examples


def triggered_inputs(attack: Attack, test_dataset: TextDataset, seed: int, **kwargs) -> list[str]:
    """Return the ASR examples of ``test_dataset`` with the attack's trigger applied.

    The i-th output belongs to the i-th example of :func:`asr_examples`. ``kwargs`` go to
    ``attack.apply_trigger_batch``, for example ``forms="held_out"`` for ``multi-form``.
    """
    texts = [example.text for example in asr_examples(test_dataset, attack.target_label)]
    return attack.apply_trigger_batch(texts, seed, **kwargs)
