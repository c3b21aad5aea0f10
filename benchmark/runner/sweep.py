"""Run the cells of a sweep through the stage cache, in-process or in worker processes.

Each cell writes its rows (one per detector, plus one per held-out category of each
transform ensemble) to ``OUTPUT/cells/INDEX-KEY.jsonl``. After the cells, the rows of all
cells are merged into ``OUTPUT/results.jsonl`` and aggregated into tables and plots.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from benchmark.atomic import write_text_atomic
from benchmark.runner.cache import StageCache, StageCounts
from benchmark.runner.config import flatten_config
from benchmark.runner.sweep_config import Cell, Sweep

logger = logging.getLogger(__name__)

STAGES_FOLDER = "stages"
RESULTS_FILE = "results.jsonl"
CELLS_FOLDER = "cells"
STALE_TEMPORARY_SECONDS = 24 * 3600
"""Age after which a temporary cache file counts as left by a killed process."""

PROJECT_LOGGERS = ("benchmark", "attacks", "detectors", "baselines")

RECOVERY_FIELDS = (
    "n_removed",
    "n_poisons_removed",
    "clean_accuracy_before",
    "asr_before",
    "clean_accuracy_after",
    "asr_after",
)


@dataclass
class CellOutcome:
    """Result of one cell: its rows file, run time, and stage cache hits and computations."""

    index: int
    name: str
    rows_path: str
    n_rows: int
    seconds: float
    counts: StageCounts

    @property
    def from_cache(self) -> bool:
        return self.counts.total_computed == 0


@dataclass
class SweepSummary:
    """Outcome of a sweep run: cells done or failed, stage counts and the files written."""

    n_cells: int
    outcomes: list[CellOutcome] = field(default_factory=list)
    failures: list[tuple[int, str, str]] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)
    counts: StageCounts = field(default_factory=StageCounts)
    written: list[Path] = field(default_factory=list)

    @property
    def n_from_cache(self) -> int:
        return sum(1 for outcome in self.outcomes if outcome.from_cache)

    @property
    def n_computed(self) -> int:
        return len(self.outcomes) - self.n_from_cache

    def line(self) -> str:
        """Return the closing summary, e.g. ``12 cells, 12 from cache, 0 computed; ...``."""
        stages = sorted(set(self.counts.hits) | set(self.counts.computed))
        per_stage = ", ".join(
            f"{stage} {self.counts.hits.get(stage, 0)}/{self.counts.computed.get(stage, 0)}"
            for stage in stages
        )
        text = f"{self.n_cells} cells, {self.n_from_cache} from cache, {self.n_computed} computed"
        if self.failures:
            text += f", {len(self.failures)} failed"
        text += (
            f"; stage cache hits {self.counts.total_hits}, stage computations "
            f"{self.counts.total_computed}"
        )
        if per_stage:
            text += f" (hits/computed: {per_stage})"
        if self.missing:
            text += f"; {len(self.missing)} cells have no rows"
        return text


def cell_rows_path(output_dir: str | Path, cell: Cell) -> Path:
    return Path(output_dir) / CELLS_FOLDER / f"{cell.index:04d}-{cell.key}.jsonl"


def _json_safe(value: Any) -> Any:
    """Replace float NaN (undefined metrics) by None, which JSON writes as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def cell_rows(cell: Cell, experiment, result) -> list[dict[str, Any]]:
    """Build one row per detector, and one per held-out category of each ensemble.

    Every row carries the cell, every configuration field (dotted keys), the poisoned
    model's metrics, the detector's metrics and, for recovery detectors, the clean
    accuracy and ASR before and after removing the flagged examples.
    """
    from benchmark.runner.experiment import is_transform_ensemble

    common = {
        "cell": cell.index,
        "cell_name": cell.name,
        "cell_key": cell.key,
        "transform_set": cell.transform_set,
        **flatten_config(cell.config),
        "n_poisons": result.poisoning["n_poisons"],
        "clean_accuracy": result.poisoned_model.clean_accuracy,
        "attack_success_rate": result.poisoned_model.attack_success_rate,
    }
    no_recovery = dict.fromkeys(RECOVERY_FIELDS)
    recovery = {row["detector"]: row for row in result.recovery}
    rows = []
    for detector_row in result.detectors:
        name = detector_row["detector"]
        recovery_fields = no_recovery
        if name in recovery:
            recovery_fields = {key: recovery[name][key] for key in RECOVERY_FIELDS}
        rows.append(
            {
                **common,
                "held_out_category": None,
                "kept_transforms": None,
                **detector_row,
                **recovery_fields,
            }
        )
    for category in cell.holdout:
        kept_transforms = list(experiment.kept_transforms(category))
        for name in cell.config.detectors:
            if not is_transform_ensemble(name):
                continue
            detection = experiment.detect(name, category)
            rows.append(
                {
                    **common,
                    "held_out_category": category,
                    "kept_transforms": kept_transforms,
                    **experiment.detection_row(name, detection),
                    **no_recovery,
                }
            )
    return [_json_safe(row) for row in rows]


