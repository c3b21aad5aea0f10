"""Sweep files: a base experiment and the axes whose product gives the sweep's cells.

A sweep file is YAML with two sections::

    base:              # any keys of an experiment config (benchmark/runner/config.py)
      model: tiny-bert
      data: {n_train: 80}
    axes:
      datasets: [sst2]
      attacks: [ner-dirty]
      ratios: [0.01, 0.05]
      seeds: [0, 1]
      detectors: [transform-variance, loss]
      transform_sets: {all: [prefix_negation, paraphrase, clause_reordering]}
      holdout: [lexicon, semantic, structural]

Unknown keys and wrong types are rejected with the key's name and the file.
"""

from __future__ import annotations

import copy
import itertools
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmark.config_io import from_mapping, load_yaml
from benchmark.errors import InputError
from benchmark.runner.cache import hash_inputs
from benchmark.runner.config import ExperimentConfig, VictimConfig

logger = logging.getLogger(__name__)

SECTIONS = ("axes", "base", "suite")
"""Top-level sections. ``suite`` names a leaderboard suite (:mod:`leaderboard.suite`
validates it); sweeps ignore it, so a suite file also runs as a sweep."""

AXIS_OF_FIELD = {
    "data.dataset": "datasets",
    "attack.name": "attacks",
    "attack.ratio": "ratios",
    "seed": "seeds",
    "detectors": "detectors",
    "queries.transforms": "transform_sets",
}
"""Experiment fields that an axis sets in every cell; ``--set FIELD=VALUE`` narrows the axis."""

OVERRIDE_TRANSFORM_SET = "custom"
"""Name of the one transform set left by ``--set queries.transforms=[...]``."""

BASE_TRANSFORM_SET = "base"
"""Name of the transform set taken from ``base.queries.transforms`` when the axis is absent."""

_SET_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class SweepAxes:
    """Axes of a sweep: what varies between cells, and what runs inside every cell.

    Cells are the product of ``datasets``, ``attacks``, ``transform_sets``, ``ratios`` and
    ``seeds``, nested in that order (seeds vary fastest). An axis left out (None) takes the
    value of the ``base`` section. ``seeds`` set both ``seed`` and ``training.seed``.
    ``detectors`` run in every cell. ``transform_sets`` maps a name to the query transforms
    of that set. ``holdout`` lists transform categories. For each category the
    transform-ensemble detectors run again without that category's transforms, and their
    rows carry ``held_out_category``.
    """

    datasets: tuple[str, ...] | None = None
    attacks: tuple[str, ...] | None = None
    ratios: tuple[float, ...] | None = None
    seeds: tuple[int, ...] | None = None
    detectors: tuple[str, ...] | None = None
    transform_sets: dict[str, Any] | None = None
    holdout: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("datasets", "attacks", "ratios", "seeds", "detectors", "transform_sets"):
            values = getattr(self, name)
            if isinstance(values, (tuple, dict)) and not values:
                raise ValueError(f"{name} must not be empty; leave it out to use the base value")
        for name in ("datasets", "attacks", "ratios", "seeds", "detectors", "holdout"):
            values = getattr(self, name) or ()
            duplicates = sorted({str(v) for v in values if list(values).count(v) > 1})
            if duplicates:
                raise ValueError(f"{name} lists {', '.join(duplicates)} more than once")
        for index, ratio in enumerate(self.ratios or ()):
            if not 0 < ratio < 1:
                raise ValueError(f"ratios[{index}] must lie in (0, 1), got {ratio}")


@dataclass(frozen=True)
class Cell:
    """One experiment of a sweep.

    ``index`` is the cell's position in the sweep (the ``--cell`` of ``run-cell``).
    ``holdout`` lists the categories whose leave-one-category-out ensembles run in this
    cell: those with at least one transform in the cell's set and one outside it.
    """

    index: int
    name: str
    transform_set: str
    holdout: tuple[str, ...]
    config: ExperimentConfig

    @property
    def key(self) -> str:
        """Return a digest of the cell's settings, without the data folder's location."""
        settings = asdict(self.config)
        settings["data"].pop("data_dir")
        if self.config.victim == VictimConfig():
            # Cells written before the victim section existed keep their keys.
            settings.pop("victim")
        return hash_inputs(
            "cell",
            {
                "config": settings,
                "transform_set": self.transform_set,
                "holdout": list(self.holdout),
            },
        )[:12]


@dataclass(frozen=True)
class Sweep:
    """A validated sweep: the file it came from, its axes and its cells."""

    name: str
    source: str
    base: ExperimentConfig
    axes: SweepAxes
    cells: tuple[Cell, ...]

    def cell(self, index: int) -> Cell:
        if not 0 <= index < len(self.cells):
            raise InputError(
                f"cell {index} does not exist; {self.source} has {len(self.cells)} cells "
                f"(0-{len(self.cells) - 1}); see 'poisonbench sweep {self.source} --list-cells'"
            )
        return self.cells[index]


