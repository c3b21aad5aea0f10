"""The end-to-end experiment: poison, fine-tune, measure, influence, detect, recover."""

from __future__ import annotations

import hashlib
import logging
import platform
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attacks import get_attack
from attacks.base import PoisonedDataset
from benchmark import __version__
from benchmark.context import DetectionContext
from benchmark.data import TextDataset, load_sst2
from benchmark.influence import InfluenceEngine
from benchmark.metrics import attack_success_rate, clean_accuracy, detection_metrics
from benchmark.models import EncoderClassifier
from benchmark.runner.config import ExperimentConfig
from benchmark.runner.queries import (
    TRIGGERED,
    build_clean_query_sets,
    build_triggered_query_set,
    sample_balanced,
)
from detectors.base import get_detector

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


def train_victim(config: ExperimentConfig, train: TextDataset) -> tuple[EncoderClassifier, Any]:
    victim = EncoderClassifier(
        config.model,
        len(train.label_names),
        train.definition,
        max_length=config.training.max_length,
        seed=config.training.seed,
    )
    history = victim.fit(train.texts, train.labels, config.training)
    return victim, history


def run_experiment(config: ExperimentConfig, cache_dir: str | Path) -> ExperimentResult:
    """Run every stage of one experiment and return its measurements."""
    timer = StageTimer()
    seed = config.seed

    with timer.stage("data"):
        full_train, test = load_sst2(config.data.data_dir)
        train = full_train.sample(config.data.n_train, seed)
        if config.data.n_test is not None:
            test = test.sample(config.data.n_test, seed)
        logger.info("Using %d training and %d test examples", len(train), len(test))

    with timer.stage("attack"):
        attack_params: dict[str, Any] = {"target_label": config.attack.target_label}
        if config.attack.trigger is not None:
            attack_params["trigger"] = config.attack.trigger
        attack = get_attack(config.attack.name, **attack_params)
        poisoned: PoisonedDataset = attack.poison(train, config.attack.ratio, seed)
        asr_inputs = [e.text for e in test.examples if e.label != attack.target_label]
        triggered_texts = attack.apply_trigger_batch(asr_inputs, seed)

    with timer.stage("fine-tuning"):
        victim, history = train_victim(config, poisoned.dataset)

    with timer.stage("attack metrics"):
        outcome = evaluate_attack(victim, test, triggered_texts, attack.target_label)
        logger.info(
            "Poisoned model: clean accuracy %.4f, ASR %.4f",
            outcome.clean_accuracy,
            outcome.attack_success_rate,
        )

    with timer.stage("queries"):
        queries = sample_balanced(test, config.queries.n_queries, seed)
        query_sets, infos, transform_outputs = build_clean_query_sets(
            queries, config.queries.transforms, seed
        )
        query_sets[TRIGGERED] = build_triggered_query_set(
            test, attack, config.queries.n_queries, seed
        )

    engine = InfluenceEngine(
        victim, poisoned.dataset.texts, poisoned.dataset.labels, config.influence, cache_dir
    )
    with timer.stage("influence factors"):
        engine.fit_factors()

    oracle_allowed = any(get_detector(name).track == "oracle" for name in config.detectors)
    scored: dict[str, np.ndarray] = {}

    def provide_influence(name: str) -> np.ndarray:
        # The first request scores every query set the run may use, in one training pass.
        if name not in scored:
            wanted = [s for key, s in query_sets.items() if key != TRIGGERED or oracle_allowed]
            with timer.stage("influence scores"):
                scored.update(engine.score_many([s for s in wanted if s.name not in scored]))
        return scored[name]

    context = DetectionContext(
        train=poisoned.dataset,
        victim=victim,
        epoch_losses=history.epoch_losses,
        influence_provider=provide_influence,
        query_sets=infos,
        seed=seed,
        oracle_query_set=TRIGGERED if oracle_allowed else None,
    )

    detector_rows = []
    results_by_name = {}
    for name in config.detectors:
        detector = get_detector(name)
        with timer.stage("detection"):
            result = detector.detect(context, name)
        metrics = detection_metrics(result.scores, result.flagged, poisoned.poison_mask)
        results_by_name[name] = result
        detector_rows.append(
            {
                "detector": name,
                "track": result.track,
                "seconds": result.seconds,
                **metrics.as_dict(),
            }
        )
        logger.info(
            "Detector %s: precision %.3f, recall %.3f, F1 %.3f, AUROC %.3f, %d flagged",
            name,
            metrics.precision,
            metrics.recall,
            metrics.f1,
            metrics.auroc,
            metrics.n_flagged,
        )

    recovery_rows = _recover(
        config, poisoned, results_by_name, test, triggered_texts, outcome, timer
    )

    return ExperimentResult(
        config=asdict(config),
        environment=_environment(),
        poisoning={
            "attack": config.attack.name,
            "n_train": len(train),
            "n_poisons": poisoned.n_poisons,
            "methods": poisoned.method_counts(),
            "fingerprint": poisoned.fingerprint(),
        },
        poisoned_model=outcome,
        queries={
            "n_queries": len(queries),
            "n_triggered": len(query_sets[TRIGGERED].texts),
            "changed": {name: out.n_changed for name, out in transform_outputs.items()},
        },
        influence={
            "factors_seconds": engine.timings.factors_seconds,
            "factors_cached": engine.timings.factors_cached,
            "scores_seconds": engine.timings.scores_seconds,
            "factors_key": engine.factors_key,
        },
        detectors=detector_rows,
        recovery=recovery_rows,
        stage_seconds=timer.seconds,
    )


def _recover(
    config: ExperimentConfig,
    poisoned: PoisonedDataset,
    results_by_name: dict,
    test: TextDataset,
    triggered_texts: list[str],
    before: AttackOutcome,
    timer: StageTimer,
) -> list[dict[str, Any]]:
    """Retrain without each recovery detector's flagged set; identical sets train once."""
    rows = []
    outcomes_by_mask: dict[str, AttackOutcome] = {}
    for name in config.recovery_detectors:
        if name not in results_by_name:
            logger.warning("Recovery skipped for %s: the detector did not run", name)
            continue
        flagged = results_by_name[name].flagged
        mask_key = hashlib.sha256(flagged.tobytes()).hexdigest()
        if not flagged.any():
            outcome = before
        elif mask_key in outcomes_by_mask:
            outcome = outcomes_by_mask[mask_key]
        else:
            keep = [e for e, drop in zip(poisoned.dataset.examples, flagged) if not drop]
            with timer.stage("recovery"):
                logger.info(
                    "Retraining without the %d examples flagged by %s", int(flagged.sum()), name
                )
                victim, _ = train_victim(config, poisoned.dataset.with_examples(keep))
                outcome = evaluate_attack(victim, test, triggered_texts, poisoned.target_label)
        outcomes_by_mask[mask_key] = outcome
        rows.append(
            {
                "detector": name,
                "n_removed": int(flagged.sum()),
                "n_poisons_removed": int((flagged & poisoned.poison_mask).sum()),
                "clean_accuracy_before": before.clean_accuracy,
                "asr_before": before.attack_success_rate,
                "clean_accuracy_after": outcome.clean_accuracy,
                "asr_after": outcome.attack_success_rate,
            }
        )
    return rows
