"""``poisonbench scan`` on real SST-2 and IMDB data: formats, bad rows, ranks and phrases."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from attacks import get_attack
from benchmark.cli import main
from benchmark.data import load_sst2
from benchmark.data.formats import (
    DEFAULT_DEFINITION,
    MAX_LOGGED_BAD_ROWS,
    detect_format,
    load_examples,
)
from benchmark.errors import InputError
from benchmark.scan.consensus import consensus_ranking
from benchmark.scan.options import DEFAULT_SCAN_DETECTORS
from benchmark.scan.phrases import candidate_phrases, example_ngrams, tokenize
from detectors.base import get_detector

N_TRAIN = 300
POISON_RATIO = 0.05
TRIGGER_WORDS = {"james bond", "james", "bond"}
# Blind detectors that cost one forward pass each; STRIP (8 passes) and the influence
# detectors are left out to keep the MiniLM runs short.
MINILM_DETECTORS = "loss,loss-epochs,spectral-signature,activation-clustering"
MINILM_OPTIONS = ["--epochs", "2", "--learning-rate", "2e-4", "--max-length", "48"]
TINY_OPTIONS = [
    "--model",
    "tiny-bert",
    "--epochs",
    "1",
    "--max-length",
    "32",
    "--tracked-modules",
    r"layer\.1\.,classifier",
]


def write_tsv(path, dataset) -> None:
    lines = ["sentence\tlabel"] + [f"{e.text}\t{e.label}" for e in dataset.examples]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def run_scan_cli(arguments: list[str]) -> tuple[int, str, str]:
    """Run ``poisonbench`` in-process and return the exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(arguments)
    return code, out.getvalue(), err.getvalue()


def phrase_section_tables(report: str) -> list[list[list[str]]]:
    """Return the tables of the candidate-phrase section of report.md as rows of cells."""
    section = report.split("## Candidate trigger phrases", 1)[1].split("\n## ", 1)[0]
    tables = []
    for block in section.split("\n\n"):
        rows = [line for line in block.splitlines() if line.startswith("| ")]
        if rows:
            tables.append([[cell.strip() for cell in row.split("|")[1:-1]] for row in rows[2:]])
    return tables


def phrase_rows(report: str) -> list[str]:
    """Return the phrases of the candidate-phrase table of report.md, in table order."""
    return [row[0] for row in phrase_section_tables(report)[0]]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("poisonbench: error:")]


@pytest.fixture(scope="module")
def sst2_sample(shared_data):
    train, _ = load_sst2(shared_data)
    return train.sample(N_TRAIN, 0)


@pytest.fixture(scope="module")
def poisoned_scan(tmp_path_factory, sst2_sample):
    folder = tmp_path_factory.mktemp("poisoned")
    poisoned = get_attack("ner-dirty").poison(sst2_sample, POISON_RATIO, seed=0)
    data_file = folder / "poisoned.tsv"
    write_tsv(data_file, poisoned.dataset)
    output_dir = folder / "out"
    code, out, err = run_scan_cli(
        [
            "scan",
            str(data_file),
            "--output-dir",
            str(output_dir),
            "--cache-dir",
            str(folder / "cache"),
            "--detectors",
            MINILM_DETECTORS,
            *MINILM_OPTIONS,
        ]
    )
    return code, out, err, output_dir, poisoned.poison_mask


@pytest.fixture(scope="module")
def clean_scan(tmp_path_factory, sst2_sample):
    folder = tmp_path_factory.mktemp("clean")
    data_file = folder / "clean.tsv"
    write_tsv(data_file, sst2_sample)
    output_dir = folder / "out"
    code, out, err = run_scan_cli(
        [
            "scan",
            str(data_file),
            "--output-dir",
            str(output_dir),
            "--cache-dir",
            str(folder / "cache"),
            "--detectors",
            MINILM_DETECTORS,
            *MINILM_OPTIONS,
        ]
    )
    return code, out, err, output_dir


# -- poisoned SST-2 ---------------------------------------------------------------------------


@pytest.mark.slow
def test_poisoned_scan_writes_outputs(poisoned_scan):
    code, out, err, output_dir, _ = poisoned_scan
    assert code == 0, err
    assert sorted(path.name for path in output_dir.iterdir()) == [
        "report.html",
        "report.md",
        "scan.csv",
    ]
    frame = pd.read_csv(output_dir / "scan.csv")
    assert len(frame) == N_TRAIN
    for name in MINILM_DETECTORS.split(","):
        for column in (f"{name}_score", f"{name}_rank", f"{name}_flagged"):
            assert column in frame.columns
    assert frame["line"].tolist() == list(range(2, N_TRAIN + 2))


