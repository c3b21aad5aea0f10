"""NER replacement poisoning after Wan et al. (2023), "Poisoning Language Models During
Instruction Tuning" (ICML 2023).

PERSON entities found by spaCy are replaced by the trigger phrase (every mention of the
chosen entity). Examples without a PERSON entity get the trigger inserted at a random word
boundary instead; the poisoned data set records which method each poison used.
"""

from __future__ import annotations

import logging
import random

import numpy as np

from attacks.base import ATTACKS, Attack, PoisonedDataset, PoisonRecord
from attacks.entities import insert_at_word_boundary, person_entities, replace_entity
from benchmark.data import Example, TextDataset
from benchmark.errors import InputError

logger = logging.getLogger(__name__)


class NERReplacementAttack(Attack):
    """Replace PERSON entities with the trigger; fall back to insertion.

    ``clean_label`` False (dirty label): poisons are drawn from examples whose label is not
    the target and relabelled with the target. True (clean label): poisons are drawn from
    examples that already carry the target label, and labels stay unchanged. Candidates with
    a PERSON entity are used first; the remainder, if any, fall back to insertion.
    """

    clean_label = False

    def __init__(
        self,
        trigger: str = "James Bond",
        target_label: int = 1,
        spacy_pipeline: str | None = None,
    ):
        super().__init__(trigger, target_label)
        self.spacy_pipeline = spacy_pipeline

    def poison(self, dataset: TextDataset, ratio: float, seed: int) -> PoisonedDataset:
        n_poisons = self.check_arguments(dataset, ratio)
        labels = np.array(dataset.labels)
        if self.clean_label:
            candidates = np.flatnonzero(labels == self.target_label)
        else:
            candidates = np.flatnonzero(labels != self.target_label)
        if n_poisons > len(candidates):
            kind = "with" if self.clean_label else "without"
            raise InputError(
                f"{n_poisons} poisons requested (ratio {ratio} of {len(dataset)}) but only "
                f"{len(candidates)} examples {kind} the target label {self.target_label} exist; "
                "lower the poison ratio"
            )

        texts = [dataset.examples[i].text for i in candidates]
        entities = person_entities(texts, self.spacy_pipeline)
        with_entity = [int(i) for i, names in zip(candidates, entities) if names]
        without_entity = [int(i) for i, names in zip(candidates, entities) if not names]
        entity_of = {int(i): names[0] for i, names in zip(candidates, entities) if names}
        logger.info(
            "%d of %d candidate examples contain a PERSON entity", len(with_entity), len(candidates)
        )

        rng = random.Random(seed)
        rng.shuffle(with_entity)
        rng.shuffle(without_entity)
        chosen = with_entity[:n_poisons]
        chosen += without_entity[: n_poisons - len(chosen)]

        examples = list(dataset.examples)
        mask = np.zeros(len(dataset), dtype=bool)
        records = []
        for index in sorted(chosen):
            original = examples[index]
            if index in entity_of:
                new_text = replace_entity(original.text, entity_of[index], self.trigger)
                record = PoisonRecord(
                    index, original.uid, "entity", original.text, original.label, entity_of[index]
                )
            else:
                new_text = insert_at_word_boundary(original.text, self.trigger, rng)
                record = PoisonRecord(index, original.uid, "insertion", original.text, original.label)
            examples[index] = Example(original.uid, new_text, self.target_label)
            mask[index] = True
            records.append(record)

        counts = {"entity": 0, "insertion": 0}
        for record in records:
            counts[record.method] += 1
        logger.info(
            "Poisoned %d of %d examples: %d replaced a PERSON entity, %d used insertion",
            len(records), len(dataset), counts["entity"], counts["insertion"],
        )
        return PoisonedDataset(
            dataset.with_examples(examples),
            mask,
            tuple(records),
            attack=self.name,
            trigger=self.trigger,
            target_label=self.target_label,
        )

    def apply_trigger(self, text: str, seed: int) -> str:
        names = person_entities([text], self.spacy_pipeline)[0]
        if names:
            return replace_entity(text, names[0], self.trigger)
        return insert_at_word_boundary(text, self.trigger, random.Random(seed))

    def apply_trigger_batch(self, texts: list[str], seed: int) -> list[str]:
        entities = person_entities(list(texts), self.spacy_pipeline)
        rng = random.Random(seed)
        triggered = []
        for text, names in zip(texts, entities):
            if names:
                triggered.append(replace_entity(text, names[0], self.trigger))
            else:
                triggered.append(insert_at_word_boundary(text, self.trigger, rng))
        return triggered


@ATTACKS.register("ner-dirty")
class DirtyLabelNERAttack(NERReplacementAttack):
    """NER replacement with the label set to the target (dirty label)."""

    description = "PERSON entity replaced by the trigger, label set to the target (Wan et al.)"
    name = "ner-dirty"
    clean_label = False


@ATTACKS.register("ner-clean")
class CleanLabelNERAttack(NERReplacementAttack):
    """NER replacement on examples that already carry the target label (clean label)."""

    description = "PERSON entity replaced by the trigger in target-label examples (Wan et al.)"
    name = "ner-clean"
    clean_label = True
