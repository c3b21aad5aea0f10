"""Leaderboard suites, ranking, submissions and ``poisonbench reproduce paper``.

One tiny suite (tiny-bert, 60 SST-2 examples, one epoch, two ratios, two seeds: four
scenarios) runs once for the module through ``poisonbench leaderboard``. The other tests
rank again from its cache and rows, validate submissions against it, and rebuild the
paper's tables from the same cells.
"""

from __future__ import annotations

import csv
import json
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.cli import main
from benchmark.errors import InputError
from benchmark.runner.sweep import read_rows
from leaderboard.evaluate import poison_mask_reader
from leaderboard.ranking import rank
from leaderboard.submission import load_submission
from leaderboard.suite import load_suite, shipped_suites

TINY_SUITE = """
suite:
  name: tiny
  version: "0.1"
  description: four tiny-bert scenarios for tests
base:
  model: tiny-bert
  data: {{n_train: 60, n_test: 40, data_dir: {data_dir}}}
  training: {{epochs: 1, max_length: 32, learning_rate: 0.001}}
  queries: {{n_queries: 4}}
  influence: {{tracked_modules: [classifier]}}
  recovery_detectors: [transform-variance, loss]
axes:
  datasets: [sst2]
  attacks: [ner-dirty]
  ratios: [0.05, 0.1]
  seeds: [0, 1]
  detectors:
    - transform-variance
    - transform-voting
    - transform-voting-majority
    - single-prefix-negation
    - raw-influence
    - loss
    - random
    - oracle-triggered-influence
  transform_sets:
    three: [prefix_negation, paraphrase, grammatical_negation]
  holdout: [lexicon, semantic, structural]
"""
SCENARIOS = [
    "sst2-ner-dirty-three-ratio0.05-seed0",
    "sst2-ner-dirty-three-ratio0.05-seed1",
    "sst2-ner-dirty-three-ratio0.1-seed0",
    "sst2-ner-dirty-three-ratio0.1-seed1",
]

PLUGIN = textwrap.dedent(
    '''
    """A plug-in detector for the leaderboard tests: longer texts are more suspicious."""
    import numpy as np

    from detectors.base import Detector, FlagRule


    class LengthDetector(Detector):
        description = "text length"
        track = "blind"
        default_flag_rule = FlagRule("top_k", 3)

        def score(self, context):
            return np.array([len(e.text) for e in context.train.examples], dtype=float)
    '''
)


