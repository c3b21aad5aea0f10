"""``poisonbench reproduce paper``: the tables and figures of arXiv 2504.09026, rebuilt.

The experiments are the cells of a suite (``paper-cpu`` by default: MiniLM on 1,000 SST-2
examples, four poison ratios, three seeds), run through the stage cache. Four tables are
written, each with the published figure beside ours and one line on how the settings
differ:

1. precision, recall and F1 of the transform ensembles at the ratio nearest the paper's;
2. F1 with one transform category held out;
3. every detector and baseline at that ratio;
4. clean accuracy and ASR before and after removing the flagged examples, by ratio.

Published figures come from ``leaderboard/paper_figures.yaml``, where each number names
its source. The figures of the sweep (F1 and recovery against the ratio, influence before
and after a transform) are copied beside the tables.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from tabulate import tabulate

from benchmark.atomic import write_atomic, write_text_atomic
from benchmark.runner.aggregate import (
    detection_table,
    format_mean_std,
    held_out_table,
    recovery_table,
)
from detectors.transform_ensemble import DEFAULT_COMBINED_MAX_QUERIES
from leaderboard.evaluate import suite_rows
from leaderboard.suite import Suite, load_suite

logger = logging.getLogger(__name__)

FIGURES_PATH = Path(__file__).resolve().parent / "paper_figures.yaml"
PAPER = "arXiv 2504.09026 (Li, 'Detecting Instruction Finetuning Attacks using Influence Function')"
PAPER_RATIO = 0.033
"""Poison ratio of the paper's main detection run (33 poisons in 1,000 examples)."""

PUBLISHED_SETTING = (
    "Published: T5-small (google/t5-small-lm-adapt) fine-tuned on SST-2 with 33 'James Bond' "
    "poisons in 1,000 examples (the artifact README says 300 and 10), 50 clean queries, "
    "EK-FAC through kronfluence, one NVIDIA L40 GPU."
)

# Our detector -> the published row it is compared with, and how the rules differ.
ENSEMBLE_ROWS = (
    (
        "transform-variance",
        "variance ensemble",
        "the artifact flags the 5% highest variances; ours ranks strength over spread "
        "(low variance, as the paper's text says) and flags by a robust z-score",
    ),
    (
        "transform-voting",
        "voting ensemble (unanimous)",
        "the artifact holds no code for this row; ours: each category votes for its 20 "
        "most resistant strong examples, all categories must agree",
    ),
    (
        "transform-voting-majority",
        "voting ensemble (conservative)",
        "the artifact: 7 score sets each vote for their 10 lowest-influence examples, 3 votes "
        "flag; ours: a majority of categories",
    ),
    (
        "transform-combined",
        "combined",
        "the artifact's rule (0.4 KL divergence of per-query influence + 0.3 variance + 0.3 "
        "negated influence, each min-max scaled, flags above the 90th percentile); ours reads "
        f"the first {DEFAULT_COMBINED_MAX_QUERIES} queries of each set, the artifact all 50",
    ),
)
BASELINE_ROWS = {
    "single-prefix-negation": "single transform",
    "single-antonym-substitution": "single transform",
    "single-paraphrase": "single transform",
    "single-question-negation": "single transform",
    "single-grammatical-negation": "single transform",
    "single-clause-reordering": "single transform",
    "raw-influence": "percentile (85% high) on raw influence",
}
ENSEMBLES = (
    "transform-variance",
    "transform-voting",
    "transform-voting-majority",
    "transform-combined",
)
CATEGORIES = ("lexicon", "semantic", "structural")


@dataclass(frozen=True)
class ReproduceOptions:
    """Options of ``poisonbench reproduce paper``."""

    config: str | Path = "paper-cpu"
    output_dir: Path = Path("poisonbench-paper")
    cache_dir: Path = Path.home() / ".cache" / "poisonbench"
    data_dir: str | None = None
    jobs: int = 1
    run: bool = True
    progress: bool = True


