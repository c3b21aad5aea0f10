"""The ``poisonbench leaderboard`` and ``poisonbench reproduce`` subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_OUTPUT_DIR = Path("leaderboard")
DEFAULT_PAPER_OUTPUT_DIR = Path("poisonbench-paper")


def add_leaderboard_commands(commands: argparse._SubParsersAction) -> None:
    """Add the ``leaderboard`` and ``reproduce`` subparsers to the ``poisonbench`` parser."""
    from leaderboard.suite import DEFAULT_SUITE, shipped_suites

    board = commands.add_parser(
        "leaderboard",
        help="evaluate detectors on a versioned scenario suite and write the leaderboard",
        description="Run every scenario of a suite (reusing the stage cache), rank the "
        "detectors by mean F1 and by mean AUROC, and write LEADERBOARD.md, leaderboard.csv, "
        "leaderboard_scenarios.csv and leaderboard.html.",
    )
    board.add_argument(
        "--suite",
        default=DEFAULT_SUITE,
        help=f"shipped suite ({', '.join(shipped_suites())}) or a suite YAML file "
        f"(default {DEFAULT_SUITE})",
    )
    board.add_argument(
        "--detector",
        action="append",
        default=[],
        metavar="SPEC",
        help="also evaluate this detector: a registered name (entry points included) or "
        "[NAME=]module.path:ClassName; repeat for several",
    )
    board.add_argument(
        "--submission",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="results file to validate against leaderboard/submission.schema.json and rank; "
        "repeat for several",
    )
    board.add_argument(
        "--only",
        action="store_true",
        help="rank only the --detector and --submission entries, not the suite's detectors",
    )
    board.add_argument(
        "--data-dir", help="folder holding sst2/train.tsv and sst2/test.tsv (base.data.data_dir)"
    )
    board.add_argument("--cache-dir", type=Path, help="stage cache folder (as for sweeps)")
    board.add_argument(
        "--output-dir",
        type=Path,
        default=DEFAULT_OUTPUT_DIR,
        help=f"folder for the leaderboard files (default {DEFAULT_OUTPUT_DIR}/); the "
        "scenarios' rows go to its runs/ sub-folder",
    )
    board.add_argument("--jobs", type=int, default=1, help="scenarios run at once (default 1)")
    board.add_argument(
        "--aggregate-only",
        action="store_true",
        help="run nothing: rank the rows that earlier runs (or run-cell jobs) wrote",
    )

    reproduce = commands.add_parser(
        "reproduce",
        help="rebuild the tables and figures of a paper (only 'paper': arXiv 2504.09026)",
        description="Run the paper's experiments at the chosen scale (reusing the stage "
        "cache) and write every table, each beside the published figures, and every figure "
        "into one folder.",
    )
    reproduce.add_argument("target", choices=["paper"], help="what to reproduce")
    reproduce.add_argument(
        "--config",
        default="paper-cpu",
        help="suite of the experiments: paper-cpu (default, MiniLM on 2 CPU cores), "
        "paper-gpu-t5 or paper-gpu-deepseek (the paper's models; GPU and hub access), "
        "or a suite YAML file",
    )
    reproduce.add_argument(
        "--data-dir", help="folder holding sst2/train.tsv and sst2/test.tsv (base.data.data_dir)"
    )
    reproduce.add_argument("--cache-dir", type=Path, help="stage cache folder (as for sweeps)")
    reproduce.add_argument(
        "--output-dir",
        type=Path,
        default=DEFAULT_PAPER_OUTPUT_DIR,
        help=f"folder for the tables and figures (default {DEFAULT_PAPER_OUTPUT_DIR}/)",
    )
    reproduce.add_argument("--jobs", type=int, default=1, help="scenarios run at once (default 1)")
    reproduce.add_argument(
        "--aggregate-only",
        action="store_true",
        help="run nothing: build the tables from the rows that earlier runs wrote",
    )


def run_leaderboard_command(args: argparse.Namespace, default_cache_dir: Path) -> int:
    """Run ``leaderboard``; print the files written and the top of the ranking."""
    from benchmark.errors import InputError
    from leaderboard.evaluate import LeaderboardOptions, build_leaderboard

    if args.jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {args.jobs}")
    outcome = build_leaderboard(
        LeaderboardOptions(
            suite=args.suite,
            output_dir=args.output_dir,
            cache_dir=args.cache_dir or default_cache_dir,
            data_dir=args.data_dir,
            detectors=tuple(args.detector),
            submissions=tuple(args.submission),
            only=args.only,
            jobs=args.jobs,
            run=not args.aggregate_only,
        )
    )
    for path in outcome.written:
        print(f"Wrote {path}")
    ranked = outcome.board.ranking
    best = ranked[ranked["group"] == "ranked"].head(3)
    for _, row in best.iterrows():
        print(
            f"#{row['rank_f1']} {row['detector']} ({row['track']}): mean F1 "
            f"{row['mean_f1']:.3f}, mean AUROC {row['mean_auroc']:.3f}"
        )
    return 0


def run_reproduce_command(args: argparse.Namespace, default_cache_dir: Path) -> int:
    """Run ``reproduce paper``; print the folder and its files."""
    from benchmark.errors import InputError
    from leaderboard.paper import ReproduceOptions, reproduce_paper

    if args.jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {args.jobs}")
    written = reproduce_paper(
        ReproduceOptions(
            config=args.config,
            output_dir=args.output_dir,
            cache_dir=args.cache_dir or default_cache_dir,
            data_dir=args.data_dir,
            jobs=args.jobs,
            run=not args.aggregate_only,
        )
    )
    for path in written:
        print(f"Wrote {path}")
    return 0
