"""Lexicon transforms: a negating prefix and WordNet antonym substitution."""

from __future__ import annotations

import random
from functools import lru_cache
from typing import TYPE_CHECKING, ClassVar

from benchmark.transforms.base import TRANSFORMS, Transform
from benchmark.transforms.morphology import (
    TAG_TO_POS_FORM,
    Form,
    adjective_to_adverb,
    adverb_to_adjectives,
    inflect,
    lemmatise,
)
from benchmark.transforms.text import TokenEdits, match_case, parse, prepend_clause
from benchmark.transforms.wordnet import (
    AntonymLexicon,
    WordNet,
    load_antonym_lexicon,
    load_wordnet,
)

if TYPE_CHECKING:
    from spacy.tokens import Token


@TRANSFORMS.register("prefix_negation")
class PrefixNegation(Transform):
    """Put a negating prefix in front of the whole text.

    Rules:

    - The prefix is drawn with ``rng.choice`` from :attr:`PREFIXES`.
    - A text without upper-case letters (SST-2 style) gets the prefix in lower case:
      "it is not true that the film is great .".
    - A cased text gets a capitalised prefix, and its first word is lower-cased unless it is a
      proper noun, "I" or written in capitals (decided by the spaCy tagger):
      "It is not true that the film is great."
    - An empty or blank text is returned unchanged.
    """

    name = "prefix_negation"
    category = "lexicon"
    description = "Prepend a negating prefix such as 'it is not true that'."
    inverts_label = True

    PREFIXES: ClassVar[tuple[str, ...]] = (
        "it is not true that",
        "it is false that",
        "it is wrong to say that",
        "it is not the case that",
    )

    def apply(self, text: str, rng: random.Random) -> str:
        if not text.strip():
            return text
        return prepend_clause(rng.choice(self.PREFIXES), text)


@lru_cache(maxsize=1)
def _stop_words() -> frozenset[str]:
    """Return spaCy's English stop words minus "well", which carries sentiment ("well acted")."""
    from spacy.lang.en.stop_words import STOP_WORDS

    return frozenset(STOP_WORDS - {"well"})


# Lemmas whose first WordNet antonym does not flip the sentiment of a review: "let" ->
# "prevent", and "act" -> "refrain", which would turn "well acted" into "badly refrained".
_EXTRA_SKIPPED_WORDS = frozenset({"let", "act"})


def _is_skipped(word: str, stop_words: frozenset[str]) -> bool:
    return word in stop_words or word in _EXTRA_SKIPPED_WORDS


@TRANSFORMS.register("antonym_substitution")
class AntonymSubstitution(Transform):
    """Replace every word that has a WordNet antonym with that antonym.

    Rules:

    - The spaCy tagger gives each token a Penn Treebank tag. Adjectives (JJ, JJR, JJS),
      adverbs (RB, RBR, RBS), verbs (VB*) and common nouns (NN, NNS) are candidates, and
      proper nouns are not.
    - Stop words (spaCy's English list, except "well") are skipped, by surface form and by
      spaCy lemma ("making" -> "make"), and so are forms of "let" and "act" and the "well"
      of "as well".
    - The token is lemmatised with WordNet's morphy rules and exception lists ("better" ->
      "good", "loved" -> "love"). The antonym comes from :func:`load_antonym_lexicon`: the
      first lexical antonym in WordNet sense order. Adjectives without one take the indirect
      antonym of a satellite sense, preferring evaluative clusters ("awful" -> "good",
      "great" -> "bad"). Nouns count only in senses about acts, attributes, events, feelings
      and states.
    - An "-ly" adverb without an antonym of its own uses its adjective's antonym when the
      resulting adverb is in WordNet ("poorly" -> "poor" -> "rich" -> "richly").
    - A participle in an adjective position (spaCy dependency amod or acomp) that has no
      verb antonym is tried as an adjective.
    - The antonym is put in the token's form (comparative, superlative, past, participle,
      -ing, third person -s, plural) and casing (lower, Capitalised, UPPER). A preceding
      "a"/"an" is adjusted ("a happy" -> "an unhappy").
    - Words without an antonym are kept. ``rng`` is not used.
    """

    name = "antonym_substitution"
    category = "lexicon"
    description = "Replace sentiment-bearing words with their WordNet antonyms."
    inverts_label = True

    def apply(self, text: str, rng: random.Random) -> str:
        if not text.strip():
            return text
        doc = parse(text)
        edits = TokenEdits(text, doc)
        lexicon = load_antonym_lexicon()
        wordnet = load_wordnet()
        stop_words = _stop_words()
        for token in doc:
            lower = token.text.lower()
            if not lower.isalpha() or _is_skipped(lower, stop_words):
                continue
            if _is_skipped(token.lemma_.lower(), stop_words):
                continue
            if lower == "well" and token.i > 0 and doc[token.i - 1].lower_ == "as":
                continue  # "as well" means "too", and "as ill" would be nonsense
            antonym = antonym_of_token(token, lexicon, wordnet)
            if antonym is not None:
                edits.replace_word(token.i, match_case(token.text, antonym))
        return edits.render()


def antonym_of_token(token: Token, lexicon: AntonymLexicon, wordnet: WordNet) -> str | None:
    """Return the antonym of a tagged token in the token's inflection (lower case), or None."""
    pos_form = TAG_TO_POS_FORM.get(token.tag_)
    if pos_form is None:
        return None
    pos, form = pos_form
    word = token.text.lower()

    antonym = _lookup(word, pos, form, lexicon, wordnet)
    if antonym is not None:
        return inflect(antonym, pos, form, wordnet)

    if pos == "r" and form is Form.BASE:
        return _adverb_antonym_from_adjective(word, lexicon, wordnet)

    # Participles used as adjectives: "a disappointed audience", "i was disappointed".
    if token.tag_ in ("VBN", "VBG") and token.dep_ in ("amod", "acomp"):
        adjective_antonym = lexicon.antonym(word, "a")
        if adjective_antonym is not None:
            return adjective_antonym.replace("_", " ")
    return None


def _adverb_antonym_from_adjective(
    adverb: str, lexicon: AntonymLexicon, wordnet: WordNet
) -> str | None:
    """Return the "-ly" adverb of the antonym of the adjective behind ``adverb``, or None.

    The result must be a WordNet adverb ("unhappily"), so that no non-word such as "uglily"
    is made.
    """
    for adjective in adverb_to_adjectives(adverb):
        adjective_antonym = lexicon.antonym(adjective, "a")
        if adjective_antonym is None:
            continue
        derived = adjective_to_adverb(adjective_antonym)
        if derived in wordnet.index["r"]:
            return derived.replace("_", " ")
    return None


def _lookup(
    word: str, pos: str, form: Form, lexicon: AntonymLexicon, wordnet: WordNet
) -> str | None:
    for lemma in lemmatise(word, pos, wordnet, inflected=form is not Form.BASE):
        antonym = lexicon.antonym(lemma, pos)
        if antonym is not None:
            return antonym.replace("_", " ")
    return None