def load_published() -> dict[str, Any]:
    """Return the published figures (``leaderboard/paper_figures.yaml``) as a mapping."""
    return yaml.safe_load(FIGURES_PATH.read_text(encoding="utf-8"))


def _published_row(rows: list[dict[str, Any]], key: str, value: str) -> dict[str, Any]:
    for row in rows:
        if row.get(key) == value:
            return row
    return {}


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{float(value):.3f}"


def _ours(rows: pd.DataFrame, metric: str) -> str:
    if rows.empty:
        return "—"
    row = rows.iloc[0]
    return format_mean_std(row[f"{metric}_mean"], row[f"{metric}_std"])


def _our_setting(suite: Suite, device: str) -> str:
    config = suite.sweep.base
    ratios = ", ".join(f"{ratio:g}" for ratio in suite.sweep.axes.ratios)
    return (
        f"Ours: model {config.model}, {config.data.n_train} SST-2 training examples, "
        f"epochs {config.training.epochs}, attack {', '.join(suite.sweep.axes.attacks)} at "
        f"ratios {ratios}, {config.queries.n_queries} clean queries, seeds "
        f"{', '.join(map(str, suite.sweep.axes.seeds))}, EK-FAC through kronfluence, {device}."
    )


def _device() -> str:
    import os

    import torch

    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    return f"CPU ({os.cpu_count()} cores)"


def _main_ratio(frame: pd.DataFrame) -> float:
    ratios = sorted(set(frame["attack.ratio"]))
    return min(ratios, key=lambda ratio: abs(ratio - PAPER_RATIO))


def ensemble_table(frame: pd.DataFrame, published: dict[str, Any], ratio: float) -> list[list]:
    """Rows of table 1: ensembles' precision, recall and F1, ours beside the published."""
    table = detection_table(frame)
    table = table[table["attack.ratio"] == ratio]
    rows = []
    for detector, method, difference in ENSEMBLE_ROWS:
        ours = table[table["detector"] == detector] if detector else table.iloc[0:0]
        theirs = _published_row(published["tables"]["detection"], "method", method)
        rows.append(
            [
                detector or "(not built)",
                method,
                _ours(ours, "precision"),
                _number(theirs.get("precision")),
                _ours(ours, "recall"),
                _number(theirs.get("recall")),
                _ours(ours, "f1"),
                _number(theirs.get("f1")),
                difference,
            ]
        )
    return rows


def held_out_rows(frame: pd.DataFrame, published: dict[str, Any], ratio: float) -> list[list]:
    """Rows of table 2: ensemble F1 with each category held out, beside the published F1."""
    table = held_out_table(frame)
    if table.empty:
        return []
    table = table[table["attack.ratio"] == ratio]
    loco = published["tables"]["leave_one_category_out"]
    rows = []
    for category in (*CATEGORIES, "none"):
        theirs = _published_row(loco, "held_out", category)
        cells = [category]
        for detector in ENSEMBLES:
            ours = table[(table["detector"] == detector) & (table["held_out_category"] == category)]
            cells.append(_ours(ours, "f1"))
        cells.append(_number(theirs.get("f1")) if category != "none" else "—")
        rows.append(cells)
    mean = _published_row(loco, "held_out", "mean")
    means = ["mean of the three"]
    for detector in ENSEMBLES:
        ours = table[(table["detector"] == detector) & table["held_out_category"].isin(CATEGORIES)]
        means.append(_number(ours["f1_mean"].mean()) if not ours.empty else "—")
    means.append(_number(mean.get("f1")))
    rows.append(means)
    return rows


