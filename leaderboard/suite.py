"""Versioned scenario suites: the fixed set of experiments that a leaderboard ranks on.

A suite file is a sweep file (see :mod:`benchmark.runner.sweep_config`) with one more
section, ``suite``, that names and versions it::

    suite:
      name: sst2-core
      version: "1.0"
      description: SST-2, seven attacks at 3%, three seeds.
    base: {...}
    axes: {...}

Every cell of the sweep is one scenario; its id is the cell name, for example
``sst2-ner-dirty-base-ratio0.03-seed0``. Results are comparable only between runs of the
same suite name and version, so a change to a shipped suite file must raise its version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.config_io import from_mapping, load_yaml
from benchmark.errors import InputError
from benchmark.runner.sweep_config import Cell, Sweep, sweep_from_mapping

SUITES_DIR = Path(__file__).resolve().parent / "suites"
"""Folder of the suite files shipped with poisonbench."""

DEFAULT_SUITE = "sst2-core"

_VERSION = re.compile(r"^\d+\.\d+$")


@dataclass(frozen=True)
class SuiteInfo:
    """The ``suite`` section: a name, a ``MAJOR.MINOR`` version and one line of description."""

    name: str
    version: str
    description: str = ""

    def __post_init__(self) -> None:
        if not re.match(r"^[A-Za-z0-9_.-]+$", self.name):
            raise ValueError(
                f"suite name {self.name!r} may contain only letters, digits, '.', '_' and '-'"
            )
        if not _VERSION.match(self.version):
            raise ValueError(f"suite version must look like '1.0', got {self.version!r}")

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"


@dataclass(frozen=True)
class Suite:
    """A validated suite: its name and version, and the sweep whose cells are its scenarios."""

    info: SuiteInfo
    sweep: Sweep

    @property
    def scenario_ids(self) -> tuple[str, ...]:
        return tuple(cell.name for cell in self.sweep.cells)

    def scenario(self, scenario_id: str) -> Cell:
        """Return the cell of ``scenario_id``; raise :class:`InputError` listing the ids."""
        for cell in self.sweep.cells:
            if cell.name == scenario_id:
                return cell
        raise InputError(
            f"unknown scenario {scenario_id!r} in suite {self.info.label}; its scenarios are: "
            + ", ".join(self.scenario_ids)
        )


def shipped_suites() -> list[str]:
    """Return the names of the suite files shipped with poisonbench, sorted."""
    return sorted(path.stem for path in SUITES_DIR.glob("*.yaml"))


def suite_path(name_or_path: str | Path) -> Path:
    """Return the file of a shipped suite name, or ``name_or_path`` itself if it is a file."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = SUITES_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    raise InputError(
        f"no suite file {str(name_or_path)!r}: pass a YAML file or one of the shipped suites "
        f"({', '.join(shipped_suites())})"
    )


def load_suite(name_or_path: str | Path, overrides: dict[str, Any] | None = None) -> Suite:
    """Load and validate a suite by shipped name or file path.

    ``overrides`` are dotted keys as for sweeps (``base.data.data_dir`` is the usual one).
    Errors name the file and the key.
    """
    path = suite_path(name_or_path)
    raw = load_yaml(path)
    if "suite" not in raw:
        raise InputError(
            f"{path}: key suite is missing; a suite file needs a section "
            "'suite: {name: ..., version: ...}' besides base and axes"
        )
    info = from_mapping(SuiteInfo, raw.pop("suite") or {}, str(path), prefix="suite.")
    sweep = sweep_from_mapping(raw, info.name, str(path), overrides)
    return Suite(info, sweep)
