"""Evaluate detectors on a suite and write the leaderboard.

The suite's scenarios run as the cells of a sweep, through the runner's stage cache, so a
scenario that a sweep or an earlier leaderboard run already computed is read back. Plug-in
detectors (``module.path:ClassName`` or entry points) run beside the registered ones;
results-file submissions are validated and scored without running anything but the
poisoning step that rebuilds each scenario's poison mask.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.errors import InputError
from benchmark.runner.cache import StageCache
from benchmark.runner.sweep import STAGES_FOLDER, SweepSummary, merge_rows, read_rows, run_sweep
from benchmark.runner.sweep_config import Cell
from detectors.base import register_detector_spec
from leaderboard.ranking import RECORD_FIELDS, Leaderboard, rank
from leaderboard.render import write_leaderboard
from leaderboard.submission import load_submission, submission_records
from leaderboard.suite import Suite, load_suite

logger = logging.getLogger(__name__)

RUNS_FOLDER = "runs"
"""Sub-folder of the output folder that contains the suite's sweep rows, tables and plots."""


@dataclass(frozen=True)
class LeaderboardOptions:
    """Options of ``poisonbench leaderboard``: the suite, the entries and the folders.

    ``detectors`` are extra detectors: registered names or ``[NAME=]module.path:ClassName``.
    ``only`` replaces the suite's detector list by ``detectors`` (plus submissions).
    ``run`` False ranks only rows that earlier runs wrote (for example ``run-cell`` jobs).
    """

    suite: str | Path
    output_dir: Path
    cache_dir: Path
    data_dir: str | None = None
    detectors: tuple[str, ...] = ()
    submissions: tuple[Path, ...] = ()
    only: bool = False
    jobs: int = 1
    run: bool = True
    progress: bool = True
    set_options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LeaderboardOutcome:
    board: Leaderboard
    written: list[Path]
    summary: SweepSummary | None


def _package_version() -> str:
    try:
        return version("poisonbench")
    except PackageNotFoundError:
        return "unknown"


def _source(name: str, plugins: set[str]) -> str:
    return "plugin" if name in plugins else "poisonbench"


def poison_mask_reader(cache_dir: Path):
    """Return a function that rebuilds (or reads from the cache) a scenario's poison mask."""
    from benchmark.runner.experiment import Experiment

    stage_cache = StageCache(Path(cache_dir) / STAGES_FOLDER)

    def poison_mask(cell: Cell) -> np.ndarray:
        experiment = Experiment(cell.config, cache_dir, stage_cache)
        return np.asarray(experiment.poison_stage().poisoned.poison_mask, dtype=bool)

    return poison_mask


def suite_rows(
    suite: Suite,
    cache_dir: Path,
    runs_dir: Path,
    jobs: int = 1,
    progress: bool = True,
    run: bool = True,
    detector_specs: tuple[str, ...] = (),
) -> tuple[pd.DataFrame, SweepSummary | None]:
    """Run the suite's cells (unless ``run`` is False) and return all their sweep rows.

    Returns the rows and the run's summary (None without a run).

    Raises:
        InputError: when a cell failed, or when a cell has no rows in ``runs_dir``.
    """
    summary = None
    if run:
        summary = run_sweep(
            suite.sweep,
            cache_dir,
            runs_dir,
            jobs=jobs,
            progress=progress,
            detector_specs=detector_specs,
        )
        if summary.failures:
            failed = ", ".join(f"{index} ({name})" for index, name, _ in summary.failures)
            raise InputError(
                f"{len(summary.failures)} scenarios failed: {failed}; see the log above, "
                "fix the cause and run again (finished work is cached)"
            )
    merged, missing = merge_rows(suite.sweep, runs_dir)
    if missing:
        raise InputError(
            f"{len(missing)} of {len(suite.sweep.cells)} scenarios have no results in "
            f"{runs_dir}, e.g. {missing[0].name}; run them first (without --aggregate-only)"
        )
    return pd.DataFrame(read_rows(merged)), summary


def _suite_for(options: LeaderboardOptions, detector_names: list[str]) -> Suite:
    overrides = dict(options.set_options)
    if options.data_dir is not None:
        overrides["base.data.data_dir"] = options.data_dir
    suite = load_suite(options.suite, overrides or None)
    if detector_names:
        chosen = list(detector_names) if options.only else list(suite.sweep.axes.detectors)
        chosen += [name for name in detector_names if name not in chosen]
        overrides["axes.detectors"] = chosen
        if options.only:  # held-out rows are not ranked, and they need the ensembles
            overrides["axes.holdout"] = []
        suite = load_suite(options.suite, overrides)
    return suite


def build_leaderboard(options: LeaderboardOptions) -> LeaderboardOutcome:
    """Run (or read) the suite, add submissions, rank, and write the leaderboard files.

    Raises:
        InputError: for a bad suite, detector spec or submission, or when scenarios have no
            results (failed cells, or ``run`` False before every cell ran).
    """
    submissions = [load_submission(path) for path in options.submissions]
    detector_names = [register_detector_spec(spec) for spec in options.detectors]
    plugins = {name for name, spec in zip(detector_names, options.detectors) if ":" in spec}
    if options.only and not (detector_names or submissions):
        raise InputError("--only needs --detector or --submission: nothing would be ranked")
    suite = _suite_for(options, detector_names)
    runs_dir = Path(options.output_dir) / RUNS_FOLDER

    # Submissions are checked first, so a bad file fails before any scenario runs.
    records = []
    ranked_names = set(suite.sweep.axes.detectors) if detector_names or not options.only else set()
    poison_mask = poison_mask_reader(options.cache_dir)
    for submission in submissions:
        if submission.detector in ranked_names:
            raise InputError(
                f"{submission.path}: field detector.name: {submission.detector!r} is "
                "already on the leaderboard; choose another name"
            )
        ranked_names.add(submission.detector)
        records.append(submission_records(submission, suite, poison_mask))

    summary = None
    if detector_names or not options.only:
        specs = tuple(spec for spec in options.detectors if ":" in spec)
        rows, summary = suite_rows(
            suite,
            options.cache_dir,
            runs_dir,
            jobs=options.jobs,
            progress=options.progress,
            run=options.run,
            detector_specs=specs,
        )
        rows = rows[rows["held_out_category"].isna()]
        rows = rows.assign(
            scenario=rows["cell_name"],
            source=[_source(name, plugins) for name in rows["detector"]],
        )
        records.append(rows.loc[:, list(RECORD_FIELDS)])

    board = rank(pd.concat(records, ignore_index=True), suite.scenario_ids, suite.info.label)
    header = [
        f"Suite {suite.info.label}: {suite.info.description}"
        if suite.info.description
        else f"Suite {suite.info.label}",
        f"{len(suite.scenario_ids)} scenarios ({suite.sweep.source}); "
        f"poisonbench {_package_version()}.",
        f"Regenerate with: poisonbench leaderboard --suite {options.suite} --data-dir DATA_DIR",
    ]
    written = write_leaderboard(board, options.output_dir, header)
    return LeaderboardOutcome(board, written, summary)