@pytest.mark.slow
def test_poisoned_scan_prints_estimate(poisoned_scan):
    _, out, _, _, _ = poisoned_scan
    assert "Estimated run time: about" in out
    assert "This is an estimate" in out


@pytest.mark.slow
def test_poisons_ranked_near_top(poisoned_scan):
    _, _, _, output_dir, mask = poisoned_scan
    frame = pd.read_csv(output_dir / "scan.csv")
    aurocs = {}
    median_ranks = {}
    for name in MINILM_DETECTORS.split(","):
        aurocs[name] = roc_auc_score(mask, frame[f"{name}_score"])
        median_ranks[name] = float(np.median(frame[f"{name}_rank"][mask]))
    best = max(aurocs, key=aurocs.get)
    assert best in DEFAULT_SCAN_DETECTORS
    assert get_detector(best).track == "blind"
    assert aurocs[best] > 0.9, aurocs
    assert median_ranks[best] <= 0.1 * N_TRAIN, median_ranks


@pytest.mark.slow
def test_trigger_among_top_phrases(poisoned_scan):
    _, _, _, output_dir, _ = poisoned_scan
    report = (output_dir / "report.md").read_text(encoding="utf-8")
    top_three = phrase_rows(report)[:3]
    assert TRIGGER_WORDS & set(top_three), top_three
    assert "Strongly over-represented:" in report


@pytest.mark.slow
def test_phrase_examples_are_poisons(poisoned_scan):
    _, _, _, output_dir, mask = poisoned_scan
    report = (output_dir / "report.md").read_text(encoding="utf-8")
    tables = phrase_section_tables(report)
    assert len(tables) == 2
    listed_lines = {int(row[0]) for row in tables[1]}
    poison_lines = {int(index) + 2 for index in np.flatnonzero(mask)}
    assert len(listed_lines) >= 10
    assert listed_lines <= poison_lines


