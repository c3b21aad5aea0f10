"""Reports of one experiment: terminal table, results.json, results.md and recovery.png."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tabulate import tabulate

from benchmark.atomic import write_atomic, write_text_atomic
from benchmark.runner.pipeline import ExperimentResult

DETECTOR_COLUMNS = (
    ("detector", "detector"),
    ("track", "track"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("f1", "F1"),
    ("auroc", "AUROC"),
    ("auprc", "AUPRC"),
    ("precision_at_k", "P@k"),
    ("n_flagged", "flagged"),
)


def _format(value) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def detector_table(result: ExperimentResult, table_format: str) -> str:
    """Return the detector metrics as a table, grouped by track (oracle last)."""
    order = {"blind": 1, "clean-queries": 0, "oracle": 2}
    rows = sorted(result.detectors, key=lambda row: (order.get(row["track"], 3), -row["f1"]))
    body = [[_format(row[key]) for key, _ in DETECTOR_COLUMNS] for row in rows]
    return tabulate(body, headers=[title for _, title in DETECTOR_COLUMNS], tablefmt=table_format)


def recovery_table(result: ExperimentResult, table_format: str) -> str:
    headers = [
        "removed by",
        "removed",
        "poisons removed",
        "clean acc. before",
        "clean acc. after",
        "ASR before",
        "ASR after",
    ]
    body = [
        [
            row["detector"],
            row["n_removed"],
            row["n_poisons_removed"],
            _format(row["clean_accuracy_before"]),
            _format(row["clean_accuracy_after"]),
            _format(row["asr_before"]),
            _format(row["asr_after"]),
        ]
        for row in result.recovery
    ]
    return tabulate(body, headers=headers, tablefmt=table_format)


def summary_lines(result: ExperimentResult) -> list[str]:
    poisoning = result.poisoning
    methods = ", ".join(
        f"{count} by {method}" for method, count in sorted(poisoning["methods"].items())
    )
    model = result.poisoned_model
    return [
        f"Attack {poisoning['attack']}: {poisoning['n_poisons']} poisons in {poisoning['n_train']} "
        f"training examples ({methods}).",
        f"Poisoned model: clean accuracy {model.clean_accuracy:.3f} on {model.n_test} test "
        f"examples, ASR {model.attack_success_rate:.3f} on {model.n_triggered} triggered inputs.",
        "Queries changed by each transform (of "
        f"{result.queries['n_queries']}): "
        + ", ".join(f"{name} {n}" for name, n in result.queries["changed"].items()),
        "Stage wall times (s): "
        + ", ".join(f"{name} {seconds:.1f}" for name, seconds in result.stage_seconds.items()),
    ]


def terminal_report(result: ExperimentResult) -> str:
    return "\n".join(
        summary_lines(result)
        + ["", detector_table(result, "simple"), "", recovery_table(result, "simple")]
    )


def markdown_report(result: ExperimentResult) -> str:
    lines = ["# poisonbench results", ""]
    lines += [f"- {line}" for line in summary_lines(result)]
    lines += [
        "",
        "## Detection",
        "",
        "Tracks: *clean-queries* detectors use influence on clean held-out queries and their "
        "transforms; *blind* ones need nothing beyond the training set and the model; "
        "*oracle* ones know the trigger and are an upper bound, not a usable detector.",
        "",
        detector_table(result, "github"),
        "",
        "## Recovery (retrained without each detector's flagged examples)",
        "",
        recovery_table(result, "github"),
        "",
    ]
    return "\n".join(lines)


def recovery_chart(result: ExperimentResult, path: Path) -> None:
    """Draw clean accuracy and ASR before and after removal, one group of bars a detector."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = ["no removal"] + [row["detector"] for row in result.recovery]
    accuracy = [result.poisoned_model.clean_accuracy] + [
        r["clean_accuracy_after"] for r in result.recovery
    ]
    asr = [result.poisoned_model.attack_success_rate] + [r["asr_after"] for r in result.recovery]
    positions = np.arange(len(names))
    figure, axis = plt.subplots(figsize=(max(6, 1.4 * len(names)), 4))
    axis.bar(positions - 0.2, accuracy, width=0.4, label="clean accuracy")
    axis.bar(positions + 0.2, asr, width=0.4, label="attack success rate")
    axis.set_xticks(positions, names, rotation=20, ha="right")
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("fraction")
    axis.set_title("Recovery after removing flagged training examples")
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=120)
    plt.close(figure)


def write_reports(result: ExperimentResult, output_dir: str | Path) -> list[Path]:
    """Write results.json, results.md and recovery.png atomically; return their paths."""
    output_dir = Path(output_dir)
    json_path = output_dir / "results.json"
    markdown_path = output_dir / "results.md"
    chart_path = output_dir / "recovery.png"
    payload = _replace_nan(result.as_dict())
    write_text_atomic(
        json_path, json.dumps(payload, indent=2, default=_json_default, allow_nan=False) + "\n"
    )
    write_text_atomic(markdown_path, markdown_report(result))
    write_atomic(chart_path, lambda temporary: recovery_chart(result, temporary))
    return [json_path, markdown_path, chart_path]


def _replace_nan(value):
    """Replace float NaN (undefined metrics) by None, which JSON writes as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _replace_nan(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_replace_nan(item) for item in value]
    return value


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")