@contextmanager
def _package_log_levels_kept():
    """Keep this project's INFO logs while kronfluence runs, and restore the levels after.

    kronfluence 1.0.1 sets the root logger's level to the ``log_level`` of each
    ``Analyzer`` (WARNING here), which would silence the rest of the sweep's log.
    """
    root = logging.getLogger()
    saved_root = root.level
    packages = [logging.getLogger(name) for name in PROJECT_LOGGERS]
    saved = [package.level for package in packages]
    for package in packages:
        if package.level == logging.NOTSET:
            package.setLevel(root.getEffectiveLevel())
    try:
        yield
    finally:
        root.setLevel(saved_root)
        for package, level in zip(packages, saved):
            package.setLevel(level)


def run_cell(cell: Cell, cache_dir: str | Path, output_dir: str | Path) -> CellOutcome:
    """Run one cell through the stage cache and write its rows file atomically."""
    with _package_log_levels_kept():
        return _run_cell(cell, cache_dir, output_dir)


def _run_cell(cell: Cell, cache_dir: str | Path, output_dir: str | Path) -> CellOutcome:
    from benchmark.runner.experiment import Experiment

    start = time.perf_counter()
    logger.info("Cell %d (%s): started", cell.index, cell.name)
    stage_cache = StageCache(Path(cache_dir) / STAGES_FOLDER)
    experiment = Experiment(cell.config, cache_dir, stage_cache)
    result = experiment.result()
    rows = cell_rows(cell, experiment, result)
    path = cell_rows_path(output_dir, cell)
    text = "".join(json.dumps(row, allow_nan=False) + "\n" for row in rows)
    write_text_atomic(path, text)
    seconds = time.perf_counter() - start
    counts = stage_cache.counts
    logger.info(
        "Cell %d (%s): finished in %.1f s, %d stage cache hits, %d stages computed",
        cell.index,
        cell.name,
        seconds,
        counts.total_hits,
        counts.total_computed,
    )
    return CellOutcome(cell.index, cell.name, str(path), len(rows), seconds, counts)


def _initialise_worker(
    log_level: int, torch_threads: int, detector_specs: tuple[str, ...] = ()
) -> None:
    logging.basicConfig(
        level=log_level,
        format="%(asctime)s %(levelname)s %(name)s [%(processName)s]: %(message)s",
        datefmt="%H:%M:%S",
    )
    import torch

    from detectors.base import register_detector_spec

    torch.set_num_threads(torch_threads)
    for spec in detector_specs:  # plug-in detectors registered in the parent process
        register_detector_spec(spec)


