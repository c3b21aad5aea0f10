"""The whole pipeline through the CLI on a small configuration with the real MiniLM."""

from __future__ import annotations

import json

import pytest

from benchmark.cli import main
from benchmark.runner.config import DEFAULT_DETECTORS

SMALL_CONFIG = """
data:
  n_train: 200
  n_test: 200
attack:
  ratio: 0.05
training:
  epochs: 3
  max_length: 48
  learning_rate: 0.0002
queries:
  n_queries: 16
influence:
  tracked_modules: ["layer\\\\.5\\\\.", "classifier"]
recovery_detectors: [oracle-triggered-influence, transform-variance]
"""


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("pipeline")
    config = folder / "small.yaml"
    config.write_text(SMALL_CONFIG)
    output_dir = folder / "out"
    code = main(
        [
            "run",
            "--config",
            str(config),
            "--data-dir",
            str(shared_data),
            "--output-dir",
            str(output_dir),
            "--cache-dir",
            str(folder / "cache"),
        ]
    )
    assert code == 0
    return output_dir, json.loads((output_dir / "results.json").read_text())


def test_outputs_written(small_run):
    output_dir, _ = small_run
    assert sorted(p.name for p in output_dir.iterdir()) == [
        "recovery.png",
        "results.json",
        "results.md",
    ]
    assert (output_dir / "recovery.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (output_dir / "results.md").read_text()
    for name in DEFAULT_DETECTORS:
        assert f"| {name}" in markdown


def test_attack_took_effect(small_run):
    _, results = small_run
    assert results["poisoning"]["n_poisons"] == 10
    assert sum(results["poisoning"]["methods"].values()) == 10
    model = results["poisoned_model"]
    assert model["clean_accuracy"] > 0.6
    assert model["attack_success_rate"] > 0.8
    assert model["n_test"] == 200


def test_every_detector_scored(small_run):
    _, results = small_run
    rows = {row["detector"]: row for row in results["detectors"]}
    assert set(rows) == set(DEFAULT_DETECTORS)
    for name, row in rows.items():
        for key in ("precision", "recall", "f1", "auroc", "auprc", "precision_at_k"):
            assert 0.0 <= row[key] <= 1.0, (name, key)
        assert row["n_true_positives"] <= row["n_flagged"] <= 200
    assert rows["oracle-triggered-influence"]["track"] == "oracle"
    assert rows["transform-voting"]["track"] == "clean-queries"
    # 10 poisons among 200: random scores stay within 3 standard deviations of 0.5.
    assert 0.23 <= rows["random"]["auroc"] <= 0.77
    # The trigger oracle ranks the dirty-label poisons almost perfectly.
    assert rows["oracle-triggered-influence"]["auroc"] > 0.9


def test_transforms_changed_queries(small_run):
    _, results = small_run
    changed = results["queries"]["changed"]
    assert set(changed) == {
        "prefix_negation",
        "antonym_substitution",
        "paraphrase",
        "question_negation",
        "grammatical_negation",
        "clause_reordering",
    }
    assert changed["prefix_negation"] == 16


def test_recovery_rows_consistent(small_run):
    _, results = small_run
    rows = {row["detector"]: row for row in results["recovery"]}
    detectors = {row["detector"]: row for row in results["detectors"]}
    for name, row in rows.items():
        assert row["n_removed"] == detectors[name]["n_flagged"]
        assert row["n_poisons_removed"] == detectors[name]["n_true_positives"]
        assert row["asr_before"] == results["poisoned_model"]["attack_success_rate"]
    oracle = rows["oracle-triggered-influence"]
    if oracle["n_poisons_removed"] == 10:
        # A weak 200-example model still calls some triggered negatives positive without
        # any poison, so the check is a clear drop rather than an absolute level.
        assert oracle["asr_after"] < oracle["asr_before"] - 0.2


def test_stage_times_recorded(small_run):
    _, results = small_run
    stages = results["stage_seconds"]
    for stage in (
        "data",
        "attack",
        "fine-tuning",
        "influence factors",
        "influence scores",
        "detection",
        "recovery",
    ):
        assert stages[stage] >= 0.0, stage