@pytest.fixture(scope="module")
def board(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("leaderboard")
    suite_file = folder / "tiny.yaml"
    suite_file.write_text(TINY_SUITE.format(data_dir=json.dumps(str(shared_data))))
    cache_dir, output_dir = folder / "cache", folder / "board"
    arguments = ["leaderboard", "--suite", str(suite_file), "--cache-dir", str(cache_dir)]
    assert main([*arguments, "--output-dir", str(output_dir)]) == 0
    return {
        "folder": folder,
        "suite_file": suite_file,
        "cache_dir": cache_dir,
        "output_dir": output_dir,
        "arguments": arguments,
        "suite": load_suite(suite_file),
    }


class TableParser(HTMLParser):
    """Collect the text of every cell of every table, by table id."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.external: list[str] = []
        self._table = None
        self._row = None
        self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("script", "img", "link") and (attrs.get("src") or attrs.get("href")):
            self.external.append(attrs.get("src") or attrs.get("href"))
        if tag == "table":
            self._table = attrs["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data, indent=1))
    return path


def metrics_submission(name: str, f1: float, version: str = "0.1") -> dict:
    return {
        "schema_version": 1,
        "suite": {"name": "tiny", "version": version},
        "detector": {"name": name, "track": "blind"},
        "results": [
            {"scenario": s, "metrics": {"precision": f1, "recall": f1, "f1": f1, "auroc": 0.9}}
            for s in SCENARIOS
        ],
    }


# -- suites -------------------------------------------------------------------------------
def test_shipped_suites_load(shared_data):
    assert {"sst2-core", "paper-cpu", "paper-gpu-t5", "paper-gpu-deepseek"} <= set(shipped_suites())
    core = load_suite("sst2-core", {"base.data.data_dir": str(shared_data)})
    assert core.info.label == "sst2-core v1.2"
    assert len(core.scenario_ids) == 24
    assert {cell.config.attack.name for cell in core.sweep.cells} >= {
        "adaptive-negation",
        "adaptive-diluted",
        "badnets",
    }
    paper = load_suite("paper-cpu")
    assert [cell.config.attack.ratio for cell in paper.sweep.cells[::3]] == [0.01, 0.03, 0.05, 0.1]


def test_paper_cpu_matches_ratios_config():
    """paper-cpu and configs/ratios.yaml list the same cells, so they share one cache."""
    from benchmark.runner.sweep_config import load_sweep

    paper = load_suite("paper-cpu").sweep
    ratios = load_sweep(Path(__file__).resolve().parents[1] / "configs" / "ratios.yaml")
    assert [cell.config for cell in paper.cells] == [cell.config for cell in ratios.cells]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("base: {model: tiny-bert}\n", "key suite is missing"),
        ("suite: {name: x, version: one}\n", "suite: suite version must look like '1.0'"),
        ("suite: {name: x, version: '1.0', owner: me}\n", "unknown key suite.owner"),
        ("suite: {name: 'a b', version: '1.0'}\n", "may contain only letters"),
    ],
)
def test_bad_suite_file(tmp_path, text, expected):
    path = tmp_path / "suite.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_suite(path)


def test_unknown_suite_name():
    with pytest.raises(InputError, match="one of the shipped suites"):
        load_suite("no-such-suite")


# -- the leaderboard files ----------------------------------------------------------------
def test_files_written(board):
    names = {path.name for path in board["output_dir"].iterdir()}
    assert {"LEADERBOARD.md", "leaderboard.csv", "leaderboard_scenarios.csv"} <= names
    assert "leaderboard.html" in names
    markdown = (board["output_dir"] / "LEADERBOARD.md").read_text()
    assert "tiny v0.1" in markdown
    assert "Oracle detectors" in markdown


def test_csv_means_match_rows(board):
    """The CSV's mean F1 and AUROC are the means of the scenarios' sweep rows."""
    rows = pd.DataFrame(read_rows(board["output_dir"] / "runs" / "results.jsonl"))
    rows = rows[rows["held_out_category"].isna()]
    assert sorted(set(rows["cell_name"])) == SCENARIOS
    ranking = read_csv(board["output_dir"] / "leaderboard.csv")
    assert len(ranking) == 8
    for entry in ranking:
        mine = rows[rows["detector"] == entry["detector"]]
        assert len(mine) == 4
        assert float(entry["mean_f1"]) == pytest.approx(mine["f1"].mean(), abs=1e-12)
        assert float(entry["mean_auroc"]) == pytest.approx(mine["auroc"].mean(), abs=1e-12)
        assert int(entry["n_scenarios"]) == 4


def test_ranking_order_and_oracle_apart(board):
    ranking = read_csv(board["output_dir"] / "leaderboard.csv")
    groups = [entry["group"] for entry in ranking]
    assert groups == ["ranked"] * 7 + ["oracle"]
    assert ranking[-1]["detector"] == "oracle-triggered-influence"
    assert ranking[-1]["rank_f1"] == "1"
    f1 = [float(entry["mean_f1"]) for entry in ranking[:7]]
    assert f1 == sorted(f1, reverse=True)
    ranks = [int(entry["rank_f1"]) for entry in ranking[:7]]
    assert ranks[0] == 1
    assert ranks == sorted(ranks)


def test_html_matches_csv(board):
    """The HTML's ranking tables list the CSV's detectors in the CSV's order and values."""
    parser = TableParser()
    parser.feed((board["output_dir"] / "leaderboard.html").read_text())
    assert parser.external == []
    ranking = read_csv(board["output_dir"] / "leaderboard.csv")
    for group, table_id in (("ranked", "ranking-ranked"), ("oracle", "ranking-oracle")):
        header, *body = parser.tables[table_id]
        assert header[:3] == ["rank (F1)", "rank (AUROC)", "detector"]
        expected = [entry for entry in ranking if entry["group"] == group]
        assert [row[2] for row in body] == [entry["detector"] for entry in expected]
        assert [row[0] for row in body] == [entry["rank_f1"] for entry in expected]
        for row, entry in zip(body, expected):
            assert row[5].split(" ± ")[0] == f"{float(entry['mean_f1']):.3f}"
    per_scenario = parser.tables["scenarios-f1"]
    assert per_scenario[0][1:] == SCENARIOS


def test_rerun_reads_cache(board, caplog):
    caplog.set_level("INFO")
    output_dir = board["folder"] / "again"
    assert main([*board["arguments"], "--output-dir", str(output_dir)]) == 0
    assert "0 stages computed" in caplog.text
    first = (board["output_dir"] / "leaderboard.csv").read_text()
    assert (output_dir / "leaderboard.csv").read_text() == first


# -- submissions --------------------------------------------------------------------------
def test_valid_submissions_ranked(board, tmp_path, capsys):
    """A metrics submission and a scores submission appear in the ranking with their values."""
    high = write_json(tmp_path / "high.json", metrics_submission("perfect-ish", 0.97))
    masks = poison_mask_reader(board["cache_dir"])
    suite = board["suite"]
    results = []
    for scenario in SCENARIOS:
        mask = masks(suite.scenario(scenario))
        # Scores that rank every poison first; two poisons flagged.
        flagged = [int(i) for i in np.flatnonzero(mask)[:2]]
        results.append(
            {"scenario": scenario, "scores": mask.astype(float).tolist(), "flagged": flagged}
        )
        n_poisons = int(mask.sum())
    scored = write_json(
        tmp_path / "scored.json",
        {
            "schema_version": 1,
            "suite": {"name": "tiny", "version": "0.1"},
            "detector": {"name": "mask-scores", "track": "oracle"},
            "results": results,
        },
    )
    output_dir = tmp_path / "board"
    arguments = [*board["arguments"], "--output-dir", str(output_dir)]
    assert main([*arguments, "--submission", str(high), "--submission", str(scored)]) == 0
    ranking = {entry["detector"]: entry for entry in read_csv(output_dir / "leaderboard.csv")}
    assert ranking["perfect-ish"]["rank_f1"] == "1"
    assert ranking["perfect-ish"]["group"] == "ranked"
    assert float(ranking["perfect-ish"]["mean_f1"]) == pytest.approx(0.97)
    assert ranking["perfect-ish"]["source"] == "submission high.json"
    scored_entry = ranking["mask-scores"]
    assert scored_entry["group"] == "oracle"
    assert float(scored_entry["mean_auroc"]) == pytest.approx(1.0)
    assert float(scored_entry["mean_precision"]) == pytest.approx(1.0)
    # 60 examples at 5% and 10%: 3 and 6 poisons, two of them flagged.
    assert n_poisons == 6
    expected_recall = np.mean([2 / 3, 2 / 3, 2 / 6, 2 / 6])
    assert float(scored_entry["mean_recall"]) == pytest.approx(expected_recall)
    assert "perfect-ish" in capsys.readouterr().out


def _bad(data: dict, path: list, value) -> dict:
    data = json.loads(json.dumps(data))
    node = data
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


GOOD = metrics_submission("mine", 0.5)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (_bad(GOOD, ["detector"], KeyError), "field <root>: 'detector' is a required property"),
        (_bad(GOOD, ["results", 1, "metrics", "f1"], 1.5), "field results[1].metrics.f1"),
        (_bad(GOOD, ["detector", "track"], "trigger"), "field detector.track"),
        (_bad(GOOD, ["schema_version"], 2), "field schema_version"),
        (_bad(GOOD, ["results", 0, "extra"], 1), "field results[0]"),
        (_bad(GOOD, ["suite", "version"], "1"), "field suite.version"),
    ],
)
def test_schema_invalid_submission(tmp_path, data, expected):
    path = write_json(tmp_path / "bad.json", data)
    with pytest.raises(InputError) as error:
        load_submission(path)
    assert str(error.value).startswith(f"{path}: {expected}")