def run_cells(
    cells: list[Cell],
    cache_dir: str | Path,
    output_dir: str | Path,
    jobs: int = 1,
    progress: bool = True,
    detector_specs: tuple[str, ...] = (),
) -> SweepSummary:
    """Run ``cells``; with ``jobs`` > 1 in that many spawned worker processes.

    A cell that raises is logged with its index and counted as failed; the others go on.
    ``detector_specs`` (see :func:`detectors.base.register_detector_spec`) are registered
    again in every worker process, which starts with the built-in detectors only.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    summary = SweepSummary(n_cells=len(cells))
    StageCache(Path(cache_dir) / STAGES_FOLDER).remove_stale_temporaries(STALE_TEMPORARY_SECONDS)
    bar = tqdm(total=len(cells), desc="cells", unit="cell", disable=not progress)

    def record(cell: Cell, outcome: CellOutcome | None, error: BaseException | None) -> None:
        if outcome is not None:
            summary.outcomes.append(outcome)
            summary.counts.add(outcome.counts)
        else:
            summary.failures.append((cell.index, cell.name, f"{type(error).__name__}: {error}"))
        bar.update(1)
        bar.set_postfix(from_cache=summary.n_from_cache, failed=len(summary.failures))

    try:
        if jobs == 1:
            for cell in cells:
                try:
                    outcome = run_cell(cell, cache_dir, output_dir)
                except Exception as error:  # one failed cell must not stop the sweep
                    logger.exception("Cell %d (%s) failed", cell.index, cell.name)
                    record(cell, None, error)
                else:
                    record(cell, outcome, None)
        else:
            threads = max(1, (os.cpu_count() or 1) // jobs)
            with ProcessPoolExecutor(
                max_workers=min(jobs, max(1, len(cells))),
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_initialise_worker,
                initargs=(logging.getLogger().getEffectiveLevel(), threads, detector_specs),
            ) as pool:
                futures = {
                    pool.submit(run_cell, cell, cache_dir, output_dir): cell for cell in cells
                }
                for future in as_completed(futures):
                    cell = futures[future]
                    try:
                        outcome = future.result()
                    except Exception as error:  # raised in the worker, re-raised here
                        logger.error("Cell %d (%s) failed: %s", cell.index, cell.name, error)
                        record(cell, None, error)
                    else:
                        record(cell, outcome, None)
    finally:
        bar.close()
    summary.outcomes.sort(key=lambda outcome: outcome.index)
    summary.failures.sort()
    return summary


def merge_rows(sweep: Sweep, output_dir: str | Path) -> tuple[Path, list[Cell]]:
    """Merge the cells' rows files into ``results.jsonl`` atomically, in cell order.

    Returns the merged file and the cells whose rows file is missing (not run yet, failed,
    or written for another version of the sweep file).
    """
    output_dir = Path(output_dir)
    parts = []
    missing = []
    for cell in sweep.cells:
        path = cell_rows_path(output_dir, cell)
        if path.is_file():
            parts.append(path.read_text(encoding="utf-8"))
        else:
            missing.append(cell)
    merged = output_dir / RESULTS_FILE
    write_text_atomic(merged, "".join(parts))
    return merged, missing


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def run_sweep(
    sweep: Sweep,
    cache_dir: str | Path,
    output_dir: str | Path,
    jobs: int = 1,
    progress: bool = True,
    run: bool = True,
    detector_specs: tuple[str, ...] = (),
) -> SweepSummary:
    """Run every cell (unless ``run`` is False), merge the rows, write tables and plots."""
    from benchmark.runner.aggregate import write_tables
    from benchmark.runner.plots import write_plots

    output_dir = Path(output_dir)
    if run:
        summary = run_cells(
            list(sweep.cells), cache_dir, output_dir, jobs, progress, detector_specs
        )
    else:
        summary = SweepSummary(n_cells=len(sweep.cells))

    merged, missing = merge_rows(sweep, output_dir)
    summary.written.append(merged)
    summary.missing = [cell.index for cell in missing]
    if missing:
        logger.warning(
            "%d of %d cells have no rows yet and are left out of the tables: %s",
            len(missing),
            len(sweep.cells),
            ", ".join(str(cell.index) for cell in missing),
        )
    rows = read_rows(merged)
    if not rows:
        logger.warning("No rows to aggregate; no tables or plots written")
        return summary
    summary.written += write_tables(rows, output_dir / "tables")
    done = [cell for cell in sweep.cells if cell not in missing]
    summary.written += write_plots(rows, done[0], cache_dir, output_dir / "plots")
    logger.info("Sweep %s: %s", sweep.name, summary.line())
    return summary
