"""English lemmatisation and inflection from WordNet's exception lists and suffix rules.

Lemmatisation follows WordNet's morphy(7WN): look the word up in the exception list of its
part of speech, then strip the regular suffixes and keep the candidates that are WordNet
lemmas. Inflection runs the other way: an exception form of the lemma when one fits, else the
regular spelling rules (doubling, y to i, silent e). A short table below fixes the verbs whose
exception entries are archaic or ambiguous ("wrought" for work, "lay" for lie).
"""

from __future__ import annotations

import re
from enum import Enum
from functools import lru_cache

from benchmark.transforms.wordnet import WordNet


class Form(str, Enum):
    """An inflected form of a word, named as in the Penn Treebank tag that marks it."""

    BASE = "base"
    PLURAL = "plural"  # NNS
    PAST = "past"  # VBD
    PAST_PARTICIPLE = "past_participle"  # VBN
    GERUND = "gerund"  # VBG
    PRESENT_3SG = "present_3sg"  # VBZ
    COMPARATIVE = "comparative"  # JJR, RBR
    SUPERLATIVE = "superlative"  # JJS, RBS


# Penn Treebank tag -> (WordNet part of speech, form).
TAG_TO_POS_FORM: dict[str, tuple[str, Form]] = {
    "JJ": ("a", Form.BASE),
    "JJR": ("a", Form.COMPARATIVE),
    "JJS": ("a", Form.SUPERLATIVE),
    "RB": ("r", Form.BASE),
    "RBR": ("r", Form.COMPARATIVE),
    "RBS": ("r", Form.SUPERLATIVE),
    "VB": ("v", Form.BASE),
    "VBP": ("v", Form.BASE),
    "VBD": ("v", Form.PAST),
    "VBN": ("v", Form.PAST_PARTICIPLE),
    "VBG": ("v", Form.GERUND),
    "VBZ": ("v", Form.PRESENT_3SG),
    "NN": ("n", Form.BASE),
    "NNS": ("n", Form.PLURAL),
}

# morphy's detachment rules: (suffix, replacement) per part of speech.
_DETACHMENT_RULES: dict[str, tuple[tuple[str, str], ...]] = {
    "n": (
        ("s", ""),
        ("ses", "s"),
        ("xes", "x"),
        ("zes", "z"),
        ("ches", "ch"),
        ("shes", "sh"),
        ("men", "man"),
        ("ies", "y"),
    ),
    "v": (
        ("s", ""),
        ("ies", "y"),
        ("es", "e"),
        ("es", ""),
        ("ed", "e"),
        ("ed", ""),
        ("ing", "e"),
        ("ing", ""),
    ),
    "a": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "r": (),
}

# Verbs whose past and past participle the WordNet 3.0 verb.exc gets wrong for modern use:
# it lists only an archaic form ("wrought"), only the participle ("beaten"), or forms of two
# different verbs ("lay" for lie and lay).
_IRREGULAR_VERBS: dict[str, tuple[str, str]] = {
    "be": ("was", "been"),
    "have": ("had", "had"),
    "do": ("did", "done"),
    "go": ("went", "gone"),
    "work": ("worked", "worked"),
    "beat": ("beat", "beaten"),
    "feed": ("fed", "fed"),
    "lie": ("lay", "lain"),
    "come": ("came", "come"),
    "become": ("became", "become"),
    "overcome": ("overcame", "overcome"),
    "run": ("ran", "run"),
    "learn": ("learned", "learned"),
    "burn": ("burned", "burned"),
    "dream": ("dreamed", "dreamed"),
}

# Verbs whose past and past participle equal the base form.
_UNCHANGED_PAST = frozenset(
    "bet bid broadcast burst cast cost cut forecast hit hurt let put quit read rid set shed "
    "shut slit split spread thrust upset".split()
)

# Comparatives and superlatives that the exception lists miss: adv.exc has no "worse", and
# adj.exc maps "worse" only to "bad", not to "ill".
_IRREGULAR_GRADES: dict[str, tuple[str, str]] = {
    "good": ("better", "best"),
    "well": ("better", "best"),
    "bad": ("worse", "worst"),
    "badly": ("worse", "worst"),
    "ill": ("worse", "worst"),
    "much": ("more", "most"),
    "many": ("more", "most"),
}

