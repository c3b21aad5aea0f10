"""The ``poisonbench`` command line: run experiments and list registered components."""

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
    run.add_argument("--model", help="victim: 'minilm', a local model folder or a hub id")
    run.add_argument(
        "--detectors", help="comma-separated detector names (see 'poisonbench list detectors')"
    )

    listing = commands.add_parser("list", help="list registered attacks, detectors or transforms")
    listing.add_argument("kind", choices=["attacks", "detectors", "transforms"])
    return parser


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
        return _list(args.kind)
    except InputError as error:
        print(f"poisonbench: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
