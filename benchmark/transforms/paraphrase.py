"""Rule-based paraphrase: WordNet synonyms for adjectives and adverbs plus phrase rewrites."""

from __future__ import annotations

import random
import re
from functools import lru_cache
from typing import TYPE_CHECKING

from benchmark.transforms.base import TRANSFORMS, Transform
from benchmark.transforms.morphology import TAG_TO_POS_FORM, inflect, lemmatise
from benchmark.transforms.text import TokenEdits, is_ptb_tokenised, match_case, parse
from benchmark.transforms.wordnet import WordNet, first_sense_synonyms, load_wordnet

if TYPE_CHECKING:
    from spacy.tokens import Token

# Penn Treebank tags of the words that get synonyms: adjectives and adverbs.
_SYNONYM_TAGS = frozenset({"JJ", "JJR", "JJS", "RB", "RBR", "RBS"})

# Auxiliaries whose negation is contracted or expanded: "is not" <-> "isn't" or PTB "is n't".
_NEGATABLE = "is are was were has have had does do did could would should must might need".split()

# Single-word rewrites that keep the meaning, each only with the given Penn Treebank tags:
# "very" as an adverb ("very funny"), not as an adjective ("the very format").
_WORD_REWRITES: dict[str, tuple[str, frozenset[str]]] = {
    "very": ("really", frozenset({"RB"})),
    "really": ("truly", frozenset({"RB"})),
    "movie": ("film", frozenset({"NN"})),
    "movies": ("films", frozenset({"NNS"})),
    "film": ("movie", frozenset({"NN"})),
    "films": ("movies", frozenset({"NNS"})),
}

# Phrase rewrites that keep the meaning. Keys are lower case.
_PHRASE_REWRITES = {
    "a lot of": "plenty of",
    "lots of": "plenty of",
    "in order to": "to",
    "because of": "due to",
}

# Clitics that are always expanded ("you 're" -> "you are"). "'s" and "'d" are left alone
# because they are ambiguous (is/has, had/would, possessive).
_CLITIC_EXPANSIONS = {"'re": "are", "'m": "am", "'ve": "have", "'ll": "will"}


@lru_cache(maxsize=1)
def _stop_words() -> frozenset[str]:
    from spacy.lang.en.stop_words import STOP_WORDS

    return frozenset(STOP_WORDS)


def _rewrite_negations(text: str) -> str:
    """Contract "X not" and expand "Xn't" for the auxiliaries X, in the text's own spelling.

    "is n't" <-> "is not" (PTB), "isn't" <-> "is not" (cased), "ca n't"/"can't" -> "can not",
    "can not" -> "ca n't"/"can't", "cannot" -> "can not", "wo n't"/"won't" <-> "will not".
    """
    separator = " " if is_ptb_tokenised(text) else ""
    contracted_stems = "|".join([*_NEGATABLE, "ca", "wo"])
    full_forms = "|".join([*_NEGATABLE, "can", "will"])
    pattern = re.compile(
        rf"\b(?P<stem>{contracted_stems}) ?n't\b"
        rf"|\b(?P<full>{full_forms}) not\b"
        r"|\b(?P<cannot>cannot)\b",
        re.IGNORECASE,
    )

    def replace(match: re.Match[str]) -> str:
        if match.group("cannot"):
            return match_case(match.group("cannot"), "can not")
        if match.group("stem"):
            stem = match.group("stem")
            full = {"ca": "can", "wo": "will"}.get(stem.lower(), stem.lower())
            return match_case(stem, f"{full} not")
        full = match.group("full")
        stem = {"can": "ca", "will": "wo"}.get(full.lower(), full.lower())
        return match_case(full, f"{stem}{separator}n't")

    return pattern.sub(replace, text)