def test_submission_not_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"schema_version": 1,\n  "suite": oops}')
    with pytest.raises(InputError, match=r"bad\.json:2:\d+: invalid JSON"):
        load_submission(path)
    path.write_text('{"schema_version": NaN}')
    with pytest.raises(InputError, match="NaN is not valid JSON"):
        load_submission(path)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (metrics_submission("mine", 0.5, version="0.2"), "field suite.version"),
        (_bad(GOOD, ["results", 2, "scenario"], "sst2-x"), "field results[2].scenario: unknown"),
        (_bad(GOOD, ["results", 3, "scenario"], SCENARIOS[0]), "field results[3].scenario: 'sst2"),
        (
            {**GOOD, "results": GOOD["results"][:3]},
            "field results: 1 scenarios of tiny v0.1 have no result",
        ),
        (
            {
                **GOOD,
                "results": [{"scenario": s, "scores": [0.0] * 5, "flagged": []} for s in SCENARIOS],
            },
            "field results[0].scores: 5 scores, but the scenario has 60 training examples",
        ),
        (
            {
                **GOOD,
                "results": [
                    {"scenario": s, "scores": [0.0] * 60, "flagged": [60]} for s in SCENARIOS
                ],
            },
            "field results[0].flagged[0]: index 60 is out of range",
        ),
        (_bad(GOOD, ["detector", "name"], "loss"), "field detector.name: 'loss' is already"),
    ],
)
def test_submission_rejected_against_suite(board, tmp_path, capsys, data, expected):
    path = write_json(tmp_path / "bad.json", data)
    arguments = [*board["arguments"], "--output-dir", str(tmp_path / "out")]
    assert main([*arguments, "--submission", str(path)]) == 2
    message = capsys.readouterr().err
    assert expected in message
    assert not (tmp_path / "out" / "leaderboard.csv").exists()


