"""The ``poisonbench sweep`` and ``poisonbench run-cell`` subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

SWEEP_COMMANDS = ("sweep", "run-cell")
DEFAULT_OUTPUT_ROOT = Path("poisonbench-sweeps")


def _comma_list(item_type: type):
    def parse(text: str) -> list:
        items = [item.strip() for item in text.split(",") if item.strip()]
        try:
            return [item_type(item) for item in items]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {item_type.__name__} values, got {text!r}"
            ) from None

    return parse


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a value of the sweep file; the value is read as YAML. KEY is dotted: "
        "axes.ratios=[0.01,0.05], base.training.epochs=1, or an experiment key such as "
        "training.epochs=1 (base) or attack.ratio=0.05 (narrows that axis to one value). "
        "Repeat for several keys.",
    )
    parser.add_argument(
        "--data-dir", help="folder holding sst2/train.tsv and sst2/test.tsv (base.data.data_dir)"
    )
    parser.add_argument("--model", help="victim: 'minilm', 'tiny-bert' or a model folder")
    parser.add_argument("--n-train", type=int, help="training examples sampled per cell")
    parser.add_argument(
        "--ratios", type=_comma_list(float), help="poison ratios, e.g. 0.01,0.05 (axes.ratios)"
    )
    parser.add_argument("--seeds", type=_comma_list(int), help="seeds, e.g. 0,1,2 (axes.seeds)")
    parser.add_argument(
        "--detectors", type=_comma_list(str), help="comma-separated detectors (axes.detectors)"
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="folder of the stage cache and EK-FAC factors "
        "(default $POISONBENCH_CACHE_DIR or ~/.cache/poisonbench)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        help=f"folder for rows, tables and plots (default {DEFAULT_OUTPUT_ROOT}/SWEEP_NAME)",
    )


def add_sweep_commands(commands: argparse._SubParsersAction) -> None:
    """Add the ``sweep`` and ``run-cell`` subparsers to the ``poisonbench`` parser."""
    sweep = commands.add_parser(
        "sweep", help="run every cell of a sweep file, then write result rows, tables and plots"
    )
    sweep.add_argument("file", type=Path, help="YAML sweep file with sections base and axes")
    _add_common_arguments(sweep)
    sweep.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="number of cells run at once, each in its own worker process "
        "(default 1: cells run one after another in this process)",
    )
    sweep.add_argument(
        "--list-cells", action="store_true", help="print the cells with their ids and exit"
    )
    sweep.add_argument(
        "--aggregate-only",
        action="store_true",
        help="run no cell: merge the rows that cells already wrote, then write tables and plots",
    )

    cell = commands.add_parser(
        "run-cell", help="run one cell of a sweep, e.g. as one task of a SLURM job array"
    )
    cell.add_argument("--sweep", type=Path, required=True, dest="file", help="YAML sweep file")
    cell.add_argument(
        "--cell",
        type=int,
        required=True,
        help="cell id, counted from 0 (see 'poisonbench sweep FILE --list-cells')",
    )
    _add_common_arguments(cell)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from benchmark.runner.sweep_config import parse_set_options

    overrides = parse_set_options(args.set)
    named = {
        "data.data_dir": args.data_dir,
        "model": args.model,
        "data.n_train": args.n_train,
        "axes.ratios": args.ratios,
        "axes.seeds": args.seeds,
        "axes.detectors": args.detectors,
    }
    overrides.update({key: value for key, value in named.items() if value is not None})
    return overrides


def _print_cells(sweep) -> None:
    from tabulate import tabulate

    rows = [
        (
            cell.index,
            cell.name,
            cell.config.data.dataset,
            cell.config.attack.name,
            cell.transform_set,
            cell.config.attack.ratio,
            cell.config.seed,
            ", ".join(cell.holdout) or "-",
        )
        for cell in sweep.cells
    ]
    headers = ["cell", "name", "dataset", "attack", "transform set", "ratio", "seed", "holdout"]
    print(tabulate(rows, headers=headers, tablefmt="simple"))


def run_sweep_command(args: argparse.Namespace, default_cache_dir: Path) -> int:
    """Run ``sweep`` or ``run-cell``; return the exit code (1 when a cell failed)."""
    from benchmark.errors import InputError
    from benchmark.runner.sweep import run_cell, run_sweep
    from benchmark.runner.sweep_config import load_sweep

    sweep = load_sweep(args.file, _overrides(args))
    output_dir = args.output_dir or DEFAULT_OUTPUT_ROOT / sweep.name
    cache_dir = args.cache_dir or default_cache_dir

    if args.command == "run-cell":
        cell = sweep.cell(args.cell)
        outcome = run_cell(cell, cache_dir, output_dir)
        work = (
            "every stage from cache"
            if outcome.from_cache
            else f"{outcome.counts.total_computed} stages computed, "
            f"{outcome.counts.total_hits} from cache"
        )
        rows = f"{outcome.n_rows} rows in {outcome.rows_path}"
        print(f"Cell {cell.index} ({cell.name}): {rows}; {work}")
        return 0

    if args.list_cells:
        _print_cells(sweep)
        return 0
    if args.jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {args.jobs}")
    summary = run_sweep(sweep, cache_dir, output_dir, jobs=args.jobs, run=not args.aggregate_only)
    for path in summary.written:
        print(f"Wrote {path}")
    for index, name, error in summary.failures:
        print(f"Cell {index} ({name}) failed: {error}")
    if args.aggregate_only:
        n_cells = len(sweep.cells)
        print(
            f"Sweep {sweep.name}: aggregated the rows of {n_cells - len(summary.missing)} of "
            f"{n_cells} cells"
        )
    else:
        print(f"Sweep {sweep.name}: {summary.line()}")
    return 1 if summary.failures else 0
