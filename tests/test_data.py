"""Loaders on the real data files, and their errors on malformed rows."""

from __future__ import annotations

import pytest

from benchmark.data import load_glue_tsv, load_label_text, load_natural_instructions, load_sst2
from benchmark.data.loaders import SENTIMENT_DEFINITION, SENTIMENT_LABELS
from benchmark.errors import DataNotFoundError, InputError


def test_sst2_split_sizes(shared_data):
    train, test = load_sst2(shared_data)
    assert len(train) == 6920
    assert len(test) == 1821
    assert train.examples[0].text.startswith("a stirring , funny and finally transporting")
    assert train.examples[0].label == 1
    assert train.examples[0].uid == "sst2-train:2"
    assert set(train.labels) == {0, 1}


def test_sst2_env_variable(shared_data, monkeypatch):
    monkeypatch.setenv("POISONBENCH_DATA_DIR", str(shared_data))
    train, _ = load_sst2(None)
    assert len(train) == 6920


def test_sst2_missing_folder_names_both_options(tmp_path):
    with pytest.raises(DataNotFoundError) as error:
        load_sst2(tmp_path / "nowhere")
    message = str(error.value)
    assert "sst2/train.tsv" in message
    assert "hub" in message


def test_mr_label_text_lines(shared_data):
    mr = load_label_text(
        shared_data / "mr" / "rt-polarity.all", "mr", SENTIMENT_LABELS, SENTIMENT_DEFINITION
    )
    assert len(mr) == 10662
    assert mr.examples[0].text == "simplistic , silly and tedious ."
    assert mr.examples[0].label == 0


def test_natural_instructions_layout(shared_data):
    imdb = load_natural_instructions(shared_data / "imdb-ni" / "queries.jsonl")
    assert len(imdb) == 150
    assert imdb.label_names == ("negative", "positive")
    assert imdb.definition.startswith("Classify the sentiment")
    assert imdb.examples[0].uid == "sentiment_classification_9795159"
    assert imdb.examples[0].label == 0


def test_tsv_row_without_tab(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\ngood film\t1\nno tab here\n")
    with pytest.raises(InputError, match=r"train\.tsv:3: missing tab"):
        load_glue_tsv(path)


def test_tsv_label_outside_binary(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\ngood film\t1\nbad film\t2\n")
    with pytest.raises(InputError, match=r"train\.tsv:3: invalid label '2'"):
        load_glue_tsv(path)


def test_tsv_wrong_header(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("text\tlabel\ngood film\t1\n")
    with pytest.raises(InputError, match=r"train\.tsv:1: expected the header"):
        load_glue_tsv(path)


def test_jsonl_invalid_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"Definition": "d", "Instance": {"input": "x", "output": "positive"}}\n{bad\n')
    with pytest.raises(InputError, match=r"data\.jsonl:2: invalid JSON"):
        load_natural_instructions(path)


def test_sample_is_seeded(shared_data):
    train, _ = load_sst2(shared_data)
    first = train.sample(100, seed=3)
    second = train.sample(100, seed=3)
    other = train.sample(100, seed=4)
    assert first.fingerprint() == second.fingerprint()
    assert first.fingerprint() != other.fingerprint()
    assert len(first) == 100