_THIRD_PERSON_IRREGULAR = {"be": "is", "have": "has", "do": "does", "go": "goes"}

_VOWELS = "aeiou"


def _syllable_count(word: str) -> int:
    # An estimate from vowel groups, enough to choose between "-er" and "more".
    groups = re.findall(r"[aeiouy]+", word.lower())
    count = len(groups)
    if word.endswith("e") and not word.endswith(("le", "ee", "ye")) and count > 1:
        count -= 1
    return max(count, 1)


def _doubles_final_consonant(word: str) -> bool:
    # One syllable ending consonant-vowel-consonant ("sad", "big", "stop"), not w, x or y.
    return (
        len(word) >= 3
        and _syllable_count(word) == 1
        and word[-1] not in _VOWELS + "wxy"
        and word[-2] in _VOWELS
        and word[-3] not in _VOWELS
    )


def _add_suffix(word: str, suffix: str) -> str:
    """Attach a suffix starting with a vowel ("ed", "er", "est", "ing") by the spelling rules."""
    if suffix == "ing":
        if word.endswith("ie"):
            return word[:-2] + "ying"
        if word.endswith("e") and not word.endswith(("ee", "ye", "oe")):
            return word[:-1] + "ing"
    elif word.endswith("e"):
        return word + suffix[1:]
    elif len(word) > 1 and word.endswith("y") and word[-2] not in _VOWELS:
        return word[:-1] + "i" + suffix
    if _doubles_final_consonant(word):
        return word + word[-1] + suffix
    return word + suffix


def _add_s(word: str) -> str:
    if word.endswith(("s", "x", "z", "ch", "sh", "o")):
        return word + "es"
    if len(word) > 1 and word.endswith("y") and word[-2] not in _VOWELS:
        return word[:-1] + "ies"
    return word + "s"


@lru_cache(maxsize=1)
def _inverted_exceptions(wordnet: WordNet) -> dict[str, dict[str, tuple[str, ...]]]:
    """Map each part of speech and lemma to its exception forms, in file order."""
    inverted: dict[str, dict[str, list[str]]] = {}
    for pos, exceptions in wordnet.exceptions.items():
        forms_by_lemma: dict[str, list[str]] = {}
        for form, lemmas in exceptions.items():
            for lemma in lemmas:
                forms_by_lemma.setdefault(lemma, []).append(form)
        inverted[pos] = forms_by_lemma
    return {
        pos: {lemma: tuple(forms) for lemma, forms in forms_by_lemma.items()}
        for pos, forms_by_lemma in inverted.items()
    }


def lemmatise(word: str, pos: str, wordnet: WordNet, inflected: bool) -> list[str]:
    """Return the WordNet lemmas that ``word`` may be a form of, best first (morphy).

    ``word`` is lower case. When ``inflected`` is True (the tagger marked an inflected form),
    exception-list and suffix-stripped lemmas come before the word itself, so "better" tagged
    JJR gives "good" before the lemma "better". When it is False and the word is a lemma
    itself, that is the only candidate, so "better" mistagged RB does not become "well".
    """
    index = wordnet.index[pos]
    if not inflected and word in index:
        return [word]
    derived = list(wordnet.exceptions[pos].get(word, ()))
    for suffix, replacement in _DETACHMENT_RULES[pos]:
        if word.endswith(suffix) and len(word) > len(suffix):
            derived.append(word[: -len(suffix)] + replacement)
    as_is = [word]
    ordered = derived + as_is if inflected else as_is + derived
    lemmas: list[str] = []
    for candidate in ordered:
        if candidate in index and candidate not in lemmas:
            lemmas.append(candidate)
    return lemmas


def _is_participle_like(form: str, lemma: str) -> bool:
    # Participle endings ("taken", "shown", "gone", "worn") or the vowel change i -> u
    # (sing/sung, begin/begun).
    if form.endswith(("en", "wn", "ne", "rn")):
        return True
    return "i" in lemma and "u" in form and "u" not in lemma