def baseline_rows(frame: pd.DataFrame, published: dict[str, Any], ratio: float) -> list[list]:
    """Rows of table 3: every detector at ``ratio`` (F1, precision, AUROC), best F1 first."""
    full = frame[frame["held_out_category"].isna() & (frame["attack.ratio"] == ratio)]
    grouped = full.groupby(["detector", "track"], sort=False)
    stats = grouped[["precision", "f1", "auroc"]].agg(["mean", "std"])
    stats.columns = [f"{metric}_{statistic}" for metric, statistic in stats.columns]
    stats = stats.reset_index()
    stats["oracle"] = stats["track"] == "oracle"
    stats = stats.sort_values(["oracle", "f1_mean"], ascending=[True, False], kind="stable")
    baselines = published["tables"]["detection"] + published["tables"]["baselines"]
    rows = []
    for _, row in stats.iterrows():
        method = BASELINE_ROWS.get(row["detector"])
        theirs = _published_row(baselines, "method", method) if method else {}
        rows.append(
            [
                row["detector"],
                row["track"],
                format_mean_std(row["precision_mean"], row["precision_std"]),
                format_mean_std(row["f1_mean"], row["f1_std"]),
                format_mean_std(row["auroc_mean"], row["auroc_std"]),
                method or "—",
                _number(theirs.get("precision")),
                _number(theirs.get("f1")),
            ]
        )
    return rows


def recovery_rows(frame: pd.DataFrame) -> list[list]:
    """Rows of table 4: clean accuracy and ASR before and after removal, by ratio."""
    table = recovery_table(frame)
    rows = []
    for _, row in table.iterrows():
        rows.append(
            [
                row["detector"],
                f"{row['attack.ratio']:g}",
                format_mean_std(row["n_removed_mean"], row["n_removed_std"]),
                format_mean_std(row["n_poisons_removed_mean"], row["n_poisons_removed_std"]),
                format_mean_std(
                    row["clean_accuracy_before_mean"], row["clean_accuracy_before_std"]
                ),
                format_mean_std(row["clean_accuracy_after_mean"], row["clean_accuracy_after_std"]),
                format_mean_std(row["asr_before_mean"], row["asr_before_std"]),
                format_mean_std(row["asr_after_mean"], row["asr_after_std"]),
            ]
        )
    return rows


TABLE_HEADERS = {
    "ensembles": [
        "our detector",
        "published row",
        "P (ours)",
        "P (published)",
        "R (ours)",
        "R (published)",
        "F1 (ours)",
        "F1 (published)",
        "how the rules differ",
    ],
    "held_out": ["held-out category", *(f"F1 {name} (ours)" for name in ENSEMBLES)]
    + ["F1 (published)"],
    "baselines": [
        "detector",
        "track",
        "P (ours)",
        "F1 (ours)",
        "AUROC (ours)",
        "published row",
        "P (published)",
        "F1 (published)",
    ],
    "recovery": [
        "detector",
        "ratio",
        "removed",
        "poisons removed",
        "clean acc. before",
        "clean acc. after",
        "ASR before",
        "ASR after",
    ],
}


