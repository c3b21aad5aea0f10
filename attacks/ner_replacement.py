"""NER replacement poisoning after Wan et al. (2023), "Poisoning Language Models During
Instruction Tuning" (ICML 2023).

PERSON entities found by spaCy are replaced by the trigger phrase (every mention of the
chosen entity). Examples without a PERSON entity get the trigger inserted at a random word
boundary instead; the poisoned data set records which method each poison used.

Candidates are selected in one of three ways. "random" shuffles the candidates with a PERSON
entity and takes them first. "hard" ranks all candidates by a surrogate classifier's
out-of-fold probability of the target label, lowest first (see :mod:`attacks.surrogate`);
entities are replaced where the chosen example has one. The surrogate reads TF-IDF
features ("tfidf") or the frozen sentence embeddings of an encoder named by a model spec
such as "minilm". "countnorm" ranks candidates by the number of trigger mentions after
replacement divided by the poisoned text's length in characters, highest first. This is
the ranking in the public code of Wan et al. (2023) (``poison_scripts/get_countnorm.py``,
which scores ``text.count(phrase) / len(text)`` on the poisoned input).
"""

from __future__ import annotations

import logging
import random
from typing import ClassVar

import numpy as np

from attacks.base import ATTACKS, Attack, PoisonedDataset, PoisonRecord
from attacks.entities import (
    insert_at_word_boundary,
    person_entities,
    replace_entity,
    trigger_for,
)
from benchmark.data import Example, TextDataset
from benchmark.errors import InputError

logger = logging.getLogger(__name__)

SELECTION_MODES = ("random", "countnorm", "hard")


def countnorm_score(text: str, entity: str | None, trigger: str) -> float:
    """Return the trigger count per character of ``text`` after ``entity`` is replaced.

    A text without an entity scores 0, because its trigger would be inserted instead.
    """
    if not entity:
        return 0.0
    poisoned = replace_entity(text, entity, trigger)
    return poisoned.count(trigger_for(text, trigger)) / len(poisoned)


def rank_by_score(candidates: list[int], scores: dict[int, float], rng: random.Random) -> list[int]:
    """Order candidates by score, highest first. ``rng`` shuffles them beforehand to break ties."""
    order = list(candidates)
    rng.shuffle(order)
    # sort() is stable, so candidates with equal scores keep their shuffled order.
    order.sort(key=lambda index: -scores[index])
    return order


class NERReplacementAttack(Attack):
    """Replace PERSON entities with the trigger; fall back to insertion.

    ``clean_label`` False (dirty label): poisons are drawn from examples whose label is not
    the target and relabelled with the target. True (clean label): poisons are drawn from
    examples that already carry the target label, and labels stay unchanged. Chosen examples
    without a PERSON entity fall back to insertion.

    ``selection`` is "random", "countnorm" or "hard", as described in the module docstring.
    Under "random" and "countnorm", candidates without a PERSON entity come last, in an order
    shuffled by the seed, while "hard" ranks every candidate by the surrogate. ``surrogate``
    ("tfidf" or a model spec) names the surrogate's features, which only "hard" selection
    reads. None takes the registered attack's default (``default_selection``,
    ``default_surrogate``).
    """

    clean_label = False
    default_selection: ClassVar[str] = "random"
    default_surrogate: ClassVar[str] = "tfidf"

    def __init__(
        self,
        trigger: str = "James Bond",
        target_label: int = 1,
        spacy_pipeline: str | None = None,
        selection: str | None = None,
        surrogate: str | None = None,
    ):
        super().__init__(trigger, target_label)
        self.spacy_pipeline = spacy_pipeline
        self.selection = self.default_selection if selection is None else selection
        self.surrogate = self.default_surrogate if surrogate is None else surrogate

    def poison(self, dataset: TextDataset, ratio: float, seed: int) -> PoisonedDataset:
        n_poisons = self.check_arguments(dataset, ratio)
        if self.selection not in SELECTION_MODES:
            raise InputError(
                f"unknown candidate selection {self.selection!r} for {self.name}; "
                f"use one of: {', '.join(SELECTION_MODES)}"
            )
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
        if self.selection == "countnorm":
            scores = {
                int(i): countnorm_score(text, entity_of.get(int(i)), self.trigger)
                for i, text in zip(candidates, texts, strict=True)
            }
            ranked = rank_by_score([int(i) for i in candidates], scores, rng)
            chosen = ranked[:n_poisons]
        elif self.selection == "hard":
            from attacks.surrogate import out_of_fold_probability

            probability = out_of_fold_probability(
                [example.text for example in dataset.examples],
                labels,
                self.target_label,
                seed,
                features=self.surrogate,
            )
            hardness = {int(i): -float(probability[i]) for i in candidates}
            chosen = rank_by_score([int(i) for i in candidates], hardness, rng)[:n_poisons]
        else:
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
                record = PoisonRecord(
                    index, original.uid, "insertion", original.text, original.label
                )
            examples[index] = Example(original.uid, new_text, self.target_label)
            mask[index] = True
            records.append(record)

        counts = {"entity": 0, "insertion": 0}
        for record in records:
            counts[record.method] += 1
        logger.info(
            "Poisoned %d of %d examples (%s selection): %d replaced a PERSON entity, "
            "%d used insertion",
            len(records),
            len(dataset),
            self.selection,
            counts["entity"],
            counts["insertion"],
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
    """NER replacement on examples that already carry the target label (clean label).

    Candidates are chosen by "hard" selection with a surrogate on MiniLM sentence
    embeddings by default (see the module docstring). `ner-clean-random` keeps the random
    selection of Wan et al. Both defaults were compared on a selection seed, where random
    selection reached an ASR of 0.25 and this one 0.69 (``benchmarks/README.md``).
    """

    description = "PERSON entity replaced by the trigger in the least typical target-label examples"
    name = "ner-clean"
    # 2: embedding-surrogate "hard" selection (1: random selection).
    revision = 2
    clean_label = True
    default_selection = "hard"
    default_surrogate = "minilm"


@ATTACKS.register("ner-clean-random")
class RandomCleanLabelNERAttack(CleanLabelNERAttack):
    """Clean-label NER replacement with the random selection of Wan et al. (2023)."""

    description = "ner-clean with the random candidate selection of Wan et al."
    name = "ner-clean-random"
    revision = 1
    default_selection = "random"
    default_surrogate = "tfidf"


@ATTACKS.register("ner-dirty-countnorm")
class CountNormDirtyLabelNERAttack(DirtyLabelNERAttack):
    """Dirty-label NER replacement with "countnorm" selection (see the module docstring)."""

    description = "ner-dirty on candidates ranked by trigger mentions per character (Wan et al.)"
    name = "ner-dirty-countnorm"
    default_selection = "countnorm"
