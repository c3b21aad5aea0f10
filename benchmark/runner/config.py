"""Configuration of one end-to-end experiment (a single cell of a sweep)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.config_io import from_mapping, load_yaml
from benchmark.errors import InputError
from benchmark.influence import InfluenceConfig
from benchmark.models import FAMILIES, PROMPT_TEMPLATES, TrainingConfig

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
LORA_FIELDS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_target_modules")


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
class VictimConfig:
    """Options of the victim model that ``model`` names.

    ``family`` None detects the family ("encoder", "causal" or "seq2seq") from the preset
    or the model's ``config.json``. The other fields configure causal and seq2seq victims
    (see :class:`benchmark.models.CausalLMClassifier`): the prompt ``template``, one
    ``verbalizers`` answer text per label (None: each label name after a space), and LoRA.
    ``lora_alpha`` None means twice ``lora_rank``, and ``lora_target_modules`` None picks the
    attention projections of known model types and peft's "all-linear" otherwise. An
    encoder victim takes none of these options, so they must keep their defaults there.
    """

    family: str | None = None
    template: str = "natural-instructions"
    verbalizers: tuple[str, ...] | None = None
    lora: bool = False
    lora_rank: int = 8
    lora_alpha: float | None = None
    lora_dropout: float = 0.0
    lora_target_modules: tuple[str, ...] | str | None = None

    def __post_init__(self) -> None:
        if self.family is not None and self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES} or null, got {self.family!r}")
        if self.template not in PROMPT_TEMPLATES:
            raise ValueError(f"template must be one of {PROMPT_TEMPLATES}, got {self.template!r}")
        if self.verbalizers is not None:
            if len(self.verbalizers) < 2:
                raise ValueError(
                    f"verbalizers must list one answer text per label (at least 2), "
                    f"got {list(self.verbalizers)}"
                )
            if any(not verbalizer.strip() for verbalizer in self.verbalizers):
                raise ValueError(
                    f"verbalizers must not be empty or blank, got {list(self.verbalizers)}"
                )
        if self.lora_rank < 1:
            raise ValueError(f"lora_rank must be at least 1, got {self.lora_rank}")
        if self.lora_alpha is not None and self.lora_alpha <= 0:
            raise ValueError(f"lora_alpha must be positive or null, got {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must lie in [0, 1), got {self.lora_dropout}")
        if self.lora_target_modules is not None and len(self.lora_target_modules) == 0:
            raise ValueError("lora_target_modules must name at least one module, or be null")
        if not self.lora:
            set_lora_fields = [name for name in self.changed_fields() if name in LORA_FIELDS]
            if set_lora_fields:
                raise ValueError(
                    f"{', '.join(set_lora_fields)} is set but lora is false; set lora: true "
                    "or remove the LoRA options"
                )

    def options(self) -> dict[str, Any]:
        """Return every field except ``family`` as keyword arguments of ``build_victim``."""
        values = {item.name: getattr(self, item.name) for item in dataclasses.fields(self)}
        values.pop("family")
        return values

    def changed_fields(self) -> list[str]:
        """Return the names of the fields that differ from their defaults."""
        return [
            item.name
            for item in dataclasses.fields(self)
            if getattr(self, item.name) != item.default
        ]


@dataclass(frozen=True)
class ExperimentConfig:
    """One end-to-end run: data, attack, victim, influence, detectors and recovery.

    ``model`` is a preset ("minilm", "tiny-bert", "tiny-causal", "tiny-t5"), a local model
    folder or a hub id, and ``victim`` contains the options of that model's victim.
    """

    data: DataConfig = field(default_factory=DataConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    model: str = "minilm"
    victim: VictimConfig = field(default_factory=VictimConfig)
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
