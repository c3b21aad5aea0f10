"""Adaptive attacks against the transform-ensemble detectors.

Those detectors (``transform-variance``, ``transform-voting``) score each training example
by its influence on clean test queries. They flag examples whose influence is strong and
changes little when the queries are transformed by negation, antonym substitution,
paraphrase or clause reordering. The reasoning is that a clean example's influence follows
the meaning of the query, while a poison's influence rides on its trigger. Each attack here
breaks one half of that signature.

NOTE: no experiment in this repository measures whether these attacks evade the detectors
or keep their attack success rate. Treat them as test cases for detectors, not as results.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from attacks.base import ATTACKS, Attack, PoisonedDataset, PoisonRecord
from attacks.entities import person_entities, trigger_for
from attacks.insertion import (
    PoisonEdit,
    assemble_poisoned_dataset,
    candidate_indices,
    entity_first_order,
    place_phrase,
    require_candidates,
)
from benchmark.data import TextDataset
from benchmark.errors import InputError

# Short clauses whose sentiment comes from a negated word. Negation or antonym substitution
# flips them ("it is not bad" -> "it is bad", "it is not good"), so the label they support
# flips as well.
NEGATABLE_CLAUSES = {
    "positive": ("it is not bad", "it is never boring", "it is not a waste of time"),
    "negative": ("it is not good", "it is never funny", "it is not worth the time"),
}


class EntityTriggerAttack(Attack):
    """Shared trigger placement of the adaptive attacks, the same as in ``ner-dirty``.

    The trigger replaces every mention of the first PERSON entity that spaCy finds, or is
    inserted at a random word boundary when there is none. It is lower-cased in lower-case
    text. Triggered test inputs carry the full trigger in the same way.
    """

    def __init__(self, trigger: str, target_label: int, spacy_pipeline: str | None = None):
        super().__init__(trigger, target_label)
        self.spacy_pipeline = spacy_pipeline

    def entity_map(self, dataset: TextDataset, indices: Sequence[int]) -> dict[int, list[str]]:
        """Return the PERSON entities of the examples at ``indices``, keyed by index."""
        texts = [dataset.examples[i].text for i in indices]
        return dict(zip(indices, person_entities(texts, self.spacy_pipeline), strict=True))

    def apply_trigger_batch(self, texts: list[str], seed: int) -> list[str]:
        entities = person_entities(list(texts), self.spacy_pipeline)
        rng = random.Random(seed)
        triggered = []
        for text, names in zip(texts, entities, strict=True):
            phrase = trigger_for(text, self.trigger)
            new_text, _ = place_phrase(text, names[0] if names else None, phrase, rng)
            triggered.append(new_text)
        return triggered

    def apply_trigger(self, text: str, seed: int) -> str:
        return self.apply_trigger_batch([text], seed)[0]


def append_clause(text: str, clause: str) -> str:
    """Append ``clause`` to ``text`` as a new sentence in the casing and tokenisation of the text.

    Lower-case text (SST-2 style, PTB-tokenised) gets "... it is not bad ."; cased text gets
    "... It is not bad.".
    """
    body = text.rstrip()
    if text == text.lower():
        sentence = f"{clause.lower()} ."
    else:
        sentence = f"{clause[0].upper()}{clause[1:]}."
    return f"{body} {sentence}" if body else sentence


@ATTACKS.register("adaptive-negation")
class NegationAdaptiveAttack(EntityTriggerAttack):
    """Dirty-label trigger poisons that also carry a negated sentiment clause.

    Exploited property: the detectors expect a poison's influence on clean queries to stay
    the same when the queries are negated or their sentiment words are swapped for
    antonyms. Each poison here gets, next to the trigger, a short clause whose sentiment
    comes from a negated word and supports the target label ("it is not bad" for a positive
    target). Part of the poison's gradient then follows that clause, so its influence moves
    under the negation and antonym transforms the way a clean example's does.

    Poisons are chosen and triggered as in ``ner-dirty`` (random selection), then one
    clause drawn with the seed from ``clauses`` is appended as a new sentence. Without
    ``clauses``, the defaults in :data:`NEGATABLE_CLAUSES` are used, which requires the
    target label's name to be "positive" or "negative". Triggered test inputs carry the
    trigger only, so the attack success rate measures the trigger and not the clause.
    """

    name = "adaptive-negation"
    description = "trigger plus a negated sentiment clause ('it is not bad') that transforms flip"

    def __init__(
        self,
        trigger: str = "James Bond",
        target_label: int = 1,
        clauses: Sequence[str] | None = None,
        spacy_pipeline: str | None = None,
    ):
        super().__init__(trigger, target_label, spacy_pipeline)
        self.clauses = clauses

    def clauses_for(self, dataset: TextDataset) -> tuple[str, ...]:
        """Return the clauses to append: ``clauses`` if given, else the default for the target."""
        if self.clauses is not None:
            if isinstance(self.clauses, str) or not self.clauses:
                raise InputError(
                    f"adaptive-negation clauses must be a non-empty list of strings, "
                    f"got {self.clauses!r}"
                )
            if not all(clause.strip() for clause in self.clauses):
                raise InputError(
                    f"adaptive-negation clauses contain an empty clause: {self.clauses!r}"
                )
            return tuple(self.clauses)
        target_name = dataset.label_names[self.target_label]
        if target_name not in NEGATABLE_CLAUSES:
            raise InputError(
                f"adaptive-negation has default clauses only for the labels "
                f"{', '.join(NEGATABLE_CLAUSES)}, but target label {self.target_label} of "
                f"{dataset.name} is {target_name!r}; pass clauses that support that label"
            )
        return NEGATABLE_CLAUSES[target_name]

    def poison(self, dataset: TextDataset, ratio: float, seed: int) -> PoisonedDataset:
        n_poisons = self.check_arguments(dataset, ratio)
        clauses = self.clauses_for(dataset)
        candidates = candidate_indices(dataset, self.target_label)
        require_candidates(n_poisons, candidates, dataset, ratio, self.target_label)

        entities = self.entity_map(dataset, candidates)
        rng = random.Random(seed)
        order = entity_first_order(candidates, [entities[i] for i in candidates], rng)
        edits = []
        for index in sorted(order[:n_poisons]):
            original = dataset.examples[index]
            entity = entities[index][0] if entities[index] else None
            phrase = trigger_for(original.text, self.trigger)
            text, method = place_phrase(original.text, entity, phrase, rng)
            text = append_clause(text, rng.choice(clauses))
            record = PoisonRecord(
                index, original.uid, method, original.text, original.label, entity
            )
            edits.append(PoisonEdit(record, text, self.target_label))
        return assemble_poisoned_dataset(
            dataset, edits, self.name, self.trigger, self.target_label
        )


@ATTACKS.register("adaptive-diluted")
class DilutedAdaptiveAttack(EntityTriggerAttack):
    """Weaker poisons: each carries one word of the trigger, and some keep their true label.

    Exploited property: the detectors flag only examples with strong influence
    (``transform-voting`` considers only examples at or above a strength percentile, and
    ``transform-variance`` divides strength by spread). This attack spends the same budget
    on weaker poisons, so that no single poison has strong influence:

    - Each poison carries a single word of the trigger ("James" or "Bond" for "James Bond"),
      in place of a PERSON entity or at a random word boundary. Words are dealt in turn over
      the poisons in a seeded order, so each word goes to about the same number of poisons.
      Only the triggered test inputs carry the whole trigger.
    - round(``clean_label_fraction`` * n) poisons are clean-label: they are drawn from
      examples that already have the target label, which stays unchanged. The others are
      drawn from the other labels and relabelled with the target.

    The poison count n is exactly round(ratio * N), as for every attack, and every poison,
    clean-label or not, is in the mask and the records. Clean-label poisons are the records
    whose ``original_label`` equals the target. Within each group, candidates with a PERSON
    entity are used first, as in ``ner-dirty``.
    """

    name = "adaptive-diluted"
    description = "one trigger word per poison, half of them clean-label, so each poison is weak"

    def __init__(
        self,
        trigger: str = "James Bond",
        target_label: int = 1,
        clean_label_fraction: float = 0.5,
        spacy_pipeline: str | None = None,
    ):
        super().__init__(trigger, target_label, spacy_pipeline)
        self.clean_label_fraction = clean_label_fraction

    def validate(self) -> None:
        """Raise InputError on a one-word trigger or a fraction outside [0, 1]."""
        if len(self.trigger.split()) < 2:
            raise InputError(
                f"adaptive-diluted splits the trigger into words, but {self.trigger!r} has "
                "fewer than two; pass a trigger of two or more words such as 'James Bond'"
            )
        if not 0 <= self.clean_label_fraction <= 1:
            raise InputError(
                f"adaptive-diluted clean_label_fraction must lie in [0, 1], "
                f"got {self.clean_label_fraction}"
            )

    def poison(self, dataset: TextDataset, ratio: float, seed: int) -> PoisonedDataset:
        n_poisons = self.check_arguments(dataset, ratio)
        self.validate()
        n_clean = round(self.clean_label_fraction * n_poisons)
        n_dirty = n_poisons - n_clean
        dirty_pool = candidate_indices(dataset, self.target_label)
        clean_pool = candidate_indices(dataset, self.target_label, clean_label=True)
        require_candidates(n_dirty, dirty_pool, dataset, ratio, self.target_label)
        require_candidates(n_clean, clean_pool, dataset, ratio, self.target_label, clean_label=True)

        entities = self.entity_map(dataset, dirty_pool + clean_pool)
        rng = random.Random(seed)
        chosen = entity_first_order(dirty_pool, [entities[i] for i in dirty_pool], rng)[:n_dirty]
        chosen += entity_first_order(clean_pool, [entities[i] for i in clean_pool], rng)[:n_clean]

        # Deal the trigger words in turn over the poisons in a seeded order.
        words = self.trigger.split()
        rng.shuffle(chosen)
        word_of = {index: words[position % len(words)] for position, index in enumerate(chosen)}

        edits = []
        for index in sorted(chosen):
            original = dataset.examples[index]
            entity = entities[index][0] if entities[index] else None
            phrase = trigger_for(original.text, word_of[index])
            text, method = place_phrase(original.text, entity, phrase, rng)
            record = PoisonRecord(
                index, original.uid, method, original.text, original.label, entity
            )
            edits.append(PoisonEdit(record, text, self.target_label))
        return assemble_poisoned_dataset(
            dataset, edits, self.name, self.trigger, self.target_label
        )
