"""Sweeps: validation, stage caching, resume after SIGKILL, aggregation, plots, CLI.

One tiny two-cell sweep (tiny-bert, 60 training examples, one epoch) is run once for the
module: a subprocess starts it and is killed with SIGKILL partway through the second cell,
then the sweep is resumed in this process. The other tests read its outputs and rerun it
from the cache.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.cli import main
from benchmark.errors import InputError
from benchmark.runner.cache import JSON, TORCH, StageCache
from benchmark.runner.experiment import Experiment
from benchmark.runner.queries import ORIGINAL
from benchmark.runner.sweep import STAGES_FOLDER, cell_rows_path, read_rows, run_sweep
from benchmark.runner.sweep_config import load_sweep, parse_set_options

REPO_ROOT = Path(__file__).resolve().parents[1]

STAGES = ("poisoned", "model", "attack_metrics", "queries", "influence", "detection", "recovery")
TRANSFORMS = ["prefix_negation", "paraphrase", "grammatical_negation"]
ENSEMBLES = {"transform-variance", "transform-voting-majority"}
CATEGORY_OF = {
    "prefix_negation": "lexicon",
    "paraphrase": "semantic",
    "grammatical_negation": "structural",
}

TINY_SWEEP = """
base:
  model: tiny-bert
  data: {{n_train: 60, n_test: 40, data_dir: {data_dir}}}
  training: {{epochs: 1, max_length: 32, learning_rate: 0.001}}
  queries: {{n_queries: 4}}
  influence: {{tracked_modules: [classifier]}}
  recovery_detectors: [loss]
axes:
  datasets: [sst2]
  attacks: [ner-dirty]
  ratios: [0.05]
  seeds: [0, 1]
  detectors: [transform-variance, transform-voting-majority, loss, random]
  transform_sets:
    three: [prefix_negation, paraphrase, grammatical_negation]
  holdout: [lexicon, semantic, structural]