def _markdown(
    tables: dict[str, list[list]], suite: Suite, ratio: float, published: dict[str, Any]
) -> str:
    ours = _our_setting(suite, _device())
    notes = [
        note.removeprefix("NOTE:").strip()
        for note in published.get("notes", [])
        if "simulated" in note.lower()
    ]
    lines = [
        f"# Reproduction of {PAPER}",
        "",
        f"Suite {suite.info.label} ({suite.sweep.source}), {len(suite.sweep.cells)} cells. "
        "Ours are mean ± standard deviation over seeds. Published figures and their sources: "
        "`leaderboard/paper_figures.yaml` (only the abstract of the paper itself could be "
        "read; the table rows come from the authors' artifact repository).",
        "",
        "Caution on the published figures: "
        + (" ".join(" ".join(note.split()) for note in notes) or "none recorded."),
        "",
        f"## 1. Transform ensembles at ratio {ratio:g}",
        "",
        ours,
        PUBLISHED_SETTING,
        "",
        tabulate(
            tables["ensembles"],
            headers=TABLE_HEADERS["ensembles"],
            tablefmt="github",
            disable_numparse=True,
        ),
        "",
        f"## 2. One transform category held out (ratio {ratio:g})",
        "",
        "Ours: the ensemble runs without the held-out category's transforms. Published: a "
        "voting threshold tuned on the other categories, applied to the held-out category's "
        "transforms alone; same published setting as table 1.",
        "",
    ]
    if tables["held_out"]:
        lines.append(
            tabulate(
                tables["held_out"],
                headers=TABLE_HEADERS["held_out"],
                tablefmt="github",
                disable_numparse=True,
            )
        )
    else:
        lines.append("No held-out rows: the suite lists no holdout categories.")
    lines += [
        "",
        f"## 3. Detectors and baselines at ratio {ratio:g}",
        "",
        "Ours: every registered detector, oracle detectors last. Published baseline rows come "
        "from other runs of the artifact (500 or 1,000 examples with 10-20% poisons), not "
        "from the ensemble's setting; '—' means no published counterpart.",
        "",
        tabulate(
            tables["baselines"],
            headers=TABLE_HEADERS["baselines"],
            tablefmt="github",
            disable_numparse=True,
        ),
        "",
        "## 4. Recovery after removing the flagged examples, by ratio",
        "",
        ours,
        "Published: 'removing a small set of detected poisons (1-3% of the data) restores "
        "model performance to near-clean levels' (abstract v3); no numbers were found.",
        "",
    ]
    if tables["recovery"]:
        lines.append(
            tabulate(
                tables["recovery"],
                headers=TABLE_HEADERS["recovery"],
                tablefmt="github",
                disable_numparse=True,
            )
        )
    else:
        lines.append("No recovery rows: the suite lists no recovery detectors.")
    lines += [
        "",
        "## Figures",
        "",
        "`figures/`: F1 against the poison ratio, recovery against the ratio, and the "
        "distribution of influence before and after a transform (PNG and PDF).",
    ]
    return "\n".join(lines) + "\n"


def reproduce_paper(options: ReproduceOptions) -> list[Path]:
    """Run (or read) the paper suite and write its tables and figures; return the paths.

    Raises:
        InputError: for a bad suite, failed cells, or cells without results.
    """
    overrides = {"base.data.data_dir": options.data_dir} if options.data_dir else None
    suite = load_suite(options.config, overrides)
    output_dir = Path(options.output_dir)
    runs_dir = output_dir / "runs"
    frame, _ = suite_rows(
        suite,
        options.cache_dir,
        runs_dir,
        jobs=options.jobs,
        progress=options.progress,
        run=options.run,
    )
    published = load_published()
    ratio = _main_ratio(frame)
    tables = {
        "ensembles": ensemble_table(frame, published, ratio),
        "held_out": held_out_rows(frame, published, ratio),
        "baselines": baseline_rows(frame, published, ratio),
        "recovery": recovery_rows(frame),
    }

    written = []
    for name, rows in tables.items():
        path = output_dir / "tables" / f"{name}.csv"
        frame_out = pd.DataFrame(rows, columns=TABLE_HEADERS[name])
        write_text_atomic(path, frame_out.to_csv(index=False))
        written.append(path)
    figures = output_dir / "figures"
    for source in sorted((runs_dir / "plots").glob("*")):
        if source.suffix in (".png", ".pdf"):
            write_atomic(
                figures / source.name,
                lambda temporary, source=source: shutil.copyfile(source, temporary),
            )
            written.append(figures / source.name)
    sources = output_dir / "paper_figures.yaml"
    write_text_atomic(sources, FIGURES_PATH.read_text(encoding="utf-8"))
    written.append(sources)
    report = output_dir / "paper.md"
    write_text_atomic(report, _markdown(tables, suite, ratio, published))
    written.insert(0, report)
    logger.info("Reproduction written to %s", output_dir)
    return written
