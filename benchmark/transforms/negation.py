"""Negation transforms: a negated question around the text and negation of the main clause."""

from __future__ import annotations

import random
import re
from typing import TYPE_CHECKING

from benchmark.transforms.base import TRANSFORMS, Transform
from benchmark.transforms.morphology import Form, inflect
from benchmark.transforms.text import (
    TokenEdits,
    capitalise_first,
    is_lower_case,
    is_ptb_tokenised,
    lowercase_start,
    match_case,
    parse,
    prepend_clause,
    sentence_groups,
)
from benchmark.transforms.wordnet import load_wordnet

if TYPE_CHECKING:
    from spacy.tokens import Span, Token

# Sentence-final punctuation that the question mark replaces, with the space before it.
_FINAL_PUNCTUATION = re.compile(r"\s*[.!?]+$")


@TRANSFORMS.register("question_negation")
class QuestionNegation(Transform):
    """Turn the text into the rhetorical question "isn't it false that ...?".

    The question presupposes that the statement is false, so it inverts the sentiment.

    Rules:

    - Final sentence punctuation (any run of ``.``, ``!`` and ``?``) is removed and a
      question mark is put at the end. The whole text becomes one question, also when it
      has several sentences.
    - PTB-tokenised text (a space before punctuation or a split clitic such as "n't") gets
      the PTB spelling: "the film is great ." -> "is n't it false that the film is great ?".
      Other text gets "isn't" and an attached "?".
    - A text without upper-case letters keeps the prefix lower case. A cased text gets
      "Isn't" and its first word lower-cased unless it is a proper noun, "I" or in
      capitals: "The film is great." -> "Isn't it false that the film is great?".
    - An empty or blank text is returned unchanged. ``rng`` is not used.
    """

    name = "question_negation"
    category = "semantic"
    description = "Wrap the text in the negated question 'isn't it false that ...?'."
    inverts_label = True

    def apply(self, text: str, rng: random.Random) -> str:
        body = text.strip()
        if not body:
            return text
        ptb = is_ptb_tokenised(body)
        prefix = "is n't it false that" if ptb else "isn't it false that"
        question_mark = " ?" if ptb else "?"
        statement = _FINAL_PUNCTUATION.sub("", body)
        if is_lower_case(body):
            return f"{prefix} {statement}{question_mark}"
        statement = lowercase_start(statement, parse(statement))
        return f"{capitalise_first(prefix)} {statement}{question_mark}"


# Finite auxiliaries and copulas after which "not" goes, including the clitics and the
# stems that spaCy splits off contractions ("ca" of "can't", "wo" of "won't").
_AUXILIARIES = frozenset(
    "is are was were am be has have had will would can could should shall may might must "
    "does do did 's 're 'm 've 'd 'll ca wo sha".split()
)
_CONTRACTED_MODAL_STEMS = {"ca": "can", "wo": "will", "sha": "shall"}
_NEGATION_WORDS = frozenset({"not", "n't", "never"})
_DO_FORMS = {"did": Form.PAST, "does": Form.PRESENT_3SG, "do": Form.BASE}
_FALLBACK_PREFIX = "it is not the case that"


def _normalise(word: str) -> str:
    return word.lower().replace("\u2019", "'")


@TRANSFORMS.register("grammatical_negation")
class GrammaticalNegation(Transform):
    """Negate the main clause of every sentence, or remove the negation it already has.

    Rules, applied to each sentence (spaCy's sentences merged up to final punctuation or a
    line break, see :func:`sentence_groups`):

    - The predicate is the sentence root when it is a verb or auxiliary, else the first verb
      of the sentence (a fragment such as "a film that runs too long" negates "runs").
    - If the predicate already has a negation ("not", "n't", "never"), it is removed, which
      counts as negating: "is n't funny" -> "is funny", "can't" -> "can", "does n't work" ->
      "works", "didn't love" -> "loved", "don't love" -> "love", "never feel" -> "feel".
    - Else "not" goes after the first auxiliary or copula of the predicate (is, are, was,
      were, am, be, has, have, had, will, would, can, could, should, shall, may, might,
      must, does, do, did and their clitics 's, 're, 'm, 've, 'd, 'll):
      "the film is great" -> "the film is not great", "it's fun" -> "it's not fun".
    - Else an infinitive gets "not" before its "to" ("reasons not to watch"), and a
      lexical verb gets do-support from its tag and spaCy lemma: VBD "he loved it" -> "he
      did not love it", VBZ "it works" -> "it does not work", VBP/VB "do not". A
      participle without an auxiliary gets "not" in front ("not made for kids").
    - "not" is written in capitals when the word it follows is in capitals.
    - When no sentence has a verb, the text gets the prefix "it is not the case that", in
      lower case for lower-case text, else capitalised.
    - An empty or blank text is returned unchanged. ``rng`` is not used.
    """

    name = "grammatical_negation"
    category = "structural"
    description = "Negate the main verb with 'not' or do-support, or remove an existing negation."
    inverts_label = True

    def apply(self, text: str, rng: random.Random) -> str:
        if not text.strip():
            return text
        doc = parse(text)
        edits = TokenEdits(text, doc)
        negated = False
        for sentence in sentence_groups(doc):
            if _negate_sentence(sentence, edits):
                negated = True
        if not negated:
            return prepend_clause(_FALLBACK_PREFIX, text)
        return edits.render()


