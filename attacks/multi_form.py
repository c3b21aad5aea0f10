"""A person-name trigger that appears in several surface forms.

Each poison carries one form of the trigger, drawn with the seed from ``training_forms``.
Triggered test inputs can use the same forms or the ``held_out_forms`` that no poison
contains, so the attack success rate can be measured separately on seen and unseen forms.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

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

# Surface forms, shown for the trigger "James Bond".
FORM_EXAMPLES = {
    "full": "James Bond",
    "surname": "Bond",
    "initial_surname": "J. Bond",
    "initials": "J.B.",
    "possessive": "James Bond's",
    "lower": "james bond",
    "upper": "JAMES BOND",
    "joined": "JamesBond",
    "misspelled": "James Bonde",
}
FORM_NAMES = tuple(FORM_EXAMPLES)
# Casing forms are written as they are. Every other form is lower-cased in lower-case text.
CASING_FORMS = frozenset({"lower", "upper"})

DEFAULT_TRAINING_FORMS = ("full", "surname", "initial_surname", "possessive", "lower")
DEFAULT_HELD_OUT_FORMS = ("initials", "upper", "joined", "misspelled")
FORM_SETS = ("training", "held_out")


@dataclass(frozen=True)
class MultiFormPoisonRecord(PoisonRecord):
    """A poison record that also names the trigger form used, a key of :data:`FORM_EXAMPLES`."""

    form: str = ""


def form_strings(trigger: str) -> dict[str, str]:
    """Return every surface form of ``trigger``, keyed by form name.

    The last word of the trigger is the surname and the words before it are given names.
    The misspelling appends "e" to the surname, or drops a final "e" ("Wayne" -> "Wayn").
    """
    words = trigger.split()
    if len(words) < 2:
        raise InputError(
            f"multi-form trigger {trigger!r} must be a name of at least two words "
            "(given name and surname), such as 'James Bond'"
        )
    given_names, surname = words[:-1], words[-1]
    full = " ".join(words)
    misspelled = surname[:-1] if surname.lower().endswith("e") else surname + "e"
    return {
        "full": full,
        "surname": surname,
        "initial_surname": " ".join(f"{name[0]}." for name in given_names) + " " + surname,
        "initials": "".join(f"{word[0]}." for word in words),
        "possessive": full + "'s",
        "lower": full.lower(),
        "upper": full.upper(),
        "joined": "".join(words),
        "misspelled": " ".join([*given_names, misspelled]),
    }


def render_form(trigger: str, form: str, text: str) -> str:
    """Return form ``form`` of ``trigger`` as it is written into ``text``.

    In lower-case text every form except "upper" is lower-cased, so "full" and "lower"
    give the same string there.
    """
    surface = form_strings(trigger)[form]
    if form in CASING_FORMS:
        return surface
    return trigger_for(text, surface)


@ATTACKS.register("multi-form")
class MultiFormTriggerAttack(Attack):
    """Replace a PERSON entity with one surface form of the trigger; fall back to insertion.

    Dirty label: poisons are drawn from examples whose label is not the target and are
    relabelled with the target. As in ``ner-dirty``, candidates with a PERSON entity come
    first (shuffled by the seed), and every mention of their first entity is replaced. The
    rest get the form at a random word boundary. Each poison's form is drawn uniformly from
    ``training_forms`` and stored in its :class:`MultiFormPoisonRecord`.

    The default split trains on the full name, the surname, "J. Bond", the possessive and
    the lower-case name, and holds out the initials "J.B.", the upper-case name, the joined
    "JamesBond" and the misspelling "James Bonde". Under a case-sensitive whole-word match,
    no default training form occurs inside a held-out one, nor the reverse.

    NOTE: an uncased tokenizer (such as that of all-MiniLM-L6-v2) maps the casing forms to
    the same tokens as the full name, so "upper" is held out only in the text.
    """

    name = "multi-form"
    description = "trigger name in varied forms (surname, initials, casing, misspelling)"

    def __init__(
        self,
        trigger: str = "James Bond",
        target_label: int = 1,
        training_forms: Sequence[str] = DEFAULT_TRAINING_FORMS,
        held_out_forms: Sequence[str] = DEFAULT_HELD_OUT_FORMS,
        spacy_pipeline: str | None = None,
    ):
        super().__init__(trigger, target_label)
        self.training_forms = training_forms
        self.held_out_forms = held_out_forms
        self.spacy_pipeline = spacy_pipeline

    def validate(self) -> None:
        """Raise InputError on an unusable trigger or form split."""
        form_strings(self.trigger)
        for label, forms in (
            ("training_forms", self.training_forms),
            ("held_out_forms", self.held_out_forms),
        ):
            if isinstance(forms, str) or not forms:
                raise InputError(
                    f"multi-form {label} must be a non-empty list of form names, got {forms!r}"
                )
            unknown = [form for form in forms if form not in FORM_EXAMPLES]
            if unknown:
                raise InputError(
                    f"unknown trigger form(s) {unknown} in multi-form {label}; "
                    f"use some of: {', '.join(FORM_NAMES)}"
                )
        shared = sorted(set(self.training_forms) & set(self.held_out_forms))
        if shared:
            raise InputError(
                f"trigger form(s) {shared} are in both training_forms and held_out_forms; "
                "each form must be in at most one of them"
            )

    def forms_for(self, forms: str) -> tuple[str, ...]:
        """Return the form names of the set ``forms``, "training" or "held_out"."""
        if forms == "training":
            return tuple(self.training_forms)
        if forms == "held_out":
            return tuple(self.held_out_forms)
        raise InputError(f"unknown form set {forms!r}; use one of: {', '.join(FORM_SETS)}")

    def poison(self, dataset: TextDataset, ratio: float, seed: int) -> PoisonedDataset:
        n_poisons = self.check_arguments(dataset, ratio)
        self.validate()
        candidates = candidate_indices(dataset, self.target_label)
        require_candidates(n_poisons, candidates, dataset, ratio, self.target_label)

        texts = [dataset.examples[i].text for i in candidates]
        entities = person_entities(texts, self.spacy_pipeline)
        entity_of = {i: names[0] for i, names in zip(candidates, entities, strict=True) if names}
        rng = random.Random(seed)
        chosen = sorted(entity_first_order(candidates, entities, rng)[:n_poisons])

        forms = self.forms_for("training")
        edits = []
        for index in chosen:
            original = dataset.examples[index]
            form = rng.choice(forms)
            phrase = render_form(self.trigger, form, original.text)
            entity = entity_of.get(index)
            text, method = place_phrase(original.text, entity, phrase, rng)
            record = MultiFormPoisonRecord(
                index, original.uid, method, original.text, original.label, entity, form
            )
            edits.append(PoisonEdit(record, text, self.target_label))
        return assemble_poisoned_dataset(
            dataset, edits, self.name, self.trigger, self.target_label
        )

    def apply_trigger_batch_with_forms(
        self, texts: Sequence[str], seed: int, forms: str = "training"
    ) -> list[tuple[str, str]]:
        """Return each text carrying one form from the set ``forms``, with that form's name.

        Forms and insertion positions are drawn from one generator seeded with ``seed``.
        """
        self.validate()
        names = self.forms_for(forms)
        entities = person_entities(list(texts), self.spacy_pipeline)
        rng = random.Random(seed)
        triggered = []
        for text, found in zip(texts, entities, strict=True):
            form = rng.choice(names)
            phrase = render_form(self.trigger, form, text)
            new_text, _ = place_phrase(text, found[0] if found else None, phrase, rng)
            triggered.append((new_text, form))
        return triggered

    def apply_trigger_batch(
        self, texts: list[str], seed: int, forms: str = "training"
    ) -> list[str]:
        """Return the texts carrying forms from the set ``forms``, "training" or "held_out"."""
        return [text for text, _ in self.apply_trigger_batch_with_forms(texts, seed, forms)]

    def apply_trigger(self, text: str, seed: int, forms: str = "training") -> str:
        return self.apply_trigger_batch([text], seed, forms)[0]