def test_plugin_detector_by_module_path(board, tmp_path, monkeypatch):
    (tmp_path / "plugmod.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    output_dir = tmp_path / "board"
    arguments = [*board["arguments"], "--output-dir", str(output_dir)]
    assert main([*arguments, "--detector", "length=plugmod:LengthDetector", "--only"]) == 0
    ranking = read_csv(output_dir / "leaderboard.csv")
    assert [entry["detector"] for entry in ranking] == ["length"]
    assert ranking[0]["source"] == "plugin"
    scenarios = read_csv(output_dir / "leaderboard_scenarios.csv")
    assert [row["scenario"] for row in scenarios] == SCENARIOS


def test_plugin_spec_errors(board, tmp_path, capsys):
    arguments = [*board["arguments"], "--output-dir", str(tmp_path / "out")]
    assert main([*arguments, "--detector", "no_such_module_xyz:Thing"]) == 2
    assert "cannot import module 'no_such_module_xyz'" in capsys.readouterr().err
    assert main([*arguments, "--detector", "lossy"]) == 2
    assert "not a registered detector" in capsys.readouterr().err


def test_rank_rejects_incomplete_records():
    records = pd.DataFrame(
        [
            {
                "scenario": "a",
                "detector": "x",
                "track": "blind",
                "source": "s",
                "precision": 1,
                "recall": 1,
                "f1": 1,
                "auroc": 1,
            },
        ]
    )
    with pytest.raises(ValueError, match="detector x has no result on 1 scenarios, e.g. b"):
        rank(records, ["a", "b"], "suite")


# -- paper reproduction -------------------------------------------------------------------
def test_reproduce_paper(board, tmp_path, capsys):
    output_dir = tmp_path / "paper"
    arguments = ["reproduce", "paper", "--config", str(board["suite_file"])]
    arguments += ["--cache-dir", str(board["cache_dir"]), "--output-dir", str(output_dir)]
    assert main(arguments) == 0
    report = (output_dir / "paper.md").read_text()
    for title in (
        "1. Transform ensembles",
        "2. One transform category",
        "3. Detectors",
        "4. Recovery",
    ):
        assert title in report
    ensembles = read_csv(output_dir / "tables" / "ensembles.csv")
    variance = ensembles[0]
    assert variance["our detector"] == "transform-variance"
    assert variance["F1 (published)"] == "0.795"
    assert ensembles[1]["F1 (published)"] == "0.952"
    combined = ensembles[3]
    assert combined["our detector"] == "transform-combined"
    assert combined["F1 (published)"] == "0.496"
    # Our F1 is the mean over the two seeds at the ratio nearest 3.3% (0.05 here).
    rows = pd.DataFrame(read_rows(output_dir / "runs" / "results.jsonl"))
    mine = rows[
        (rows["detector"] == "transform-variance")
        & rows["held_out_category"].isna()
        & (rows["attack.ratio"] == 0.05)
    ]
    assert variance["F1 (ours)"].split(" ± ")[0] == f"{mine['f1'].mean():.3f}"
    held_out = read_csv(output_dir / "tables" / "held_out.csv")
    assert [row["held-out category"] for row in held_out] == [
        "lexicon",
        "semantic",
        "structural",
        "none",
        "mean of the three",
    ]
    assert held_out[0]["F1 (published)"] == "0.820"
    recovery = read_csv(output_dir / "tables" / "recovery.csv")
    assert {row["ratio"] for row in recovery} == {"0.05", "0.1"}
    figures = {path.name for path in (output_dir / "figures").iterdir()}
    assert any(name.endswith(".png") for name in figures)
    assert any(name.endswith(".pdf") for name in figures)
    assert "Wrote" in capsys.readouterr().out