def _main_predicate(sentence: Span) -> Token | None:
    root = sentence.root
    if root.pos_ in ("VERB", "AUX"):
        return root
    for token in sentence:
        if token.pos_ == "VERB" or (token.pos_ == "AUX" and token.dep_ not in ("aux", "auxpass")):
            return token
    return None


def _auxiliaries(predicate: Token) -> list[Token]:
    """Return the auxiliaries before the predicate that can carry "not", in text order."""
    return [
        child
        for child in predicate.children
        if child.dep_ in ("aux", "auxpass")
        and child.i < predicate.i
        and _normalise(child.text) in _AUXILIARIES
    ]


def _find_negation(predicate: Token) -> Token | None:
    # spaCy attaches "not"/"n't" to the predicate, occasionally to one of its auxiliaries.
    candidates = list(predicate.children)
    for auxiliary in _auxiliaries(predicate):
        candidates.extend(auxiliary.children)
    for token in sorted(candidates, key=lambda candidate: candidate.i):
        if token.dep_ == "neg" and _normalise(token.text) in _NEGATION_WORDS:
            return token
    return None


def _negate_sentence(sentence: Span, edits: TokenEdits) -> bool:
    """Record the negation of one sentence in ``edits``. Return False when it has no verb."""
    predicate = _main_predicate(sentence)
    if predicate is None:
        return False

    # NOTE: negative determiners and pronouns ("no", "none", "nothing") are not detected, so
    # "exudes none of the charm" becomes the double negative "does not exude none".
    negation = _find_negation(predicate)
    if negation is not None:
        _remove_negation(predicate, negation, edits)
        return True

    auxiliaries = _auxiliaries(predicate)
    finite: Token | None = None
    if auxiliaries:
        finite = auxiliaries[0]
    elif (
        predicate.pos_ == "AUX"
        and predicate.tag_ != "VB"
        and _normalise(predicate.text) in _AUXILIARIES
    ):
        finite = predicate
    if finite is not None:
        not_word = "NOT" if len(finite.text) > 1 and finite.text.isupper() else "not"
        edits.replace(finite.i, f"{finite.text} {not_word}")
        return True

    marker = next(
        (child for child in predicate.children if child.tag_ == "TO" and child.i < predicate.i),
        None,
    )
    if marker is not None:
        edits.replace(marker.i, match_case(marker.text, f"not {marker.text.lower()}"))
        return True
    edits.replace(predicate.i, match_case(predicate.text, _do_support(predicate)))
    return True


def _do_support(predicate: Token) -> str:
    """Return the negated lower-case replacement of a lexical verb without auxiliary."""
    lemma = predicate.lemma_.lower() or predicate.text.lower()
    if predicate.tag_ == "VBD":
        return f"did not {lemma}"
    if predicate.tag_ == "VBZ":
        return f"does not {lemma}"
    if predicate.tag_ in ("VBP", "VB"):
        return f"do not {lemma}"
    return f"not {predicate.text.lower()}"


def _remove_negation(predicate: Token, negation: Token, edits: TokenEdits) -> None:
    """Delete ``negation`` and repair the auxiliary that carried it."""
    edits.remove(negation.i)
    if _normalise(negation.text) == "never":
        return

    carriers = [aux for aux in _auxiliaries(predicate) if aux.i < negation.i]
    if predicate.pos_ == "AUX" and predicate.i < negation.i:
        carriers.append(predicate)
    if not carriers:
        return
    carrier = max(carriers, key=lambda token: token.i)
    carrier_word = _normalise(carrier.text)

    if carrier_word in _CONTRACTED_MODAL_STEMS:
        edits.replace(carrier.i, match_case(carrier.text, _CONTRACTED_MODAL_STEMS[carrier_word]))
        return
    if carrier is not predicate and carrier_word in _DO_FORMS and predicate.pos_ == "VERB":
        # Drop the do-support and put its tense on the verb: "did n't love" -> "loved".
        lemma = predicate.lemma_.lower() or predicate.text.lower()
        verb = inflect(lemma, "v", _DO_FORMS[carrier_word], load_wordnet())
        edits.remove(carrier.i)
        edits.replace(predicate.i, match_case(predicate.text, verb))
