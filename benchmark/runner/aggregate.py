"""Aggregate sweep rows over seeds into Markdown and CSV tables (mean and standard deviation).

Standard deviations are pandas' sample standard deviation (``ddof=1``), so a group with a
single seed has an undefined (NaN) one. CSV files keep full float precision; Markdown
shows three decimals as ``mean ± std``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from benchmark.atomic import write_text_atomic

logger = logging.getLogger(__name__)

CONTEXT_KEYS = ["data.dataset", "attack.name", "model", "transform_set"]
"""Columns that stay fixed within one table section (one value each in most sweeps)."""

DETECTION_METRICS = ("precision", "recall", "f1")
HELD_OUT_METRICS = ("f1",)
RECOVERY_METRICS = (
    "clean_accuracy_before",
    "asr_before",
    "clean_accuracy_after",
    "asr_after",
    "n_removed",
    "n_poisons_removed",
)
NO_HOLDOUT = "none"
"""``held_out_category`` of the full ensemble (every category kept) in the held-out table."""

RATIO = "attack.ratio"


def mean_std(frame: pd.DataFrame, keys: list[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Return one row per group of ``keys``: ``METRIC_mean``, ``METRIC_std`` and ``n_seeds``."""
    grouped = frame.groupby(keys, sort=False, dropna=False)
    table = grouped[list(metrics)].agg(["mean", "std"])
    table.columns = [f"{metric}_{statistic}" for metric, statistic in table.columns]
    table["n_seeds"] = grouped["seed"].nunique()
    # A stable sort by ratio keeps the detectors in the order of the rows (config order).
    return table.reset_index().sort_values(CONTEXT_KEYS + [RATIO], kind="stable")


def detection_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Precision, recall and F1 by detector and poison ratio, every category kept."""
    full = frame[frame["held_out_category"].isna()]
    return mean_std(full, CONTEXT_KEYS + ["detector", "track", RATIO], DETECTION_METRICS)


def held_out_table(frame: pd.DataFrame) -> pd.DataFrame:
    """F1 of the transform ensembles with each category held out, and with none held out."""
    held_out = frame[frame["held_out_category"].notna()]
    if held_out.empty:
        return pd.DataFrame()
    ensembles = set(held_out["detector"])
    rows = frame[frame["detector"].isin(ensembles)].copy()
    rows["held_out_category"] = rows["held_out_category"].fillna(NO_HOLDOUT)
    return mean_std(rows, CONTEXT_KEYS + ["detector", "held_out_category", RATIO], HELD_OUT_METRICS)


def recovery_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Clean accuracy and ASR before and after removing each recovery detector's flags."""
    rows = frame[frame["held_out_category"].isna() & frame["n_removed"].notna()]
    if rows.empty:
        return pd.DataFrame()
    return mean_std(rows, CONTEXT_KEYS + ["detector", RATIO], RECOVERY_METRICS)


def format_mean_std(mean: float, std: float) -> str:
    if mean is None or math.isnan(mean):
        return "n/a"
    if std is None or math.isnan(std):
        return f"{mean:.3f}"
    return f"{mean:.3f} ± {std:.3f}"


def _sections(table: pd.DataFrame):
    """Yield (heading, rows) for each combination of the context columns."""
    for values, rows in table.groupby(CONTEXT_KEYS, sort=False, dropna=False):
        heading = ", ".join(f"{key} = {value}" for key, value in zip(CONTEXT_KEYS, values))
        yield heading, rows


def _pivot_markdown(
    rows: pd.DataFrame,
    row_keys: list[tuple[str, str]],
    column_key: str,
    column_title: str,
    metric: str,
) -> str:
    """Tabulate ``metric`` as mean ± std, one row per ``row_keys``, one column per value.

    ``row_keys`` pairs each key column with its header; ``column_title`` is a format
    string for the header of each value of ``column_key``.
    """
    cells = rows.assign(
        value=[
            format_mean_std(mean, std)
            for mean, std in zip(rows[f"{metric}_mean"], rows[f"{metric}_std"])
        ]
    )
    columns = list(dict.fromkeys(cells[column_key]))
    keys = [key for key, _ in row_keys]
    body = []
    for key_values, group in cells.groupby(keys, sort=False):
        by_column = dict(zip(group[column_key], group["value"]))
        body.append([*key_values, *(by_column.get(column, "") for column in columns)])
    headers = [title for _, title in row_keys]
    headers += [column_title.format(column) for column in columns]
    return tabulate(body, headers=headers, tablefmt="github")


def detection_markdown(table: pd.DataFrame) -> str:
    lines = ["# Detection by poison ratio", "", "Mean ± standard deviation over seeds.", ""]
    for heading, rows in _sections(table):
        lines += [f"## {heading}", ""]
        for metric, title in (("precision", "Precision"), ("recall", "Recall"), ("f1", "F1")):
            table_text = _pivot_markdown(
                rows, [("detector", "detector"), ("track", "track")], RATIO, "ratio {}", metric
            )
            lines += [f"### {title}", "", table_text, ""]
    return "\n".join(lines)


def held_out_markdown(table: pd.DataFrame) -> str:
    lines = [
        "# Transform ensembles with one transform category held out",
        "",
        "F1, mean ± standard deviation over seeds. Column `held out: none` keeps every category.",
        "",
    ]
    for heading, rows in _sections(table):
        lines += [f"## {heading}", ""]
        table_text = _pivot_markdown(
            rows,
            [("detector", "detector"), (RATIO, "ratio")],
            "held_out_category",
            "held out: {}",
            "f1",
        )
        lines += [table_text, ""]
    return "\n".join(lines)


def recovery_markdown(table: pd.DataFrame) -> str:
    lines = [
        "# Recovery after removing flagged examples",
        "",
        "Clean accuracy and attack success rate (ASR) of the model retrained without each "
        "detector's flagged examples; mean ± standard deviation over seeds.",
        "",
    ]
    columns = [
        ("clean_accuracy_before", "clean acc. before"),
        ("clean_accuracy_after", "clean acc. after"),
        ("asr_before", "ASR before"),
        ("asr_after", "ASR after"),
        ("n_removed", "removed"),
        ("n_poisons_removed", "poisons removed"),
    ]
    for heading, rows in _sections(table):
        body = [
            [row["detector"], row[RATIO]]
            + [format_mean_std(row[f"{key}_mean"], row[f"{key}_std"]) for key, _ in columns]
            for _, row in rows.iterrows()
        ]
        headers = ["detector", "ratio", *(title for _, title in columns)]
        lines += [f"## {heading}", "", tabulate(body, headers=headers, tablefmt="github"), ""]
    return "\n".join(lines)


def write_tables(rows: list[dict[str, Any]], folder: str | Path) -> list[Path]:
    """Write detection, held-out and recovery tables as Markdown and CSV; return the paths.

    A table without rows (no holdout categories, no recovery detectors) is not written.
    """
    folder = Path(folder)
    frame = pd.DataFrame(rows)
    tables = [
        ("detection", detection_table(frame), detection_markdown),
        ("held_out", held_out_table(frame), held_out_markdown),
        ("recovery", recovery_table(frame), recovery_markdown),
    ]
    written = []
    for name, table, to_markdown in tables:
        if table.empty:
            logger.info("No rows for the %s table; it is not written", name)
            continue
        csv_path = folder / f"{name}.csv"
        markdown_path = folder / f"{name}.md"
        write_text_atomic(csv_path, table.to_csv(index=False))
        write_text_atomic(markdown_path, to_markdown(table))
        written += [markdown_path, csv_path]
    return written
