"""The ``poisonbench`` command line: run experiments and sweeps, scan data, rank detectors,
reproduce the paper and list components."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from benchmark import __version__
from benchmark.errors import InputError

logger = logging.getLogger("poisonbench")

CACHE_ENV = "POISONBENCH_CACHE_DIR"


def _default_cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path.home() / ".cache" / "poisonbench"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poisonbench",
        description="Benchmark poison detectors for instruction fine-tuning.",
    )
    parser.add_argument("--version", action="version", version=f"poisonbench {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level of the library's messages (default INFO)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run", help="run one experiment end to end (the built-in default without --config)"
    )
    run.add_argument("--config", type=Path, help="YAML experiment config; flags override it")
    run.add_argument(
        "--data-dir",
        help=f"folder holding sst2/train.tsv and sst2/test.tsv (or set ${'POISONBENCH_DATA_DIR'}); "
        "without it SST-2 is loaded from the Hugging Face hub",
    )
    run.add_argument(
        "--output-dir",
        type=Path,
        default=Path("poisonbench-results"),
        help="folder for results.json, results.md and recovery.png",
    )
    run.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help=f"folder for EK-FAC factors (default ${CACHE_ENV} or ~/.cache/poisonbench)",
    )
    run.add_argument("--seed", type=int, help="seed of every random choice (default 0)")
    run.add_argument(
        "--ratio", type=float, help="poison ratio, a fraction in (0, 1) (default 0.03)"
    )
    run.add_argument("--n-train", type=int, help="training examples sampled (default 1000)")
    run.add_argument(
        "--model",
        help="victim: 'minilm', 'tiny-bert', 'tiny-causal', 'tiny-t5', a local model folder "
        "or a hub id",
    )
    run.add_argument(
        "--detectors", help="comma-separated detector names (see 'poisonbench list detectors')"
    )

    _add_scan_parser(commands)
    _add_sweep_parsers(commands)
    _add_leaderboard_parsers(commands)

    listing = commands.add_parser("list", help="list registered attacks, detectors or transforms")
    listing.add_argument("kind", choices=["attacks", "detectors", "transforms"])
    return parser


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {value!r}") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}")
    return number


def _add_sweep_parsers(commands) -> None:
    from benchmark.runner.sweep_cli import add_sweep_commands

    add_sweep_commands(commands)


def _add_leaderboard_parsers(commands) -> None:
    from leaderboard.cli import add_leaderboard_commands

    add_leaderboard_commands(commands)


def _add_scan_parser(commands) -> None:
    from benchmark.data.formats import AUTO, FORMATS
    from benchmark.scan.options import DEFAULT_SCAN_DETECTORS

    scan = commands.add_parser(
        "scan",
        help="scan your own fine-tuning file for poisons and candidate trigger phrases",
        description="Fine-tune a victim on DATA_FILE, rank every example by suspicion with "
        "the chosen detectors, and write scan.csv, report.md and report.html.",
    )
    scan.add_argument("data_file", type=Path, metavar="DATA_FILE", help="the file to scan")
    scan.add_argument(
        "--format",
        dest="data_format",
        default=AUTO,
        choices=[AUTO, *FORMATS],
        help="layout of DATA_FILE and of --queries (default auto: from the extension, "
        "else from the first line)",
    )
    scan.add_argument(
        "--model",
        default="minilm",
        help="victim: 'minilm' (default), 'tiny-bert', 'tiny-causal', 'tiny-t5', or an "
        "encoder, causal-LM or seq2seq model folder or hub id",
    )
    scan.add_argument(
        "--detectors",
        default=",".join(DEFAULT_SCAN_DETECTORS),
        help="comma-separated detector names, blind or clean-queries track (default: "
        f"{','.join(DEFAULT_SCAN_DETECTORS)})",
    )
    scan.add_argument(
        "--queries",
        type=Path,
        dest="queries_file",
        help="clean query file in the same layout, for clean-queries detectors (default: a "
        "seeded 10%% sample of DATA_FILE, at most 100 examples)",
    )
    scan.add_argument(
        "--n-queries",
        type=_positive_int,
        help="number of queries to draw from DATA_FILE or from --queries (default: 10%% of "
        "DATA_FILE, at most 100; all of --queries)",
    )
    scan.add_argument(
        "--output-dir",
        type=Path,
        default=Path("poisonbench-scan"),
        help="folder for scan.csv, report.md and report.html (default poisonbench-scan)",
    )
    scan.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="skip malformed rows, log them and list them in the report, instead of stopping",
    )
    scan.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    scan.add_argument(
        "--epochs", type=_positive_int, default=3, help="fine-tuning epochs (default 3)"
    )
    scan.add_argument(
        "--max-length",
        type=_positive_int,
        default=64,
        help="maximum input length in tokens, instruction included (default 64, at least 8)",
    )
    scan.add_argument(
        "--learning-rate",
        type=_positive_float,
        default=1e-4,
        help="AdamW learning rate of fine-tuning (default 1e-4)",
    )
    scan.add_argument(
        "--tracked-modules",
        default="",
        help="comma-separated regular expressions over module names whose nn.Linear layers "
        "influence is computed on (default: every nn.Linear)",
    )
    scan.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help=f"folder for EK-FAC factors (default ${CACHE_ENV} or ~/.cache/poisonbench)",
    )


def _scan(args: argparse.Namespace) -> int:
    import re

    from benchmark.scan.options import ScanOptions
    from benchmark.scan.report import write_scan_outputs
    from benchmark.scan.runner import run_scan

    if args.max_length < 8:
        raise InputError(f"--max-length must be at least 8 tokens, got {args.max_length}")
    tracked_modules = tuple(
        pattern.strip() for pattern in args.tracked_modules.split(",") if pattern.strip()
    )
    for pattern in tracked_modules:
        try:
            re.compile(pattern)
        except re.error as error:
            raise InputError(
                f"--tracked-modules: invalid regular expression {pattern!r} ({error})"
            ) from None
    options = ScanOptions(
        data_file=args.data_file,
        data_format=args.data_format,
        model=args.model,
        # dict.fromkeys drops repeated names and keeps the order.
        detectors=tuple(
            dict.fromkeys(name.strip() for name in args.detectors.split(",") if name.strip())
        ),
        queries_file=args.queries_file,
        n_queries=args.n_queries,
        skip_bad_rows=args.skip_bad_rows,
        seed=args.seed,
        epochs=args.epochs,
        max_length=args.max_length,
        learning_rate=args.learning_rate,
        tracked_modules=tracked_modules,
        cache_dir=args.cache_dir or _default_cache_dir(),
    )
    result = run_scan(options)
    paths = write_scan_outputs(result, args.output_dir)
    strong = [phrase.text for phrase in result.strong_phrases]
    print(
        f"Scanned {len(result.data.dataset)} examples; "
        + (
            f"strongly over-represented phrases among suspects: {', '.join(strong)}"
            if strong
            else "no strongly over-represented phrase among suspects"
        )
    )
    print("Wrote " + ", ".join(str(path) for path in paths))
    return 0


def _run(args: argparse.Namespace) -> int:
    from benchmark.runner.config import load_config

    overrides = {}
    if args.data_dir is not None:
        overrides["data.data_dir"] = args.data_dir
    if args.seed is not None:
        overrides["seed"] = args.seed
        overrides["training.seed"] = args.seed
    if args.ratio is not None:
        overrides["attack.ratio"] = args.ratio
    if args.n_train is not None:
        overrides["data.n_train"] = args.n_train
    if args.model is not None:
        overrides["model"] = args.model
    if args.detectors is not None:
        overrides["detectors"] = [
            name.strip() for name in args.detectors.split(",") if name.strip()
        ]
    config = load_config(args.config, overrides)
    _check_names(config)

    from benchmark.runner.pipeline import run_experiment
    from benchmark.runner.report import terminal_report, write_reports

    cache_dir = args.cache_dir or _default_cache_dir()
    result = run_experiment(config, cache_dir)
    paths = write_reports(result, args.output_dir)
    print(terminal_report(result))
    print()
    print("Wrote " + ", ".join(str(path) for path in paths))
    return 0


def _check_names(config) -> None:
    """Reject unknown component names before any expensive stage starts."""
    import attacks
    import baselines  # noqa: F401
    import benchmark.transforms
    from detectors.base import DETECTORS

    if config.attack.name not in attacks.ATTACKS:
        raise InputError(
            f"unknown attack {config.attack.name!r}; see 'poisonbench list attacks' "
            f"({', '.join(attacks.ATTACKS.names())})"
        )
    for name in config.detectors:
        if name not in DETECTORS:
            raise InputError(
                f"unknown detector {name!r}; see 'poisonbench list detectors' "
                f"({', '.join(DETECTORS.names())})"
            )
    for name in config.queries.transforms:
        if name not in benchmark.transforms.TRANSFORMS:
            raise InputError(f"unknown transform {name!r}; see 'poisonbench list transforms'")


def _list(kind: str) -> int:
    from tabulate import tabulate

    if kind == "attacks":
        from attacks import ATTACKS

        rows = [(name, cls.description) for name, cls in ATTACKS]
        headers = ["attack", "description"]
    elif kind == "detectors":
        import baselines  # noqa: F401
        import detectors  # noqa: F401
        from detectors.base import DETECTORS

        rows = [(name, cls.track, cls.description) for name, cls in DETECTORS]
        headers = ["detector", "track", "description"]
    else:
        from benchmark.transforms import TRANSFORMS

        rows = [
            (name, cls.category, "yes" if cls.inverts_label else "no", cls.description)
            for name, cls in TRANSFORMS
        ]
        headers = ["transform", "category", "inverts label", "description"]
    print(tabulate(rows, headers=headers, tablefmt="simple"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "scan":
            return _scan(args)
        if args.command in ("sweep", "run-cell"):
            from benchmark.runner.sweep_cli import run_sweep_command

            return run_sweep_command(args, _default_cache_dir())
        if args.command == "leaderboard":
            from leaderboard.cli import run_leaderboard_command

            return run_leaderboard_command(args, _default_cache_dir())
        if args.command == "reproduce":
            from leaderboard.cli import run_reproduce_command

            return run_reproduce_command(args, _default_cache_dir())
        return _list(args.kind)
    except InputError as error:
        print(f"poisonbench: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