def _verb_past(lemma: str, participle: bool, wordnet: WordNet) -> str:
    if lemma in _IRREGULAR_VERBS:
        return _IRREGULAR_VERBS[lemma][1 if participle else 0]
    if lemma in _UNCHANGED_PAST:
        return lemma
    forms = [
        form
        for form in _inverted_exceptions(wordnet)["v"].get(lemma, ())
        if not form.endswith("ing") and form != _add_s(lemma)
    ]
    participles = [form for form in forms if _is_participle_like(form, lemma)]
    pasts = [form for form in forms if not _is_participle_like(form, lemma)]
    if participle and participles:
        return participles[0]
    if pasts:
        return pasts[0]
    return _add_suffix(lemma, "ed")


def _verb_gerund(lemma: str, wordnet: WordNet) -> str:
    for form in _inverted_exceptions(wordnet)["v"].get(lemma, ()):
        if form.endswith("ing"):
            return form
    return _add_suffix(lemma, "ing")


def _graded(lemma: str, pos: str, superlative: bool, wordnet: WordNet) -> str:
    if lemma in _IRREGULAR_GRADES:
        return _IRREGULAR_GRADES[lemma][1 if superlative else 0]
    for form in _inverted_exceptions(wordnet)[pos].get(lemma, ()):
        if form != lemma and form.endswith("st") == superlative:
            return form
    one_word = " " not in lemma and "-" not in lemma
    short = _syllable_count(lemma) == 1 or (_syllable_count(lemma) == 2 and lemma.endswith("y"))
    if one_word and short and not lemma.endswith("ly"):
        return _add_suffix(lemma, "est" if superlative else "er")
    return ("most " if superlative else "more ") + lemma


def _plural(lemma: str, wordnet: WordNet) -> str:
    forms = _inverted_exceptions(wordnet)["n"].get(lemma, ())
    return forms[0] if forms else _add_s(lemma)


def inflect(lemma: str, pos: str, form: Form, wordnet: WordNet) -> str:
    """Return ``lemma`` (lower case, words separated by spaces) in the given form.

    Multi-word verbs inflect their first word ("fall short" -> "fell short"), and multi-word
    nouns their last word.
    """
    if form is Form.BASE:
        return lemma
    words = lemma.split(" ")
    if pos == "v":
        head = words[0]
        if form is Form.PAST:
            head = _verb_past(head, participle=False, wordnet=wordnet)
        elif form is Form.PAST_PARTICIPLE:
            head = _verb_past(head, participle=True, wordnet=wordnet)
        elif form is Form.GERUND:
            head = _verb_gerund(head, wordnet)
        elif form is Form.PRESENT_3SG:
            head = _THIRD_PERSON_IRREGULAR.get(head) or _add_s(head)
        return " ".join([head, *words[1:]])
    if pos == "n" and form is Form.PLURAL:
        return " ".join([*words[:-1], _plural(words[-1], wordnet)])
    if pos in ("a", "r") and form in (Form.COMPARATIVE, Form.SUPERLATIVE):
        return _graded(lemma, pos, form is Form.SUPERLATIVE, wordnet)
    return lemma


def adverb_to_adjectives(adverb: str) -> list[str]:
    """Return spelling candidates for the adjective an "-ly" adverb comes from.

    "badly" -> "bad", "happily" -> "happy", "terribly" -> "terrible", "basically" -> "basic".
    The caller keeps the candidates that are WordNet adjectives.
    """
    if not adverb.endswith("ly") or len(adverb) < 5:
        return []
    stem = adverb[:-2]
    candidates = [stem, stem + "e", adverb[:-1] + "e"]
    if adverb.endswith("ily"):
        candidates.append(adverb[:-3] + "y")
    if adverb.endswith("ally"):
        candidates.append(adverb[:-4])
    return candidates


def adjective_to_adverb(adjective: str) -> str:
    """Return the "-ly" adverb of an adjective by the spelling rules ("unhappy" -> "unhappily")."""
    special = {"good": "well", "true": "truly", "due": "duly", "whole": "wholly"}
    if adjective in special:
        return special[adjective]
    if adjective.endswith("ic"):
        return adjective + "ally"
    if adjective.endswith("le") and len(adjective) > 2 and adjective[-3] not in _VOWELS:
        return adjective[:-1] + "y"
    if adjective.endswith("ll"):
        return adjective + "y"
    if adjective.endswith("y") and len(adjective) > 2 and adjective[-2] not in _VOWELS:
        return adjective[:-1] + "ily"
    return adjective + "ly"