def parse_set_options(options: list[str]) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` strings; each value is read as YAML (``0.05``, ``[0, 1]``, ``null``)."""
    overrides: dict[str, Any] = {}
    for option in options:
        key, separator, text = option.partition("=")
        key = key.strip()
        if not separator or not key:
            raise InputError(
                f"invalid --set {option!r}: expected KEY=VALUE, e.g. attack.ratio=0.05"
            )
        try:
            overrides[key] = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise InputError(
                f"invalid --set {option!r}: the value is not valid YAML ({error})"
            ) from None
    return overrides


def _set_dotted(values: dict[str, Any], dotted_key: str, value: Any, where: str) -> None:
    node = values
    parts = dotted_key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise InputError(f"{where}: key {part} in {dotted_key} must be a mapping")
    node[parts[-1]] = value


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any], where: str) -> None:
    """Apply dotted-key overrides to a sweep mapping in place.

    ``axes.X`` and ``base.X`` address their section. A key without a section prefix
    addresses ``base``, except for the fields in :data:`AXIS_OF_FIELD`: those replace the
    axis by the one given value, so ``attack.ratio=0.05`` runs only ratio 0.05.
    """
    for key, value in overrides.items():
        if key.startswith(("axes.", "base.")):
            _set_dotted(raw, key, value, where)
            continue
        axis = AXIS_OF_FIELD.get(key)
        if axis is None:
            _set_dotted(raw, f"base.{key}", value, where)
        elif axis == "detectors":
            _set_dotted(raw, "axes.detectors", value, where)
        elif axis == "transform_sets":
            _set_dotted(raw, "axes.transform_sets", {OVERRIDE_TRANSFORM_SET: value}, where)
        else:
            _set_dotted(raw, f"axes.{axis}", [value], where)


def load_sweep(path: str | Path, overrides: dict[str, Any] | None = None) -> Sweep:
    """Load, override and validate a sweep file, and list its cells.

    Errors name the file and the key; component names (attacks, detectors, transforms,
    transform categories) are checked here, before any stage runs.
    """
    path = Path(path)
    return sweep_from_mapping(load_yaml(path), path.stem, str(path), overrides)


def sweep_from_mapping(
    raw: dict[str, Any], name: str, source: str, overrides: dict[str, Any] | None = None
) -> Sweep:
    """Validate the sections ``base`` and ``axes`` of a parsed sweep file and list its cells.

    ``source`` names the file in errors. A ``suite`` section is ignored here.
    """
    raw = copy.deepcopy(raw)
    where = f"{source} (with flags)" if overrides else source
    if overrides:
        apply_overrides(raw, overrides, where)

    raw.pop("suite", None)
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]}; allowed keys: {', '.join(SECTIONS)}")
    base_raw = raw.get("base") or {}
    base = from_mapping(ExperimentConfig, base_raw, where, prefix="base.")
    axes = from_mapping(SweepAxes, raw.get("axes") or {}, where, prefix="axes.")

    resolved = SweepAxes(
        datasets=axes.datasets or (base.data.dataset,),
        attacks=axes.attacks or (base.attack.name,),
        ratios=axes.ratios or (base.attack.ratio,),
        seeds=axes.seeds or (base.seed,),
        detectors=axes.detectors or base.detectors,
        transform_sets=_validate_transform_sets(axes.transform_sets, base, where),
        holdout=axes.holdout,
    )
    _check_component_names(resolved, axes, where)
    _check_holdout(resolved.holdout, resolved.detectors, where)
    cells = _build_cells(resolved, base_raw, where)
    return Sweep(name, source, base, resolved, cells)


def _validate_transform_sets(
    value: Any, base: ExperimentConfig, where: str
) -> dict[str, tuple[str, ...]]:
    if value is None:
        _check_transform_names(base.queries.transforms, "base.queries.transforms", where)
        return {BASE_TRANSFORM_SET: base.queries.transforms}
    if not isinstance(value, dict):
        raise InputError(
            f"{where}: key axes.transform_sets must be a mapping of set names to lists of "
            f"transforms, got {value!r}"
        )
    sets = {}
    for name, transforms in value.items():
        key = f"axes.transform_sets.{name}"
        if not isinstance(name, str) or not _SET_NAME.match(name):
            raise InputError(
                f"{where}: key {key}: a set name may contain only letters, digits, '.', '_' and '-'"
            )
        if not isinstance(transforms, list) or not transforms:
            raise InputError(
                f"{where}: key {key} must be a non-empty list of transforms, got {transforms!r}"
            )
        _check_transform_names(transforms, key, where)
        sets[name] = tuple(transforms)
    return sets


def _check_transform_names(transforms: Any, key: str, where: str) -> None:
    import benchmark.transforms  # noqa: F401  (registers the built-in transforms)
    from benchmark.transforms import TRANSFORMS

    for index, transform in enumerate(transforms):
        if not isinstance(transform, str):
            raise InputError(f"{where}: key {key}[{index}] must be a string, got {transform!r}")
        if transform not in TRANSFORMS:
            raise InputError(
                f"{where}: key {key}[{index}]: unknown transform {transform!r}; "
                f"see 'poisonbench list transforms' ({', '.join(TRANSFORMS.names())})"
            )


def _check_component_names(resolved: SweepAxes, written: SweepAxes, where: str) -> None:
    """Reject unknown attack and detector names; errors name the axis or the base key."""
    import attacks
    import baselines  # noqa: F401  (registers the baselines)
    import detectors  # noqa: F401  (registers the detectors)
    from detectors.base import DETECTORS

    attack_key = "axes.attacks" if written.attacks else "base.attack.name"
    for index, name in enumerate(resolved.attacks):
        if name not in attacks.ATTACKS:
            raise InputError(
                f"{where}: key {attack_key}[{index}]: unknown attack {name!r}; see "
                f"'poisonbench list attacks' ({', '.join(attacks.ATTACKS.names())})"
            )
    detector_key = "axes.detectors" if written.detectors else "base.detectors"
    for index, name in enumerate(resolved.detectors):
        if name not in DETECTORS:
            raise InputError(
                f"{where}: key {detector_key}[{index}]: unknown detector {name!r}; see "
                "'poisonbench list detectors'"
            )


def _check_holdout(holdout: tuple[str, ...], detectors: tuple[str, ...], where: str) -> None:
    from benchmark.runner.experiment import is_transform_ensemble
    from benchmark.transforms import CATEGORIES

    for index, category in enumerate(holdout):
        if category not in CATEGORIES:
            raise InputError(
                f"{where}: key axes.holdout[{index}]: unknown transform category "
                f"{category!r}; known: {', '.join(CATEGORIES)}"
            )
    if holdout and not any(is_transform_ensemble(name) for name in detectors):
        raise InputError(
            f"{where}: key axes.holdout needs a transform-ensemble detector "
            "(transform-variance, transform-voting, transform-voting-majority or "
            "transform-combined) among the detectors"
        )


def _detectors_for_set(
    detectors: tuple[str, ...], set_name: str, transforms: tuple[str, ...]
) -> tuple[str, ...]:
    """Drop single-transform detectors whose transform the set lacks, with a warning."""
    from detectors.base import DETECTORS
    from detectors.single_transform import SingleTransformDetector

    kept_detectors = []
    for name in detectors:
        cls = DETECTORS.get(name)
        if issubclass(cls, SingleTransformDetector) and cls.transform not in transforms:
            logger.warning(
                "Transform set %s lacks %s, so detector %s does not run in its cells",
                set_name,
                cls.transform,
                name,
            )
            continue
        kept_detectors.append(name)
    return tuple(kept_detectors)


def _holdout_for_set(holdout: tuple[str, ...], set_name: str, transforms: tuple[str, ...]):
    """Keep the categories with transforms both inside and outside the set, with a warning."""
    from benchmark.transforms import TRANSFORMS

    categories = [TRANSFORMS.get(name).category for name in transforms]
    kept_categories = []
    for category in holdout:
        if category not in categories:
            logger.warning(
                "Transform set %s has no %s transform; nothing to hold out for that category",
                set_name,
                category,
            )
        elif all(c == category for c in categories):
            logger.warning(
                "Transform set %s has only %s transforms; holding them out leaves none",
                set_name,
                category,
            )
        else:
            kept_categories.append(category)
    return tuple(kept_categories)


def _build_cells(axes: SweepAxes, base_raw: dict[str, Any], where: str) -> tuple[Cell, ...]:
    cells = []
    per_set = {
        name: (
            _detectors_for_set(axes.detectors, name, transforms),
            _holdout_for_set(axes.holdout, name, transforms),
        )
        for name, transforms in axes.transform_sets.items()
    }
    product = itertools.product(
        axes.datasets, axes.attacks, axes.transform_sets.items(), axes.ratios, axes.seeds
    )
    for index, (dataset, attack, (set_name, transforms), ratio, seed) in enumerate(product):
        detectors, holdout = per_set[set_name]
        values = copy.deepcopy(base_raw)
        _set_dotted(values, "data.dataset", dataset, where)
        _set_dotted(values, "attack.name", attack, where)
        _set_dotted(values, "attack.ratio", ratio, where)
        _set_dotted(values, "seed", seed, where)
        _set_dotted(values, "training.seed", seed, where)
        _set_dotted(values, "queries.transforms", list(transforms), where)
        _set_dotted(values, "detectors", list(detectors), where)
        name = f"{dataset}-{attack}-{set_name}-ratio{ratio:g}-seed{seed}"
        config = from_mapping(ExperimentConfig, values, f"{where} (cell {index}: {name})")
        cells.append(Cell(index, name, set_name, holdout, config))
    return tuple(cells)