"""
ROWS_PER_CELL = 4 + 3 * len(ENSEMBLES)


@contextmanager
def captured_messages():
    """Collect every INFO-and-above log message of this process while the block runs."""
    messages: list[str] = []

    class ListHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    root = logging.getLogger()
    handler = ListHandler(level=logging.INFO)
    saved_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield messages
    finally:
        root.removeHandler(handler)
        root.setLevel(saved_level)


def entry_files(cache_dir: Path) -> dict[Path, int]:
    """Final (non-temporary) cache entries and their modification times in nanoseconds."""
    root = cache_dir / STAGES_FOLDER
    return {
        path: path.stat().st_mtime_ns
        for path in root.glob("*/*")
        if path.is_file() and not path.name.startswith(".")
    }


def wait_for(path: Path, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(
                f"sweep exited with {process.returncode} before {path} existed:\n"
                + log.read_text()[-4000:]
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory, shared_data):
    """Run the tiny sweep in a subprocess, SIGKILL it mid-way, and resume it here."""
    folder = tmp_path_factory.mktemp("sweep")
    sweep_file = folder / "tiny.yaml"
    sweep_file.write_text(TINY_SWEEP.format(data_dir=json.dumps(str(shared_data))))
    cache_dir, output_dir = folder / "cache", folder / "out"
    sweep = load_sweep(sweep_file)
    first, second = sweep.cells
    read_only = StageCache(cache_dir / STAGES_FOLDER, read_only=True)
    second_stages = Experiment(second.config, cache_dir, read_only)
    second_model = read_only.path("model", second_stages.model_key, TORCH)

    log = folder / "killed.log"
    command = [sys.executable, "-m", "benchmark.cli", "sweep", str(sweep_file)]
    command += ["--cache-dir", str(cache_dir), "--output-dir", str(output_dir)]
    with log.open("w") as log_handle:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=log_handle, stderr=log_handle, start_new_session=True
        )
        try:
            # The second cell has trained its model: poisoned data and weights are cached.
            wait_for(second_model, process, log, timeout=300)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    first_done_before_kill = cell_rows_path(output_dir, first).is_file()

    # A write cut short by the kill: only a temporary file, holding a partial entry.
    metrics_path = read_only.path("attack_metrics", second_stages.attack_metrics_key, JSON)
    metrics_path.unlink(missing_ok=True)
    planted_temporary = metrics_path.with_name(f".{metrics_path.name}.x1y2z3.tmp")
    planted_temporary.write_text('{"clean_accuracy": 0.123456, "attack_success')
    # An entry damaged outside the cache's own writes.
    damaged_path = read_only.path("queries", second_stages.query_key(ORIGINAL), JSON)
    damaged_path.parent.mkdir(parents=True, exist_ok=True)
    damaged_path.write_text("not json")
    before_resume = entry_files(cache_dir)

    with captured_messages() as messages:
        summary = run_sweep(sweep, cache_dir, output_dir, jobs=1, progress=False)
    return {
        "sweep": sweep,
        "sweep_file": sweep_file,
        "cache_dir": cache_dir,
        "output_dir": output_dir,
        "summary": summary,
        "messages": messages,
        "first_done_before_kill": first_done_before_kill,
        "before_resume": before_resume,
        "planted": (metrics_path, planted_temporary, second_stages.attack_metrics_key),
        "damaged": (damaged_path, second_stages.query_key(ORIGINAL)),
        "second_keys": (second_stages.poisoned_key, second_stages.model_key),
    }


# -- validation ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("axis:\n  ratios: [0.1]\n", "unknown key axis"),
        ("base:\n  attack:\n    trigger_phrase: x\n", "unknown key base.attack.trigger_phrase"),
        ("axes:\n  ratio: [0.1]\n", "unknown key axes.ratio"),
        ("base:\n  data:\n    n_train: many\n", "key base.data.n_train must be an integer"),
        ("axes:\n  seeds: [0, one]\n", "key axes.seeds[1] must be an integer"),
        ("axes:\n  ratios: 0.1\n", "key axes.ratios must be a list"),
        ("axes:\n  ratios: [0.1, 1.5]\n", "ratios[1] must lie in (0, 1)"),
        ("axes:\n  holdout: [syntax]\n", "key axes.holdout[0]: unknown transform category"),
        ("axes:\n  attacks: [ner-typo]\n", "key axes.attacks[0]: unknown attack"),
        ("axes:\n  detectors: [lossy]\n", "key axes.detectors[0]: unknown detector"),
        (
            "axes:\n  transform_sets:\n    mine: [paraphrase, rot13]\n",
            "key axes.transform_sets.mine[1]: unknown transform 'rot13'",
        ),
        (
            "axes:\n  transform_sets:\n    mine: paraphrase\n",
            "key axes.transform_sets.mine must be a non-empty list",
        ),
        (
            "axes:\n  detectors: [loss]\n  holdout: [lexicon]\n",
            "key axes.holdout needs a transform-ensemble detector",
        ),
    ],
)
def test_sweep_file_rejected(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        load_sweep(path)
    assert expected in str(caught.value)
    assert str(caught.value).startswith(str(path))


def test_set_override_narrows_axis(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("axes:\n  ratios: [0.01, 0.05]\n  seeds: [0, 1, 2]\n")
    options = ["attack.ratio=0.2", "axes.seeds=[4, 5]", "training.epochs=2"]
    sweep = load_sweep(path, parse_set_options(options))
    assert [cell.config.attack.ratio for cell in sweep.cells] == [0.2, 0.2]
    assert [cell.config.seed for cell in sweep.cells] == [4, 5]
    assert [cell.config.training.seed for cell in sweep.cells] == [4, 5]
    assert {cell.config.training.epochs for cell in sweep.cells} == {2}


def test_set_override_wrong_type(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text("axes:\n  seeds: [0]\n")
    code = main(["sweep", str(path), "--list-cells", "--set", "training.epochs=many"])
    err = capsys.readouterr().err
    assert code == 2
    assert "key base.training.epochs must be an integer" in err
    assert f"{path} (with flags)" in err


def test_set_option_without_value():
    with pytest.raises(InputError, match="expected KEY=VALUE"):
        parse_set_options(["attack.ratio"])


def test_list_cells(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text("axes:\n  ratios: [0.01, 0.05]\n  seeds: [0, 1]\n")
    assert main(["sweep", str(path), "--list-cells", "--seeds", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[1] for line in lines[2:]]
    assert names == ["sst2-ner-dirty-base-ratio0.01-seed3", "sst2-ner-dirty-base-ratio0.05-seed3"]


def test_ratios_config_cells():
    sweep = load_sweep(REPO_ROOT / "configs" / "ratios.yaml")
    from benchmark.runner.config import DEFAULT_DETECTORS

    assert len(sweep.cells) == 12
    assert sorted({cell.config.attack.ratio for cell in sweep.cells}) == [0.01, 0.03, 0.05, 0.1]
    assert sorted({cell.config.seed for cell in sweep.cells}) == [0, 1, 2]
    assert {cell.config.model for cell in sweep.cells} == {"minilm"}
    assert {cell.config.attack.name for cell in sweep.cells} == {"ner-dirty"}
    # Every default detector plus the combined ensemble, which reads per-query influence.
    for cell in sweep.cells:
        assert set(cell.config.detectors) == {*DEFAULT_DETECTORS, "transform-combined"}
        assert len(cell.config.detectors) == len(DEFAULT_DETECTORS) + 1


def test_run_cell_unknown_id(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text("axes:\n  seeds: [0, 1]\n")
    code = main(["run-cell", "--sweep", str(path), "--cell", "7"])
    assert code == 2
    assert "cell 7 does not exist" in capsys.readouterr().err


# -- the tiny sweep -----------------------------------------------------------------------
def test_resume_after_kill(tiny_sweep):
    summary = tiny_sweep["summary"]
    messages = tiny_sweep["messages"]
    assert tiny_sweep["first_done_before_kill"]
    assert summary.failures == []
    assert [outcome.index for outcome in summary.outcomes] == [0, 1]
    first, second = summary.outcomes
    assert first.from_cache
    assert not second.from_cache
    poisoned_key, model_key = tiny_sweep["second_keys"]
    assert f"cache hit: stage poisoned, key {poisoned_key}" in messages
    assert f"cache hit: stage model, key {model_key}" in messages
    assert summary.line().startswith("2 cells, 1 from cache, 1 computed")


def test_resume_ignores_partial_files(tiny_sweep):
    messages = tiny_sweep["messages"]
    metrics_path, planted_temporary, metrics_key = tiny_sweep["planted"]
    assert f"cache hit: stage attack_metrics, key {metrics_key}" not in messages
    assert f"cache store: stage attack_metrics, key {metrics_key}" in messages
    stored = json.loads(metrics_path.read_text())
    assert stored["clean_accuracy"] != 0.123456
    assert planted_temporary.read_text().startswith('{"clean_accuracy": 0.123456')

    damaged_path, damaged_key = tiny_sweep["damaged"]
    assert any("unreadable" in message and str(damaged_path) in message for message in messages)
    assert f"cache store: stage queries, key {damaged_key}" in messages
    assert json.loads(damaged_path.read_text())["name"] == ORIGINAL


def test_resume_keeps_finished_entries(tiny_sweep):
    before = tiny_sweep["before_resume"]
    after = entry_files(tiny_sweep["cache_dir"])
    damaged_path, _ = tiny_sweep["damaged"]
    rewritten = sorted(str(path) for path, mtime in before.items() if after[path] != mtime)
    assert rewritten == [str(damaged_path)]
    assert len(after) > len(before)


def test_outputs_written(tiny_sweep):
    output_dir = tiny_sweep["output_dir"]
    rows = read_rows(output_dir / "results.jsonl")
    assert len(rows) == 2 * ROWS_PER_CELL
    assert [row["cell"] for row in rows] == [0] * ROWS_PER_CELL + [1] * ROWS_PER_CELL
    for name in ("detection", "held_out", "recovery"):
        assert (output_dir / "tables" / f"{name}.md").read_text().startswith("# ")
        assert (output_dir / "tables" / f"{name}.csv").is_file()
    for stem in ("f1_vs_ratio", "recovery_vs_ratio", "influence_cell0"):
        png = (output_dir / "plots" / f"{stem}.png").read_bytes()
        pdf = (output_dir / "plots" / f"{stem}.pdf").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n"), stem
        assert pdf.startswith(b"%PDF"), stem
    assert not list(output_dir.rglob("*.tmp"))


def test_rows_carry_config(tiny_sweep):
    rows = read_rows(tiny_sweep["output_dir"] / "results.jsonl")
    for row in rows:
        assert row["model"] == "tiny-bert"
        assert row["data.n_train"] == 60
        assert row["attack.ratio"] == 0.05
        assert row["training.seed"] == row["seed"]
        assert row["queries.transforms"] == TRANSFORMS
        assert row["transform_set"] == "three"
        assert 0.0 <= row["f1"] <= 1.0
    loss_rows = [row for row in rows if row["detector"] == "loss"]
    assert all(row["asr_after"] is not None for row in loss_rows)
    assert all(row["asr_after"] is None for row in rows if row["detector"] != "loss")


def test_holdout_rows_carry_category(tiny_sweep):
    rows = read_rows(tiny_sweep["output_dir"] / "results.jsonl")
    held_out = [row for row in rows if row["held_out_category"] is not None]
    assert len(held_out) == 2 * 3 * len(ENSEMBLES)
    assert {row["detector"] for row in held_out} == ENSEMBLES
    assert {row["held_out_category"] for row in held_out} == {"lexicon", "semantic", "structural"}
    for row in held_out:
        expected = [t for t in TRANSFORMS if CATEGORY_OF[t] != row["held_out_category"]]
        assert row["kept_transforms"] == expected


def test_second_run_all_cache_hits(tiny_sweep, caplog):
    caplog.set_level(logging.INFO)
    summary = run_sweep(
        tiny_sweep["sweep"], tiny_sweep["cache_dir"], tiny_sweep["output_dir"], progress=False
    )
    assert summary.n_from_cache == 2
    assert summary.counts.total_computed == 0
    assert set(summary.counts.hits) == set(STAGES)
    for stage in STAGES:
        assert f"cache hit: stage {stage}," in caplog.text, stage
    assert "cache miss" not in caplog.text
    assert summary.line().startswith("2 cells, 2 from cache, 0 computed")


def test_worker_processes_read_cache(tiny_sweep, tmp_path):
    summary = run_sweep(
        tiny_sweep["sweep"], tiny_sweep["cache_dir"], tmp_path / "out", jobs=2, progress=False
    )
    assert summary.failures == []
    assert summary.n_from_cache == 2
    rows = read_rows(tmp_path / "out" / "results.jsonl")
    assert rows == read_rows(tiny_sweep["output_dir"] / "results.jsonl")


def test_run_cell_from_cache(tiny_sweep, tmp_path, capsys):
    arguments = ["run-cell", "--sweep", str(tiny_sweep["sweep_file"]), "--cell", "1"]
    arguments += ["--cache-dir", str(tiny_sweep["cache_dir"]), "--output-dir", str(tmp_path)]
    assert main(arguments) == 0
    assert "every stage from cache" in capsys.readouterr().out
    cell = tiny_sweep["sweep"].cells[1]
    assert len(read_rows(cell_rows_path(tmp_path, cell))) == ROWS_PER_CELL


def test_aggregate_only_merges_present_rows(tiny_sweep, tmp_path, capsys):
    sweep = tiny_sweep["sweep"]
    first_rows = cell_rows_path(tiny_sweep["output_dir"], sweep.cells[0])
    copied = cell_rows_path(tmp_path, sweep.cells[0])
    copied.parent.mkdir(parents=True)
    copied.write_bytes(first_rows.read_bytes())
    arguments = ["sweep", str(tiny_sweep["sweep_file"]), "--aggregate-only"]
    arguments += ["--cache-dir", str(tiny_sweep["cache_dir"]), "--output-dir", str(tmp_path)]
    assert main(arguments) == 0
    assert "aggregated the rows of 1 of 2 cells" in capsys.readouterr().out
    rows = read_rows(tmp_path / "results.jsonl")
    assert {row["cell"] for row in rows} == {0}
    assert (tmp_path / "tables" / "detection.csv").is_file()
    assert (tmp_path / "plots" / "influence_cell0.png").is_file()


def assert_matches(table: pd.DataFrame, expected: pd.DataFrame, keys: list[str]) -> None:
    merged = table.merge(expected, on=keys, suffixes=("", "_expected"), validate="one_to_one")
    assert len(merged) == len(expected) == len(table)
    for column in expected.columns:
        if column in keys:
            continue
        assert np.allclose(merged[column], merged[f"{column}_expected"], equal_nan=True), column


def expected_mean_std(frame: pd.DataFrame, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    table = frame.groupby(keys)[metrics].agg(["mean", "std"])
    table.columns = [f"{metric}_{statistic}" for metric, statistic in table.columns]
    return table.reset_index()


def test_aggregates_match_pandas(tiny_sweep):
    output_dir = tiny_sweep["output_dir"]
    frame = pd.DataFrame(read_rows(output_dir / "results.jsonl"))
    tables = output_dir / "tables"

    full = frame[frame["held_out_category"].isna()]
    detection = pd.read_csv(tables / "detection.csv")
    keys = ["detector", "attack.ratio"]
    assert_matches(detection, expected_mean_std(full, keys, ["precision", "recall", "f1"]), keys)
    assert set(detection["n_seeds"]) == {2}

    held_out = pd.read_csv(tables / "held_out.csv")
    with_category = frame[frame["held_out_category"].notna()]
    keys = ["detector", "held_out_category", "attack.ratio"]
    expected = expected_mean_std(with_category, keys, ["f1"])
    assert_matches(held_out[held_out["held_out_category"] != "none"], expected, keys)
    no_holdout = full[full["detector"].isin(ENSEMBLES)]
    keys = ["detector", "attack.ratio"]
    expected = expected_mean_std(no_holdout, keys, ["f1"])
    assert_matches(held_out[held_out["held_out_category"] == "none"], expected, keys)

    recovery = pd.read_csv(tables / "recovery.csv")
    metrics = ["clean_accuracy_before", "asr_before", "clean_accuracy_after", "asr_after"]
    expected = expected_mean_std(full[full["n_removed"].notna()], keys, metrics)
    assert_matches(recovery[keys + [c for c in expected.columns if c not in keys]], expected, keys)