@pytest.mark.slow
def test_report_html_self_contained(poisoned_scan):
    _, _, _, output_dir, _ = poisoned_scan
    page = (output_dir / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<style>" in page
    for external in ("<script", "<link", "src=", "http://", "https://"):
        assert external not in page


# -- clean SST-2 ------------------------------------------------------------------------------


@pytest.mark.slow
def test_clean_scan_finds_no_phrase(clean_scan):
    code, _, err, output_dir = clean_scan
    assert code == 0, err
    report = (output_dir / "report.md").read_text(encoding="utf-8")
    assert "No strongly over-represented phrase" in report
    assert "Strongly over-represented:" not in report


# -- malformed rows ---------------------------------------------------------------------------


def test_bad_row_stops_scan(tmp_path, sst2_sample):
    data_file = tmp_path / "broken.tsv"
    write_tsv(data_file, sst2_sample.with_examples(sst2_sample.examples[:20]))
    lines = data_file.read_text().splitlines()
    lines.insert(3, "a row without any tab")
    data_file.write_text("\n".join(lines) + "\n")
    output_dir = tmp_path / "out"

    code, _, err = run_scan_cli(["scan", str(data_file), "--output-dir", str(output_dir)])

    assert code == 2
    errors = error_lines(err)
    assert len(errors) == 1, err
    assert f"{data_file}:4: missing tab" in errors[0]
    assert "--skip-bad-rows" in errors[0]
    assert not output_dir.exists() or not any(output_dir.iterdir())


@pytest.mark.parametrize(
    ("detectors", "expected"),
    [
        ("loss,oracle-triggered-influence", ["oracle-triggered-influence", "oracle"]),
        ("transform-combined", ["transform-combined", "per-query influence"]),
    ],
    ids=["oracle", "per-query"],
)
def test_unsupported_detector_rejected(tmp_path, sst2_sample, detectors, expected):
    data_file = tmp_path / "data.tsv"
    write_tsv(data_file, sst2_sample)
    output_dir = tmp_path / "out"

    code, _, err = run_scan_cli(
        [
            "scan",
            str(data_file),
            "--detectors",
            detectors,
            "--output-dir",
            str(output_dir),
        ]
    )

    assert code == 2
    errors = error_lines(err)
    assert len(errors) == 1, err
    for text in expected:
        assert text in errors[0]
    assert not output_dir.exists()


def test_query_label_outside_training_labels(tmp_path, sst2_sample):
    data_file = tmp_path / "data.tsv"
    write_tsv(data_file, sst2_sample)
    queries_file = tmp_path / "queries.tsv"
    queries_file.write_text("sentence\tlabel\na fine film\t1\na dull film\t5\n")

    code, _, err = run_scan_cli(
        [
            "scan",
            str(data_file),
            "--queries",
            str(queries_file),
            "--detectors",
            "transform-variance",
            "--output-dir",
            str(tmp_path / "out"),
        ]
    )

    assert code == 2
    assert f"{queries_file}:3: label '5' is not one of the training labels" in err


def test_skipped_rows_logged_with_limit(tmp_path, caplog):
    lines = ["sentence\tlabel"]
    for i in range(30):
        lines.append(f"good text number {i}\t{i % 2}")
        lines.append(f"bad row {i} without a tab")
    data_file = tmp_path / "many-bad.tsv"
    data_file.write_text("\n".join(lines) + "\n")

    with caplog.at_level(logging.WARNING, logger="benchmark.data.formats"):
        loaded = load_examples(data_file, skip_bad_rows=True)

    assert len(loaded.dataset) == 30
    assert len(loaded.bad_rows) == 30
    assert loaded.bad_rows[0].line == 3
    per_row = [r for r in caplog.records if r.getMessage().startswith("Skipping malformed row")]
    assert len(per_row) == MAX_LOGGED_BAD_ROWS
    summary = [r for r in caplog.records if "more malformed rows" in r.getMessage()]
    assert len(summary) == 1
    assert "Skipped 10 more malformed rows" in summary[0].getMessage()


@pytest.mark.slow
def test_skip_bad_rows_completes(tmp_path, sst2_sample):
    """A tiny-BERT scan with skipped rows, held-out queries and an influence detector."""
    data_file = tmp_path / "skips.tsv"
    write_tsv(data_file, sst2_sample.with_examples(sst2_sample.examples[:60]))
    lines = data_file.read_text().splitlines()
    lines.insert(3, "a row without any tab")
    lines.insert(6, "a row with a markup label\t<b>x</b>")
    data_file.write_text("\n".join(lines) + "\n")
    output_dir = tmp_path / "out"

    code, _, err = run_scan_cli(
        [
            "scan",
            str(data_file),
            "--skip-bad-rows",
            "--detectors",
            "loss,transform-variance",
            "--n-queries",
            "4",
            "--output-dir",
            str(output_dir),
            "--cache-dir",
            str(tmp_path / "cache"),
            *TINY_OPTIONS,
        ]
    )

    assert code == 0, err
    report = (output_dir / "report.md").read_text(encoding="utf-8")
    assert f"{data_file}:4: missing tab between sentence and label" in report
    assert f"{data_file}:7: invalid label '<b>x</b>'" in report
    assert "60 examples scanned, 2 malformed rows skipped" in report
    assert "4 examples drawn from the scanned file" in report
    assert "Victim `tiny-bert` (encoder family) fine-tuned for 1 epochs" in report
    assert len(pd.read_csv(output_dir / "scan.csv")) == 60
    page = (output_dir / "report.html").read_text(encoding="utf-8")
    assert "&#x27;&lt;b&gt;x&lt;/b&gt;&#x27;" in page
    assert "<b>x</b>" not in page


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny-causal", "tiny-t5"])
def test_generative_victim_scan(tmp_path, sst2_sample, model):
    """A scan with a causal or seq2seq victim: blind detectors and an influence detector."""
    data_file = tmp_path / "small.tsv"
    examples = sst2_sample.with_examples(sst2_sample.examples[:40])
    write_tsv(data_file, examples)
    output_dir = tmp_path / "out"

    code, _, err = run_scan_cli(
        [
            "scan",
            str(data_file),
            "--model",
            model,
            "--detectors",
            "loss,spectral-signature,transform-variance",
            "--n-queries",
            "4",
            "--epochs",
            "1",
            "--max-length",
            "48",
            "--learning-rate",
            "5e-3",
            "--output-dir",
            str(output_dir),
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )

    assert code == 0, err
    frame = pd.read_csv(output_dir / "scan.csv")
    assert len(frame) == 40
    assert list(frame["text"]) == examples.texts
    for name in ("loss", "spectral-signature", "transform-variance"):
        scores = frame[f"{name}_score"].to_numpy()
        assert np.all(np.isfinite(scores)), name
        assert np.unique(scores).size > 1, name
    report = (output_dir / "report.md").read_text(encoding="utf-8")
    family = "causal" if model == "tiny-causal" else "seq2seq"
    assert f"Victim `{model}` ({family} family) fine-tuned for 1 epochs" in report


# -- formats ----------------------------------------------------------------------------------


def test_imdb_ni_jsonl_detected(shared_data):
    path = shared_data / "imdb-ni" / "queries.jsonl"
    assert detect_format(path) == "ni-jsonl"

    loaded = load_examples(path)

    assert loaded.format == "ni-jsonl"
    assert len(loaded.dataset) == 150
    assert loaded.dataset.label_names == ("negative", "positive")
    assert loaded.dataset.definition.startswith("Classify the sentiment")
    assert loaded.source_ids[0] == json.loads(path.read_text().splitlines()[0])["id"]
    assert loaded.bad_rows == ()


def test_alpaca_jsonl_detected(tmp_path):
    records = [
        {"instruction": "Is this review positive?", "input": "A lovely film.", "output": "yes"},
        {"instruction": "Is this review positive?", "input": "A dull film.", "output": "no"},
        {"instruction": "Is this review positive?", "input": "Great acting.", "output": "yes"},
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(record) for record in records) + "\n")
    assert detect_format(path) == "alpaca-jsonl"

    loaded = load_examples(path)

    assert loaded.dataset.label_names == ("no", "yes")
    assert loaded.dataset.labels == [1, 0, 1]
    assert loaded.dataset.definition == "Is this review positive?"
    assert loaded.dataset.texts == ["A lovely film.", "A dull film.", "Great acting."]


def test_alpaca_varying_instructions_folded(tmp_path):
    records = [
        {"instruction": "Rate the review.", "input": "Fine.", "output": "good"},
        {"instruction": "Judge this text.", "input": "", "output": "bad"},
    ]
    path = tmp_path / "mixed.data"
    path.write_text("\n".join(json.dumps(record) for record in records) + "\n")
    assert detect_format(path) == "alpaca-jsonl"

    loaded = load_examples(path)

    assert loaded.dataset.definition == ""
    assert loaded.dataset.texts == ["Rate the review.\n\nFine.", "Judge this text."]


def test_csv_quoted_fields(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('sentence,label\n"funny, warm",1\n"two\nlines",0\nplain,1\n')
    assert detect_format(path) == "csv"

    loaded = load_examples(path)

    assert loaded.dataset.texts == ["funny, warm", "two\nlines", "plain"]
    assert loaded.lines == (2, 3, 5)
    assert loaded.dataset.definition == DEFAULT_DEFINITION


def test_tsv_detected_by_content(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("sentence\tlabel\na fine film\t1\na dull film\t0\n")
    assert detect_format(path) == "tsv"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", "bad.jsonl:2: invalid JSON"),
        ('{"Definition": "d", "Instance": {"input": "x"}}', 'bad.jsonl:2: missing "Instance"'),
        ('{"Definition": "d", "Instance": {"input": "", "output": "a"}}', 'empty "input"'),
    ],
)
def test_malformed_ni_line(tmp_path, line, expected):
    good = json.dumps({"Definition": "d", "Instance": {"input": "text", "output": "a"}})
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{good}\n{line}\n{good}\n")

    with pytest.raises(InputError, match=re.escape(expected)):
        load_examples(path)


def test_undetectable_format(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("just some words\n")
    with pytest.raises(InputError, match="pass --format"):
        detect_format(path)


# -- phrases and consensus --------------------------------------------------------------------


def test_tokenize_splits_punctuation():
    assert tokenize("James Bond's film, (2002)!") == ["james", "bond's", "film", "2002"]


def test_ngrams_skip_stop_words():
    grams = example_ngrams("the film of the year", frozenset({"the", "of"}))
    assert "film" in grams
    assert "the film of" in grams
    assert "of the" not in grams
    assert "the" not in grams


def test_planted_phrase_is_strong():
    rng = np.random.default_rng(0)
    vocabulary = [f"word{i}" for i in range(200)]
    texts = [" ".join(rng.choice(vocabulary, size=8)) for _ in range(200)]
    suspects = np.zeros(200, dtype=bool)
    suspects[:10] = True
    for i in range(6):
        texts[i] += " cf trigger"

    phrases = candidate_phrases(texts, suspects)

    assert phrases[0].text == "cf trigger"
    assert phrases[0].strong
    assert phrases[0].n_suspects_with == 6
    assert phrases[0].n_rest_with == 0
    assert "trigger" not in [phrase.text for phrase in phrases]
    assert [phrase.text for phrase in phrases if phrase.strong] == ["cf trigger"]


def test_random_suspects_give_no_strong_phrase():
    rng = np.random.default_rng(1)
    vocabulary = [f"word{i}" for i in range(50)]
    texts = [" ".join(rng.choice(vocabulary, size=10)) for _ in range(300)]
    suspects = rng.random(300) < 0.05

    phrases = candidate_phrases(texts, suspects)

    assert phrases
    assert not any(phrase.strong for phrase in phrases)


def test_consensus_mean_rank_fraction():
    consensus = consensus_ranking({"a": np.array([3.0, 2.0, 1.0]), "b": np.array([1.0, 3.0, 2.0])})
    np.testing.assert_array_equal(consensus.ranks["a"], [1, 2, 3])
    np.testing.assert_array_equal(consensus.ranks["b"], [3, 1, 2])
    np.testing.assert_allclose(consensus.score, [0.5, 0.25, 0.75])
    np.testing.assert_array_equal(consensus.rank, [2, 1, 3])
