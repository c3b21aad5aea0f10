"""Plots of a sweep: F1 and recovery against the poison ratio, and influence distributions.

Each plot is written as PNG and PDF with matplotlib's Agg backend. The influence plot shows
one cell's cached scores before and after each transform, for poisons and clean examples.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.atomic import write_atomic
from benchmark.runner.aggregate import CONTEXT_KEYS, RATIO, detection_table, recovery_table
from benchmark.runner.cache import CacheMissError, StageCache
from benchmark.runner.sweep_config import Cell

logger = logging.getLogger(__name__)

TRACK_LINE_STYLES = {"clean-queries": "-", "blind": "--", "oracle": ":"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, stem: Path) -> list[Path]:
    """Write ``STEM.png`` and ``STEM.pdf`` atomically, close the figure, return both paths."""
    paths = []
    for file_format in ("png", "pdf"):
        path = stem.with_name(f"{stem.name}.{file_format}")
        write_atomic(
            path,
            lambda temporary, file_format=file_format: figure.savefig(
                temporary, format=file_format, dpi=120, bbox_inches="tight"
            ),
        )
        paths.append(path)
    _pyplot().close(figure)
    return paths


def _section_title(values: tuple) -> str:
    return ", ".join(str(value) for value in values)


def plot_f1_against_ratio(table: pd.DataFrame, stem: Path) -> list[Path]:
    """Plot F1 (mean, with ± one standard deviation bars) against the ratio per detector."""
    plt = _pyplot()
    sections = list(table.groupby(CONTEXT_KEYS, sort=False))
    figure, axes = plt.subplots(1, len(sections), figsize=(7 * len(sections), 4.5), squeeze=False)
    colors = plt.get_cmap("tab20")
    for axis, (values, rows) in zip(axes[0], sections):
        for index, (detector, group) in enumerate(rows.groupby("detector", sort=False)):
            axis.errorbar(
                group[RATIO],
                group["f1_mean"],
                yerr=group["f1_std"].fillna(0.0),
                label=detector,
                color=colors(index % 20),
                linestyle=TRACK_LINE_STYLES.get(group["track"].iloc[0], "-"),
                marker="o",
                capsize=3,
            )
        axis.set_xticks(sorted(rows[RATIO].unique()))
        axis.set_xlabel("poison ratio")
        axis.set_ylabel("F1 of the flagged set")
        axis.set_ylim(-0.02, 1.02)
        axis.set_title(_section_title(values))
    axes[0][-1].legend(
        loc="center left",
        bbox_to_anchor=(1.02, 0.5),
        fontsize="small",
        title="solid: clean queries, dashed: blind, dotted: oracle",
        title_fontsize="small",
    )
    figure.suptitle("Detection F1 against poison ratio (mean ± std over seeds)")
    return save_figure(figure, stem)


def plot_recovery_against_ratio(table: pd.DataFrame, stem: Path) -> list[Path]:
    """Plot ASR and clean accuracy after removal against the ratio, with no removal as base."""
    plt = _pyplot()
    sections = list(table.groupby(CONTEXT_KEYS, sort=False))
    figure, axes = plt.subplots(len(sections), 2, figsize=(12, 4.2 * len(sections)), squeeze=False)
    for row_axes, (values, rows) in zip(axes, sections):
        panels = (("asr", "attack success rate"), ("clean_accuracy", "clean accuracy"))
        for axis, (metric, label) in zip(row_axes, panels):
            before = rows.groupby(RATIO, sort=True)[f"{metric}_before_mean"].first()
            axis.plot(before.index, before.values, color="black", marker="s", label="no removal")
            for detector, group in rows.groupby("detector", sort=False):
                axis.errorbar(
                    group[RATIO],
                    group[f"{metric}_after_mean"],
                    yerr=group[f"{metric}_after_std"].fillna(0.0),
                    marker="o",
                    capsize=3,
                    label=f"without {detector}'s flags",
                )
            axis.set_xticks(sorted(rows[RATIO].unique()))
            axis.set_xlabel("poison ratio")
            axis.set_ylabel(f"{label} after removal")
            axis.set_ylim(-0.02, 1.02)
            axis.set_title(_section_title(values))
        row_axes[-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize="small")
    figure.suptitle("Recovery after retraining without flagged examples (mean ± std)")
    return save_figure(figure, stem)


def _distribution(axis, position: float, values: np.ndarray, color: str) -> None:
    """Draw a violin, or only the points when a violin has too few distinct values."""
    if len(np.unique(values)) >= 2:
        parts = axis.violinplot(values, positions=[position], showmedians=True, widths=0.8)
        for body in parts["bodies"]:
            body.set_facecolor(color)
            body.set_alpha(0.5)
        for name in ("cbars", "cmins", "cmaxes", "cmedians"):
            parts[name].set_color(color)
    jitter = np.random.default_rng(0).uniform(-0.12, 0.12, len(values))
    axis.scatter(position + jitter, values, s=6, color=color, alpha=0.6)


def plot_influence_distribution(
    original: np.ndarray,
    transformed: dict[str, tuple[str, np.ndarray]],
    poison_mask: np.ndarray,
    title: str,
    stem: Path,
) -> list[Path]:
    """Plot influence on the original and on each transformed query set, clean vs poisons.

    ``transformed`` maps a transform name to its category and the mean influence of every
    training example on the transformed queries, shape (n_train,).
    """
    plt = _pyplot()
    n_panels = len(transformed)
    n_columns = min(3, n_panels)
    n_rows = -(-n_panels // n_columns)
    figure, axes = plt.subplots(
        n_rows, n_columns, figsize=(4.5 * n_columns, 3.8 * n_rows), squeeze=False
    )
    poisons = np.asarray(poison_mask, dtype=bool)
    groups = (
        ("clean\noriginal", ~poisons, False, "tab:blue"),
        ("clean\ntransformed", ~poisons, True, "tab:blue"),
        ("poisons\noriginal", poisons, False, "tab:red"),
        ("poisons\ntransformed", poisons, True, "tab:red"),
    )
    for axis, (name, (category, scores)) in zip(axes.flat, transformed.items()):
        for position, (_, members, after, color) in enumerate(groups, start=1):
            values = (scores if after else original)[members]
            if len(values):
                _distribution(axis, position, values, color)
        axis.axhline(0.0, color="grey", linewidth=0.6)
        axis.set_xticks(range(1, len(groups) + 1), [label for label, *_ in groups])
        axis.set_title(f"{name} ({category})", fontsize="medium")
        axis.set_ylabel("mean influence on the queries")
    for axis in list(axes.flat)[n_panels:]:
        axis.set_visible(False)
    figure.suptitle(title)
    figure.tight_layout()
    return save_figure(figure, stem)


def influence_plot_for_cell(cell: Cell, cache_dir: str | Path, stem: Path) -> list[Path]:
    """Plot the influence distribution of one cell from its cached scores.

    Reads the cache without computing anything; returns no paths (with a warning) when
    the cell's poisoned data or influence scores are not cached.
    """
    from benchmark.runner.experiment import Experiment
    from benchmark.runner.sweep import STAGES_FOLDER

    stage_cache = StageCache(Path(cache_dir) / STAGES_FOLDER, read_only=True)
    experiment = Experiment(cell.config, cache_dir, stage_cache)
    try:
        mask = experiment.poison_stage().poisoned.poison_mask
        scores = experiment.influence_scores()
        transformed = {
            name: (experiment.query_set(name).info.category, scores[name])
            for name in cell.config.queries.transforms
        }
    except CacheMissError as error:
        logger.warning("Influence plot of cell %d skipped: %s", cell.index, error)
        return []
    from benchmark.runner.queries import ORIGINAL

    title = (
        f"Influence before and after each transform, cell {cell.index} ({cell.name}): "
        f"{int(mask.sum())} poisons, {int((~mask).sum())} clean examples"
    )
    return plot_influence_distribution(scores[ORIGINAL], transformed, mask, title, stem)


def write_plots(
    rows: list[dict[str, Any]], influence_cell: Cell, cache_dir: str | Path, folder: Path
) -> list[Path]:
    """Write the F1, recovery and influence plots into ``folder``; return their paths."""
    frame = pd.DataFrame(rows)
    written = plot_f1_against_ratio(detection_table(frame), folder / "f1_vs_ratio")
    recovery = recovery_table(frame)
    if recovery.empty:
        logger.info("No recovery rows; the recovery plot is not drawn")
    else:
        written += plot_recovery_against_ratio(recovery, folder / "recovery_vs_ratio")
    written += influence_plot_for_cell(
        influence_cell, cache_dir, folder / f"influence_cell{influence_cell.index}"
    )
    return written