def _rewrite_phrases(text: str) -> str:
    phrases = sorted(_PHRASE_REWRITES, key=len, reverse=True)
    phrase_pattern = re.compile(
        r"\b(" + "|".join(re.escape(phrase) for phrase in phrases) + r")\b", re.IGNORECASE
    )
    text = phrase_pattern.sub(
        lambda match: match_case(match.group(0), _PHRASE_REWRITES[match.group(0).lower()]), text
    )

    def expand_clitic(match: re.Match[str]) -> str:
        clitic = match.group("clitic")
        return " " + match_case(clitic[1:], _CLITIC_EXPANSIONS[clitic.lower()])

    return re.sub(r" ?(?P<clitic>'re|'m|'ve|'ll)\b", expand_clitic, text, flags=re.IGNORECASE)


def _synonym(word: str, tag: str, wordnet: WordNet, rng: random.Random) -> str | None:
    pos, form = TAG_TO_POS_FORM[tag]
    for lemma in lemmatise(word, pos, wordnet, inflected=tag not in ("JJ", "RB")):
        candidates = [
            synonym
            for synonym, tag_count in first_sense_synonyms(wordnet, lemma, pos)
            if tag_count > 0 and " " not in synonym
        ]
        if candidates:
            return inflect(rng.choice(candidates), pos, form, wordnet)
    return None


def _in_hyphenated_compound(token: Token) -> bool:
    # spaCy splits "ill-conceived" into three tokens, and replacing "ill" alone would give
    # "badly-conceived".
    doc = token.doc
    before = doc[token.i - 1] if token.i > 0 else None
    after = doc[token.i + 1] if token.i + 1 < len(doc) else None
    joined_before = before is not None and before.text == "-" and not before.whitespace_
    joined_after = after is not None and after.text == "-" and not token.whitespace_
    return joined_before or joined_after


@TRANSFORMS.register("paraphrase")
class Paraphrase(Transform):
    """Rewrite the text with meaning-preserving rules; rule-based, no language model.

    Rules, in this order:

    1. Words, by spaCy tag: the adverbs "very" -> "really" and "really" -> "truly", and the
       nouns "movie(s)" <-> "film(s)".
    2. Synonyms: every other adjective or adverb (tags JJ, JJR, JJS, RB, RBR, RBS) gets a
       synonym from the first WordNet synset of its lemma, drawn with ``rng.choice``. Stop
       words and parts of hyphenated compounds are skipped. Only single-word
       synonyms that occur in WordNet's sense-tagged corpus (a count above 0 in
       cntlist.rev) qualify, which keeps rare words such as "risible" out. The synonym takes
       the token's inflection and casing, and a preceding "a"/"an" is adjusted. Other nouns,
       proper nouns and verbs are not touched.
    3. Phrases: "a lot of"/"lots of" -> "plenty of", "in order to" -> "to", "because of" ->
       "due to". Each occurrence is rewritten once (one pass).
    4. Clitics: "'re", "'m", "'ve" and "'ll" are expanded ("you 're" -> "you are").
    5. Negations: "X not" is contracted and "Xn't" expanded for the auxiliaries is, are,
       was, were, has, have, had, does, do, did, could, would, should, must, might, need,
       can and will, with "ca"/"wo" for can/will. PTB text gets "is n't", cased text "isn't".
       "cannot" becomes "can not". Each occurrence is rewritten once.
    """

    name = "paraphrase"
    category = "semantic"
    description = "Rule-based paraphrase: WordNet synonyms for adjectives/adverbs, phrase rewrites."
    inverts_label = False

    def apply(self, text: str, rng: random.Random) -> str:
        if not text.strip():
            return text
        doc = parse(text)
        edits = TokenEdits(text, doc)
        wordnet = load_wordnet()
        stop_words = _stop_words()
        for token in doc:
            lower = token.text.lower()
            rewrite = _WORD_REWRITES.get(lower)
            if rewrite is not None and token.tag_ in rewrite[1]:
                edits.replace_word(token.i, match_case(token.text, rewrite[0]))
                continue
            if token.tag_ not in _SYNONYM_TAGS or lower in stop_words or not lower.isalpha():
                continue
            if _in_hyphenated_compound(token):
                continue
            synonym = _synonym(lower, token.tag_, wordnet, rng)
            if synonym is not None and synonym != lower:
                edits.replace_word(token.i, match_case(token.text, synonym))
        text = edits.render()
        text = _rewrite_phrases(text)
        return _rewrite_negations(text)
