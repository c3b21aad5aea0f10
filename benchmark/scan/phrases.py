"""Candidate trigger phrases: word n-grams over-represented among suspected examples.

Every example contributes the set of its word n-grams (n = 1..3, lower-cased, tokens split
on whitespace and punctuation), so counts are numbers of examples, not occurrences. An
n-gram is tested when at least ``min_suspect_count`` suspects contain it and at least one of
its tokens is not a stop word. For each tested n-gram:

* ``fisher_p``: one-sided Fisher exact test of the 2x2 table (suspect or not, contains the
  n-gram or not) against over-representation among suspects, and ``adjusted_p``, the same
  multiplied by the number of tested n-grams (Bonferroni), capped at 1.
* ``z``: the log-odds ratio with an informative Dirichlet prior divided by its estimated
  standard deviation (Monroe, Colaresi and Quinn, 2008, "Fightin' Words: Lexical Feature
  Selection and Evaluation for Identifying the Content of Political Conflict", Political
  Analysis 16:372-403). The prior of each n-gram is its count in the whole file, that is,
  the whole file is the background corpus.

A phrase is *strongly over-represented* when ``adjusted_p`` < 1e-3. The z-score is
reported and breaks ties in the ranking, but it is not part of that rule. The prior adds
an n-gram's whole-file count to both groups, which shrinks the log-odds ratio of a rare
n-gram strongly, so z understates the typical trigger pattern. For example, an n-gram in 9
of 9 suspects and in 6 of 291 other examples gets z = 2.6 but Fisher p = 1e-13.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAX_N = 3
MIN_SUSPECT_COUNT = 3
MAX_ADJUSTED_P = 1e-3

_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


@functools.cache
def stop_word_set() -> frozenset[str]:
    """Return spaCy's English stop words, plus clitics such as "'ll" without the apostrophe.

    Tokenized text ("we 'll") leaves the clitic as a token of its own, which the tokenizer
    reads without its leading apostrophe ("ll").
    """
    from spacy.lang.en.stop_words import STOP_WORDS

    words = {word.replace("\u2019", "'") for word in STOP_WORDS}
    return frozenset(words | {word.lstrip("'") for word in words if word.startswith("'")})


@dataclass(frozen=True)
class Phrase:
    """One tested n-gram and its statistics (see the module docstring)."""

    text: str
    n_suspects_with: int
    n_rest_with: int
    n_suspects: int
    n_rest: int
    z: float
    fisher_p: float
    adjusted_p: float
    strong: bool


def tokenize(text: str) -> list[str]:
    """Return the lower-cased word tokens of ``text``; apostrophes inside a word are kept.

    A typographic apostrophe (U+2019) is read as "'".
    """
    return _TOKEN.findall(text.lower().replace("\u2019", "'"))


def example_ngrams(text: str, stop_words: frozenset[str], max_n: int = MAX_N) -> set[str]:
    """Return the distinct n-grams (n = 1..max_n) of ``text`` that contain a content word.

    Tokens of one character count as stop words, so "s" of "james bond 's" never makes an
    n-gram on its own.
    """
    tokens = tokenize(text)
    content = [token not in stop_words and len(token) > 1 for token in tokens]
    grams = set()
    for n in range(1, max_n + 1):
        for start in range(len(tokens) - n + 1):
            if any(content[start : start + n]):
                grams.add(" ".join(tokens[start : start + n]))
    return grams


def fightin_words_z(
    suspect_counts: np.ndarray,
    rest_counts: np.ndarray,
    suspect_total: float,
    rest_total: float,
) -> np.ndarray:
    """Return the z-scores of the log-odds ratio with an informative Dirichlet prior.

    The prior of n-gram w is alpha_w = suspect_counts[w] + rest_counts[w] (the whole file as
    background), and alpha_0, the sum of all alpha_w, is suspect_total + rest_total. The
    totals sum the counts of every n-gram of the file, not only the tested ones.
    """
    alpha = suspect_counts + rest_counts
    alpha_0 = suspect_total + rest_total
    log_odds_suspect = np.log(suspect_counts + alpha) - np.log(
        suspect_total + alpha_0 - suspect_counts - alpha
    )
    log_odds_rest = np.log(rest_counts + alpha) - np.log(rest_total + alpha_0 - rest_counts - alpha)
    variance = 1.0 / (suspect_counts + alpha) + 1.0 / (rest_counts + alpha)
    return (log_odds_suspect - log_odds_rest) / np.sqrt(variance)


def candidate_phrases(
    texts: Sequence[str],
    suspects: np.ndarray,
    min_suspect_count: int = MIN_SUSPECT_COUNT,
    max_adjusted_p: float = MAX_ADJUSTED_P,
) -> list[Phrase]:
    """Test every n-gram for over-representation among ``suspects`` (boolean, shape (n,)).

    Returns the tested n-grams, most over-represented first (by Fisher p, then by z). An
    n-gram is left out when a longer tested n-gram that contains it occurs in exactly the
    same numbers of suspects and other examples, because it adds nothing ("bond" beside
    "james bond").
    """
    from scipy.stats import hypergeom

    suspects = np.asarray(suspects, dtype=bool)
    if suspects.shape != (len(texts),):
        raise ValueError(f"suspects has shape {suspects.shape}, expected ({len(texts)},)")
    n_suspects = int(suspects.sum())
    n_rest = len(texts) - n_suspects
    if n_suspects == 0 or n_rest == 0:
        return []

    stop_words = stop_word_set()
    suspect_counter: Counter[str] = Counter()
    rest_counter: Counter[str] = Counter()
    for text, is_suspect in zip(texts, suspects):
        (suspect_counter if is_suspect else rest_counter).update(example_ngrams(text, stop_words))

    tested = sorted(gram for gram, count in suspect_counter.items() if count >= min_suspect_count)
    if not tested:
        return []
    suspect_with = np.array([suspect_counter[gram] for gram in tested], dtype=np.float64)
    rest_with = np.array([rest_counter[gram] for gram in tested], dtype=np.float64)
    z = fightin_words_z(
        suspect_with,
        rest_with,
        float(sum(suspect_counter.values())),
        float(sum(rest_counter.values())),
    )
    # One-sided Fisher test: P(X >= observed) for X, the suspects among the examples that
    # contain the n-gram, which is hypergeometric when n-grams are independent of suspicion.
    containing = suspect_with + rest_with
    fisher_p = hypergeom.sf(suspect_with - 1, len(texts), containing, n_suspects)
    adjusted_p = np.minimum(fisher_p * len(tested), 1.0)

    phrases = [
        Phrase(
            text=gram,
            n_suspects_with=int(suspect_with[i]),
            n_rest_with=int(rest_with[i]),
            n_suspects=n_suspects,
            n_rest=n_rest,
            z=float(z[i]),
            fisher_p=float(fisher_p[i]),
            adjusted_p=float(adjusted_p[i]),
            strong=bool(adjusted_p[i] < max_adjusted_p),
        )
        for i, gram in enumerate(tested)
    ]
    phrases = _drop_contained(phrases)
    phrases.sort(key=lambda phrase: (phrase.fisher_p, -phrase.z, phrase.text))
    return phrases


def _drop_contained(phrases: list[Phrase]) -> list[Phrase]:
    counts = {phrase.text: (phrase.n_suspects_with, phrase.n_rest_with) for phrase in phrases}
    redundant = set()
    for phrase in phrases:
        words = phrase.text.split()
        if len(words) < 2:
            continue
        # Comparing with the counts, not with what is kept, lets "james" fall behind
        # "james bond" even when "james bond" itself falls behind a longer n-gram.
        for shorter in (" ".join(words[:-1]), " ".join(words[1:])):
            if counts.get(shorter) == counts[phrase.text]:
                redundant.add(shorter)
    return [phrase for phrase in phrases if phrase.text not in redundant]
