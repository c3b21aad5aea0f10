"""Configuration of one end-to-end experiment (a single cell of a sweep)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.config_io import from_mapping, load_yaml
from benchmark.errors import InputError
from benchmark.influence import InfluenceConfig
from benchmark.models import TrainingConfig

DEFAULT_TRANSFORMS = (
    "prefix_negation",
    "antonym_substitution",
    "paraphrase",
    "question_negation",
    "grammatical_negation",
    "clause_reordering",
)
DEFAULT_DETECTORS = (
    "transform-variance",
    "transform-voting",
    "transform-voting-majority",
    "single-prefix-negation",
    "single-antonym-substitution",
    "single-paraphrase",
    "single-question-negation",
    "single-grammatical-negation",
    "single-clause-reordering",
    "loss",
    "loss-epochs",
    "raw-influence",
    "spectral-signature",
    "activation-clustering",
    "strip",
    "random",
    "oracle-triggered-influence",
)
RECOVERY_DETECTORS = ("transform-variance", "transform-voting", "single-prefix-negation", "loss")


@dataclass(frozen=True)
class DataConfig:
    """Data set name, folder and the number of examples to use."""

    dataset: str = "sst2"
    data_dir: str | None = None
    n_train: int = 1000
    n_test: int | None = None

    def __post_init__(self) -> None:
        if self.dataset != "sst2":
            raise ValueError(
                f"dataset must be 'sst2' (the only one wired in so far), got {self.dataset!r}"
            )
        if self.n_train < 10:
            raise ValueError(f"n_train must be at least 10, got {self.n_train}")
        if self.n_test is not None and self.n_test < 1:
            raise ValueError(f"n_test must be positive or null, got {self.n_test}")


@dataclass(frozen=True)
class AttackConfig:
    """The attack, its poison ratio (a fraction in (0, 1)), trigger and target label.

    ``trigger`` None keeps the attack's own default ("James Bond" for the NER attacks; the
    token list, sentence or template of the other families).
    """

    name: str = "ner-dirty"
    ratio: float = 0.03
    trigger: str | None = None
    target_label: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.ratio < 1:
            raise ValueError(f"poison ratio must lie in (0, 1), got {self.ratio}")


@dataclass(frozen=True)
class QueryConfig:
    """The clean query set drawn from the test split, and its transforms."""

    n_queries: int = 50
    transforms: tuple[str, ...] = DEFAULT_TRANSFORMS

    def __post_init__(self) -> None:
        if self.n_queries < 2:
            raise ValueError(f"n_queries must be at least 2, got {self.n_queries}")


@dataclass(frozen=True)
class ExperimentConfig:
    """One end-to-end run: data, attack, victim, influence, detectors and recovery."""

    data: DataConfig = field(default_factory=DataConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    model: str = "minilm"
    training: TrainingConfig = field(default_factory=TrainingConfig)
    queries: QueryConfig = field(default_factory=QueryConfig)
    influence: InfluenceConfig = field(default_factory=InfluenceConfig)
    detectors: tuple[str, ...] = DEFAULT_DETECTORS
    recovery_detectors: tuple[str, ...] = RECOVERY_DETECTORS
    seed: int = 0


def load_config(
    path: str | Path | None, overrides: dict[str, Any] | None = None
) -> ExperimentConfig:
    """Load an experiment config from YAML (or the defaults) and apply dotted-key overrides.

    ``overrides`` maps dotted keys such as ``"attack.ratio"`` to values; they win over the
    file, as command-line flags do.
    """
    values: dict[str, Any] = load_yaml(path) if path is not None else {}
    where = str(path) if path is not None else "command line"
    for dotted_key, value in (overrides or {}).items():
        node = values
        parts = dotted_key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise InputError(f"{where}: key {part} must be a mapping")
        node[parts[-1]] = value
    return from_mapping(
        ExperimentConfig, values, where if not overrides else f"{where} (with flags)"
    )


def flatten_config(config: ExperimentConfig) -> dict[str, Any]:
    """Return every field of ``config`` under its dotted key, e.g. ``"attack.ratio"``.

    Tuples become lists, so the result is JSON-serialisable as it is.
    """
    flat: dict[str, Any] = {}

    def visit(value: Any, prefix: str) -> None:
        if dataclasses.is_dataclass(value):
            for item in dataclasses.fields(value):
                visit(getattr(value, item.name), f"{prefix}{item.name}.")
        else:
            flat[prefix[:-1]] = list(value) if isinstance(value, tuple) else value

    visit(config, "")
    return flat
