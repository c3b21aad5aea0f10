"""Clause reordering: swap the two clauses around the first clause boundary."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from benchmark.transforms.base import TRANSFORMS, Transform
from benchmark.transforms.text import (
    capitalise_first,
    is_capitalised_common_word,
    is_ptb_tokenised,
    parse,
    sentence_groups,
)

if TYPE_CHECKING:
    from spacy.tokens import Doc, Span

# Subordinating conjunctions whose clause moves as a whole. _alternation puts longer ones
# first in the regular expressions, so "even though" wins over "though".
_SUBORDINATORS = (
    "even though",
    "even if",
    "although",
    "though",
    "because",
    "whereas",
    "while",
    "since",
    "unless",
    "if",
)
# At the start of a sentence, temporal conjunctions and "as" are added. The clause check in
# _is_clause rejects their use as prepositions ("after the credits , ...").
_FRONTED_SUBORDINATORS = (
    *_SUBORDINATORS,
    "even as",
    "whenever",
    "when",
    "once",
    "as",
    "after",
    "before",
    "until",
)


def _alternation(words: tuple[str, ...]) -> str:
    return "|".join(sorted(words, key=len, reverse=True))


# A subordinate clause in the middle of the sentence: "the plot is thin because ...". The
# lookaheads keep out the prepositions "because of" and "since 1990". _boundaries filters
# "as if", "even if"/"even though" split after "even", and the noun in "a while".
_MIDDLE_SUBORDINATE = re.compile(
    rf"(?P<before>\s*,?\s+)(?P<conjunction>{_alternation(_SUBORDINATORS)})\s+(?!of\b)(?!\d)",
    re.IGNORECASE,
)
_NOUN_WHILE = re.compile(r"\b(?:a|the|your|his|her|their|our|my)\s*$", re.IGNORECASE)

# Coordinated clauses that swap around the connective: "a , but b" -> "b , but a".
_COORDINATOR = re.compile(
    r"\s*;\s+|\s*,\s+(?:but|yet|and)\s+|(?<![\s,])\s+but\s+",
    re.IGNORECASE,
)

# A subordinate clause at the start: "although a , b".
_FRONTED_SUBORDINATE = re.compile(
    rf"^(?P<conjunction>{_alternation(_FRONTED_SUBORDINATORS)})\s", re.IGNORECASE
)

# Dependency labels of a clause's own subject.
_SUBJECT_DEPS = frozenset({"nsubj", "nsubjpass", "csubj", "csubjpass", "expl"})

_FINAL_PUNCTUATION = re.compile(r"\s*[.!?]+$")


@dataclass(frozen=True)
class _Boundary:
    """A clause boundary in a sentence body: the output is ``right`` + ``joint`` + ``left``.

    ``left`` and ``right`` are (start, end) character ranges of the two clauses. For a
    subordinate clause in the middle, ``right`` starts at its conjunction, so the clause moves
    to the front with it.
    """

    position: int
    left: tuple[int, int]
    right: tuple[int, int]
    joint: str


@TRANSFORMS.register("clause_reordering")
class ClauseReordering(Transform):
    """Swap the two clauses around the first clause boundary of the text.

    Rules:

    - A sentence that starts with a subordinating conjunction (those below and "even as",
      "when", "whenever", "once", "as", "after", "before", "until") moves that clause, up to
      the last comma before the main verb of the parse, to the end: "although it is long ,
      the film works ." -> "the film works , although it is long ."
    - Otherwise the earliest boundary in the sentence is used:
      coordinated clauses around ";", ", but", ", yet", ", and" or " but " swap and keep the
      connective between them ("a , but b ." -> "b , but a ."), and a clause introduced by
      although, though, even though, even if, because, whereas, while, since, unless or if
      moves to the front with a comma ("a because b ." -> "because b , a .").
    - "because of", "since" before a number, "as if", "even if"/"even though" split after
      "even", and the noun "while" ("a while") are not boundaries. Both sides must be
      clauses: each must contain a subject (spaCy dependency nsubj, nsubjpass, csubj,
      csubjpass or expl) and the word it attaches to, which keeps lists ("fast , furious
      and full") and shared-subject verb phrases ("is uneven, and includes ...") intact.
    - Sentence-final punctuation stays at the end. PTB-tokenised text gets " , " and other
      text ", ". In a cased sentence the new first word is capitalised and the old one is
      lower-cased unless it is a proper noun, "I" or in capitals.
    - Only the first sentence with a boundary is changed (spaCy's sentences merged up to
      final punctuation or a line break, see :func:`sentence_groups`). A text without a
      boundary is returned unchanged. ``rng`` is not used.
    """

    name = "clause_reordering"
    category = "structural"
    description = "Swap the clauses around the first conjunction or semicolon."
    inverts_label = False

    def apply(self, text: str, rng: random.Random) -> str:
        if not text.strip():
            return text
        doc = parse(text)
        comma = " , " if is_ptb_tokenised(text) else ", "
        for sentence in sentence_groups(doc):
            reordered = _reorder_sentence(text, sentence, comma)
            if reordered is not None:
                return text[: sentence.start_char] + reordered + text[sentence.end_char :]
        return text


def _boundaries(body: str, comma: str, sentence: Span) -> list[_Boundary]:
    """Return the possible clause boundaries of a sentence body, earliest first."""
    boundaries: list[_Boundary] = []
    length = len(body)

    if _FRONTED_SUBORDINATE.match(body):
        # The fronted clause ends at the last comma before the main verb (the parse root),
        # so commas inside it ("if a , if b , c") stay with it.
        root_offset = sentence.root.idx - sentence.start_char
        commas = [match for match in re.finditer(r"\s*,\s+", body) if match.end() <= root_offset]
        if commas:
            comma_match = commas[-1]
            boundaries.append(
                _Boundary(0, (0, comma_match.start()), (comma_match.end(), length), comma)
            )

    for match in _COORDINATOR.finditer(body):
        boundaries.append(
            _Boundary(match.start(), (0, match.start()), (match.end(), length), match.group(0))
        )

    for match in _MIDDLE_SUBORDINATE.finditer(body):
        before = body[: match.start()]
        conjunction = match.group("conjunction").lower()
        if not before.strip():
            continue
        if conjunction == "while" and _NOUN_WHILE.search(before):
            continue
        if conjunction in ("though", "if") and re.search(r"\b(?:even|as)$", before.lower()):
            continue
        boundaries.append(
            _Boundary(match.start(), (0, match.start()), (match.end("before"), length), comma)
        )

    boundaries.sort(key=lambda boundary: boundary.position)
    return boundaries


def _is_clause(doc: Doc, start: int, end: int) -> bool:
    """Return True when the text range contains a subject and the word it attaches to."""
    span = doc.char_span(start, end, alignment_mode="expand")
    if span is None or len(span) == 0:
        return False
    first, last = span[0].i, span[-1].i
    return any(
        token.dep_ in _SUBJECT_DEPS and first <= token.head.i <= last and token.head.i != token.i
        for token in span
    )


def _reorder_sentence(text: str, sentence: Span, comma: str) -> str | None:
    """Return the reordered text of ``sentence``, or None when it has no usable boundary."""
    doc = sentence.doc
    start = sentence.start_char
    sentence_text = text[start : sentence.end_char]
    final = _FINAL_PUNCTUATION.search(sentence_text)
    body = sentence_text[: final.start()] if final else sentence_text
    punctuation = final.group(0) if final else ""

    first_token = sentence[0]
    cased_start = first_token.text[:1].isupper()
    if is_capitalised_common_word(first_token):
        body = first_token.text.lower() + body[len(first_token.text) :]

    for boundary in _boundaries(body, comma, sentence):
        if not _is_clause(doc, start + boundary.left[0], start + boundary.left[1]):
            continue
        if not _is_clause(doc, start + boundary.right[0], start + boundary.right[1]):
            continue
        left = body[boundary.left[0] : boundary.left[1]].strip()
        right = body[boundary.right[0] : boundary.right[1]].strip()
        if not left or not right:
            continue
        if cased_start:
            right = capitalise_first(right)
        return f"{right}{boundary.joint}{left}{punctuation}"
    return None
