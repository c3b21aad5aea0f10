"""The end-to-end experiment: poison, fine-tune, measure, influence, detect, recover.

The stages themselves live in :class:`benchmark.runner.experiment.Experiment`, which a
sweep runs through a stage cache; :func:`run_experiment` runs them all without one.
"""

from __future__ import annotations

import logging
import platform
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmark import __version__
from benchmark.data import TextDataset
from benchmark.errors import InputError
from benchmark.metrics import attack_success_rate, clean_accuracy
from benchmark.models import EncoderClassifier
from benchmark.runner.config import ExperimentConfig, VictimConfig

logger = logging.getLogger(__name__)


@dataclass
class AttackOutcome:
    """Clean accuracy and ASR (fractions in 0..1) of one trained model."""

    clean_accuracy: float
    attack_success_rate: float
    n_test: int
    n_triggered: int


@dataclass
class ExperimentResult:
    """Everything one run measured; ``as_dict`` is what results.json stores."""

    config: dict[str, Any]
    environment: dict[str, str]
    poisoning: dict[str, Any]
    poisoned_model: AttackOutcome
    queries: dict[str, Any]
    influence: dict[str, Any]
    detectors: list[dict[str, Any]]
    recovery: list[dict[str, Any]]
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class StageTimer:
    """Record the wall time of named stages and log their starts and ends.

    A stage entered inside another (influence scores computed lazily during detection) is
    charged to the inner stage only, so the totals add up to the run's wall time.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._child_seconds: list[float] = []

    @contextmanager
    def stage(self, name: str):
        logger.info("Stage %s: started", name)
        start = time.perf_counter()
        self._child_seconds.append(0.0)
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            nested = self._child_seconds.pop()
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed - nested
            if self._child_seconds:
                self._child_seconds[-1] += elapsed
            logger.info("Stage %s: finished in %.1f s", name, elapsed - nested)


def _environment() -> dict[str, str]:
    import torch
    import transformers

    return {
        "poisonbench": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
    }


def evaluate_attack(
    victim: EncoderClassifier,
    test: TextDataset,
    triggered_texts: list[str],
    target_label: int,
) -> AttackOutcome:
    """Measure clean accuracy on ``test`` and ASR on the pre-built triggered inputs."""
    accuracy = clean_accuracy(victim.predict(test.texts), np.array(test.labels))
    asr = attack_success_rate(victim.predict(triggered_texts), target_label)
    return AttackOutcome(accuracy, asr, len(test), len(triggered_texts))


def build_victim(config: ExperimentConfig, train: TextDataset) -> EncoderClassifier:
    """Build the victim that ``config`` names, untrained, for the labels of ``train``.

    The model family (encoder, causal LM, seq2seq) is ``config.victim.family`` or comes
    from the preset or the model's config. ``config.victim`` sets the prompt template,
    verbalizers and LoRA of generative victims.

    Raises:
        InputError: when the victim options do not fit the model, for example LoRA on an
            encoder victim or a verbalizer count other than the number of labels.
    """
    from benchmark.models.factory import build_victim as build_from_spec

    try:
        return build_from_spec(
            config.model,
            len(train.label_names),
            train.definition,
            train.label_names,
            max_length=config.training.max_length,
            seed=config.training.seed,
            family=config.victim.family,
            **config.victim.options(),
        )
    except InputError:
        raise
    except ValueError as error:
        raise InputError(
            f"model {config.model!r} with the victim options "
            f"{_describe_victim(config.victim)}: {error}"
        ) from None


def _describe_victim(victim: VictimConfig) -> str:
    changed = victim.changed_fields()
    if not changed:
        return "(all defaults)"
    return ", ".join(f"victim.{name}={getattr(victim, name)!r}" for name in changed)


def train_victim(config: ExperimentConfig, train: TextDataset) -> tuple[EncoderClassifier, Any]:
    victim = build_victim(config, train)
    history = victim.fit(train.texts, train.labels, config.training)
    return victim, history


def run_experiment(config: ExperimentConfig, cache_dir: str | Path) -> ExperimentResult:
    """Run every stage of one experiment and return its measurements.

    Only the EK-FAC factors are cached (under ``cache_dir``); sweeps cache every stage.
    """
    from benchmark.runner.experiment import Experiment  # it imports this module

    return Experiment(config, cache_dir).result()
