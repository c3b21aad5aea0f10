"""One experiment as stages computed on first use, each optionally stored in a stage cache."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from attacks import get_attack
from attacks.base import PoisonedDataset
from benchmark.context import DetectionContext
from benchmark.data import TextDataset, load_sst2
from benchmark.influence import InfluenceEngine, QuerySet
from benchmark.influence.engine import influence_key_fields
from benchmark.metrics import detection_metrics
from benchmark.models import EncoderClassifier
from benchmark.runner.artifacts import (
    PoisonStage,
    StoredQuerySet,
    TrainedModel,
    data_fingerprint,
    decode_detection,
    decode_poison_stage,
    decode_query_set,
    decode_trained_model,
    encode_detection,
    encode_poison_stage,
    encode_query_set,
    encode_trained_model,
    mask_digest,
)
from benchmark.runner.cache import (
    JSON,
    NUMPY,
    TORCH,
    CacheMissError,
    Codec,
    StageCache,
    hash_inputs,
)
from benchmark.runner.config import ExperimentConfig, VictimConfig
from benchmark.runner.pipeline import (
    AttackOutcome,
    ExperimentResult,
    StageTimer,
    _environment,
    build_victim,
    evaluate_attack,
    train_victim,
)
from benchmark.runner.queries import (
    ORIGINAL,
    TRIGGERED,
    build_clean_query_sets,
    build_triggered_query_set,
    sample_balanced,
)
from detectors.base import DetectionResult, detector_code_digest, get_detector
from detectors.transform_ensemble import (
    TransformCombinedDetector,
    TransformVarianceDetector,
    TransformVotingDetector,
)

logger = logging.getLogger(__name__)

ENSEMBLE_DETECTOR_CLASSES = (
    TransformVarianceDetector,
    TransformVotingDetector,
    TransformCombinedDetector,
)

PER_QUERY_INFLUENCE_STAGE = "influence_per_query"
"""Stage cache folder of per-query influence, one (n_queries, n_train) array per query set.

An entry covers the set's first ``n_queries`` queries, the number a detector requested.
"""


def is_transform_ensemble(name: str) -> bool:
    """Return True when detector ``name`` is a transform ensemble (variance, voting, combined)."""
    import baselines  # noqa: F401  (registers the baselines)
    import detectors  # noqa: F401  (registers the built-in detectors)
    from detectors.base import DETECTORS

    return issubclass(DETECTORS.get(name), ENSEMBLE_DETECTOR_CLASSES)


def uses_per_query_influence(name: str) -> bool:
    """Return True when detector ``name`` reads per-query influence.

    A detector class declares it with a class attribute ``uses_per_query_influence`` set
    to True. Its instances may set ``max_queries``, the number of leading queries of each
    set that they read (None: all).
    """
    import baselines  # noqa: F401  (registers the baselines)
    import detectors  # noqa: F401  (registers the built-in detectors)
    from detectors.base import DETECTORS

    return bool(getattr(DETECTORS.get(name), "uses_per_query_influence", False))


def restricted_ensemble(name: str, transforms: tuple[str, ...]):
    """Instantiate the transform-ensemble detector ``name`` using only ``transforms``."""
    detector = get_detector(name)
    if not isinstance(detector, ENSEMBLE_DETECTOR_CLASSES):
        raise ValueError(
            f"detector {name} is not a transform ensemble; it cannot hold out transforms"
        )
    # Every ensemble class reads ``self.transforms`` when scoring; the majority-voting
    # subclass does not accept it as a constructor argument, so it is set here.
    detector.transforms = tuple(transforms)
    return detector


class Experiment:
    """One experiment as stages that are computed on first use, optionally through a cache.

    Without ``stage_cache`` every stage is computed in memory, as ``poisonbench run`` does.
    With one, each stage output is stored under a key derived from the configuration fields
    that the stage reads and the keys of the stages it builds on. Experiments that share
    those inputs (another detector list, another transform set, a re-run) read it back.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        cache_dir: str | Path,
        stage_cache: StageCache | None = None,
        timer: StageTimer | None = None,
    ):
        self.config = config
        self.cache_dir = Path(cache_dir)
        self.stage_cache = stage_cache
        self.timer = timer or StageTimer()
        self._values: dict[tuple[str, ...], Any] = {}
        self._attack = None
        self._engine: InfluenceEngine | None = None
        self._context: DetectionContext | None = None

    # -- cache keys -----------------------------------------------------------------------
    @cached_property
    def poisoned_key(self) -> str:
        config = self.config
        inputs: dict[str, Any] = {
            "data": data_fingerprint(config.data.data_dir),
            "dataset": config.data.dataset,
            "n_train": config.data.n_train,
            "n_test": config.data.n_test,
            "attack": asdict(config.attack),
            "seed": config.seed,
        }
        # Revision 1 adds nothing, so keys from before revisions existed stay valid.
        if self.attack().revision > 1:
            inputs["attack_revision"] = self.attack().revision
        return hash_inputs("poisoned", inputs)

    def _victim_inputs(self) -> dict[str, Any]:
        """Return the model, training and victim fields that a trained model depends on.

        The victim section enters only when it differs from the defaults, so models cached
        before the section existed keep their keys.
        """
        inputs: dict[str, Any] = {
            "model": self.config.model,
            "training": asdict(self.config.training),
        }
        if self.config.victim != VictimConfig():
            inputs["victim"] = asdict(self.config.victim)
        return inputs

    @cached_property
    def model_key(self) -> str:
        # NOTE: a local model folder is keyed by its path, not its content.
        return hash_inputs("model", {"poisoned": self.poisoned_key, **self._victim_inputs()})

    @cached_property
    def attack_metrics_key(self) -> str:
        return hash_inputs("attack_metrics", {"model": self.model_key})

    def query_key(self, name: str) -> str:
        # One key per set, independent of the other transforms, so transform sets share it.
        return hash_inputs(
            "queries",
            {
                "poisoned": self.poisoned_key,
                "n_queries": self.config.queries.n_queries,
                "seed": self.config.seed,
                "set": name,
            },
        )

    def influence_key(self, name: str) -> str:
        return hash_inputs(
            "influence",
            {
                "model": self.model_key,
                "queries": self.query_key(name),
                "influence": influence_key_fields(self.config.influence),
            },
        )

    def per_query_influence_key(self, name: str, n_queries: int) -> str:
        """Return the key of the per-query influence on the first ``n_queries`` of set ``name``."""
        return hash_inputs(
            PER_QUERY_INFLUENCE_STAGE,
            {
                "model": self.model_key,
                "queries": self.query_key(name),
                "n_queries": n_queries,
                "influence": influence_key_fields(self.config.influence),
            },
        )

    def detection_key(self, name: str, held_out_category: str | None) -> str:
        track = get_detector(name).track
        visible: list[str] = []
        if track != "blind":
            visible = list(self.clean_set_names())
        if track == "oracle":
            visible.append(TRIGGERED)
        inputs = {
            "model": self.model_key,
            "detector": name,
            "seed": self.config.seed,
            "influence": [self.influence_key(set_name) for set_name in visible],
            "held_out_category": held_out_category,
            "transforms": None
            if held_out_category is None
            else list(self.kept_transforms(held_out_category)),
        }
        if uses_per_query_influence(name):
            # Only detectors that read per-query influence get this field, so the keys of
            # the others stay as they were before it existed.
            max_queries = getattr(get_detector(name), "max_queries", None)
            inputs["per_query_influence"] = [
                self.per_query_influence_key(set_name, self.per_query_count(set_name, max_queries))
                for set_name in self.clean_set_names()
            ]
        code = detector_code_digest(name)
        if code is not None:  # plug-in detectors only; built-in keys stay as they were
            inputs["code"] = code
        return hash_inputs("detection", inputs)

    def recovery_key(self, flagged: np.ndarray) -> str:
        return hash_inputs(
            "recovery",
            {
                "poisoned": self.poisoned_key,
                **self._victim_inputs(),
                "removed": mask_digest(flagged),
            },
        )

    def _stage(
        self,
        memo_key: tuple[str, ...],
        key: Callable[[], str],
        codec: Codec,
        compute: Callable[[], Any],
        encode: Callable[[Any], Any] = lambda value: value,
        decode: Callable[[Any], Any] = lambda raw: raw,
    ) -> Any:
        """Return a stage output from memory, the cache, or ``compute`` (then stored)."""
        if memo_key not in self._values:
            if self.stage_cache is None:
                value = compute()
            else:
                value = self.stage_cache.fetch_or_compute(
                    memo_key[0], key(), codec, compute, encode, decode
                )
            self._values[memo_key] = value
        return self._values[memo_key]

    # -- data, attack and fine-tuning -----------------------------------------------------
    def attack(self):
        if self._attack is None:
            params: dict[str, Any] = {"target_label": self.config.attack.target_label}
            if self.config.attack.trigger is not None:
                params["trigger"] = self.config.attack.trigger
            self._attack = get_attack(self.config.attack.name, **params)
        return self._attack

    def poison_stage(self) -> PoisonStage:
        return self._stage(
            ("poisoned",),
            lambda: self.poisoned_key,
            JSON,
            self._compute_poison_stage,
            encode_poison_stage,
            decode_poison_stage,
        )

    def _compute_poison_stage(self) -> PoisonStage:
        config, seed = self.config, self.config.seed
        with self.timer.stage("data"):
            full_train, test = load_sst2(config.data.data_dir)
            train = full_train.sample(config.data.n_train, seed)
            if config.data.n_test is not None:
                test = test.sample(config.data.n_test, seed)

        with self.timer.stage("attack"):
            attack = self.attack()
            poisoned: PoisonedDataset = attack.poison(train, config.attack.ratio, seed)
            asr_inputs = [e.text for e in test.examples if e.label != attack.target_label]
            triggered_texts = attack.apply_trigger_batch(asr_inputs, seed)
        return PoisonStage(poisoned, test, tuple(triggered_texts), len(train))

    def trained_model(self) -> TrainedModel:
        return self._stage(
            ("model",),
            lambda: self.model_key,
            TORCH,
            self._compute_trained_model,
            encode_trained_model,
            decode_trained_model,
        )

    def _compute_trained_model(self) -> TrainedModel:
        train = self.poison_stage().poisoned.dataset
        with self.timer.stage("fine-tuning"):
            victim, history = train_victim(self.config, train)
        return TrainedModel(history=history, victim=victim)

    def victim(self) -> EncoderClassifier:
        """Return the fine-tuned victim, rebuilding it from cached weights when needed."""
        trained = self.trained_model()
        if trained.victim is None:
            victim = build_victim(self.config, self.poison_stage().poisoned.dataset)
            victim.load_state_dict(trained.state_dict)
            trained.victim, trained.state_dict = victim, None
        return trained.victim

    def attack_outcome(self) -> AttackOutcome:
        return self._stage(
            ("attack_metrics",),
            lambda: self.attack_metrics_key,
            JSON,
            self._compute_attack_outcome,
            asdict,
            lambda raw: AttackOutcome(**raw),
        )

    def _compute_attack_outcome(self) -> AttackOutcome:
        stage = self.poison_stage()
        victim = self.victim()
        with self.timer.stage("attack metrics"):
            return evaluate_attack(
                victim, stage.test, list(stage.triggered_texts), stage.poisoned.target_label
            )

    # -- queries and influence ------------------------------------------------------------
    def clean_set_names(self) -> tuple[str, ...]:
        return (ORIGINAL, *self.config.queries.transforms)

    @property
    def oracle_allowed(self) -> bool:
        return any(get_detector(name).track == "oracle" for name in self.config.detectors)

    def scored_set_names(self) -> tuple[str, ...]:
        """Names of the query sets whose influence the detectors may read."""
        return self.clean_set_names() + ((TRIGGERED,) if self.oracle_allowed else ())

    def query_set(self, name: str) -> StoredQuerySet:
        return self._stage(
            ("queries", name),
            lambda: self.query_key(name),
            JSON,
            lambda: self._compute_query_set(name),
            encode_query_set,
            decode_query_set,
        )

    def _query_sample(self) -> TextDataset:
        if ("query sample",) not in self._values:
            test = self.poison_stage().test
            self._values[("query sample",)] = sample_balanced(
                test, self.config.queries.n_queries, self.config.seed
            )
        return self._values[("query sample",)]

    def _compute_query_set(self, name: str) -> StoredQuerySet:
        seed, n_queries = self.config.seed, self.config.queries.n_queries
        with self.timer.stage("queries"):
            if name == TRIGGERED:
                test = self.poison_stage().test
                triggered = build_triggered_query_set(test, self.attack(), n_queries, seed)
                return StoredQuerySet(triggered, None, None)
            transforms = () if name == ORIGINAL else (name,)
            sets, infos, outputs = build_clean_query_sets(self._query_sample(), transforms, seed)
            n_changed = outputs[name].n_changed if name in outputs else None
            return StoredQuerySet(sets[name], infos[-1], n_changed)

    def engine(self) -> InfluenceEngine:
        if self._engine is None:
            train = self.poison_stage().poisoned.dataset
            self._engine = InfluenceEngine(
                self.victim(),
                train.texts,
                train.labels,
                self.config.influence,
                self.cache_dir,
                seed=self.config.seed,
            )
        return self._engine

    def influence_scores(self) -> dict[str, np.ndarray]:
        """Return the mean influence on every scored query set, each of shape (n_train,).

        Sets missing from memory and from the cache are scored together in one pass.
        """
        names = self.scored_set_names()
        missing = []
        for name in names:
            if ("influence", name) in self._values:
                continue
            cached = None
            if self.stage_cache is not None:
                cached = self.stage_cache.fetch("influence", self.influence_key(name), NUMPY)
            if cached is None:
                missing.append(name)
            else:
                self._values[("influence", name)] = cached

        if missing:
            if self.stage_cache is not None and self.stage_cache.read_only:
                raise CacheMissError(
                    f"no cached influence scores for query sets {missing} "
                    f"in {self.stage_cache.root}"
                )
            engine = self.engine()
            with self.timer.stage("influence factors"):
                engine.fit_factors()
            query_sets = [self.query_set(name).query_set for name in missing]
            with self.timer.stage("influence scores"):
                computed = engine.score_many(query_sets)
            for name in missing:
                self._values[("influence", name)] = computed[name]
                if self.stage_cache is not None:
                    self.stage_cache.store(
                        "influence", self.influence_key(name), NUMPY, computed[name]
                    )
        return {name: self._values[("influence", name)] for name in names}

    def per_query_count(self, name: str, max_queries: int | None) -> int:
        """Return how many leading queries of set ``name`` a ``max_queries`` request covers."""
        size = len(self.query_set(name).query_set.texts)
        return size if max_queries is None else min(size, max_queries)

    def per_query_influence_scores(self, max_queries: int | None = None) -> dict[str, np.ndarray]:
        """Score, or read back, the influence on the queries of every clean query set.

        Returns one array of shape (n_queries, n_train) per set name, for the set's first
        ``max_queries`` queries (None: all). Only detectors that read per-query influence
        call this, through the detection context. Sets missing from memory and from the
        cache are scored together, in as few training passes as the engine's memory budget
        allows.
        """
        names = self.clean_set_names()
        counts = {name: self.per_query_count(name, max_queries) for name in names}
        missing = []
        for name in names:
            memo_key = (PER_QUERY_INFLUENCE_STAGE, name, str(counts[name]))
            if memo_key in self._values:
                continue
            cached = None
            if self.stage_cache is not None:
                cached = self.stage_cache.fetch(
                    PER_QUERY_INFLUENCE_STAGE,
                    self.per_query_influence_key(name, counts[name]),
                    NUMPY,
                )
            if cached is None:
                missing.append(name)
            else:
                self._values[memo_key] = cached

        if missing:
            if self.stage_cache is not None and self.stage_cache.read_only:
                raise CacheMissError(
                    f"no cached per-query influence scores for query sets {missing} "
                    f"in {self.stage_cache.root}"
                )
            engine = self.engine()
            with self.timer.stage("influence factors"):
                engine.fit_factors()
            query_sets = []
            for name in missing:
                full = self.query_set(name).query_set
                count = counts[name]
                query_sets.append(QuerySet(name, full.texts[:count], full.labels[:count]))
            with self.timer.stage("per-query influence scores"):
                computed = engine.score_per_query(query_sets)
            for name in missing:
                self._values[(PER_QUERY_INFLUENCE_STAGE, name, str(counts[name]))] = computed[name]
                if self.stage_cache is not None:
                    self.stage_cache.store(
                        PER_QUERY_INFLUENCE_STAGE,
                        self.per_query_influence_key(name, counts[name]),
                        NUMPY,
                        computed[name],
                    )
        return {
            name: self._values[(PER_QUERY_INFLUENCE_STAGE, name, str(counts[name]))]
            for name in names
        }

    # -- detection and recovery -----------------------------------------------------------
    def detection_context(self) -> DetectionContext:
        if self._context is None:
            self._context = DetectionContext(
                train=self.poison_stage().poisoned.dataset,
                victim=self.victim(),
                epoch_losses=self.trained_model().history.epoch_losses,
                influence_provider=lambda name: self.influence_scores()[name],
                query_sets=tuple(self.query_set(name).info for name in self.clean_set_names()),
                seed=self.config.seed,
                oracle_query_set=TRIGGERED if self.oracle_allowed else None,
                per_query_influence_provider=lambda name, max_queries: (
                    self.per_query_influence_scores(max_queries)[name]
                ),
            )
        return self._context

    def kept_transforms(self, held_out_category: str) -> tuple[str, ...]:
        """Return the run's transforms outside ``held_out_category``, in config order."""
        import benchmark.transforms  # noqa: F401  (registers the built-in transforms)
        from benchmark.transforms import TRANSFORMS

        return tuple(
            name
            for name in self.config.queries.transforms
            if TRANSFORMS.get(name).category != held_out_category
        )

    def detect(self, name: str, held_out_category: str | None = None) -> DetectionResult:
        """Run detector ``name``; with ``held_out_category``, a transform ensemble without it."""
        return self._stage(
            ("detection", name, str(held_out_category)),
            lambda: self.detection_key(name, held_out_category),
            TORCH,
            lambda: self._compute_detection(name, held_out_category),
            encode_detection,
            decode_detection,
        )

    def _compute_detection(self, name: str, held_out_category: str | None) -> DetectionResult:
        if held_out_category is None:
            detector = get_detector(name)
        else:
            detector = restricted_ensemble(name, self.kept_transforms(held_out_category))
        context = self.detection_context()
        with self.timer.stage("detection"):
            return detector.detect(context, name)

    def detection_row(self, name: str, result: DetectionResult) -> dict[str, Any]:
        """Score a detector's output against the poison mask and log the metrics."""
        mask = self.poison_stage().poisoned.poison_mask
        metrics = detection_metrics(result.scores, result.flagged, mask)
        logger.info(
            "Detector %s: precision %.3f, recall %.3f, F1 %.3f, AUROC %.3f, %d flagged",
            name,
            metrics.precision,
            metrics.recall,
            metrics.f1,
            metrics.auroc,
            metrics.n_flagged,
        )
        return {
            "detector": name,
            "track": result.track,
            "seconds": result.seconds,
            **metrics.as_dict(),
        }

    def recovery_outcome(self, flagged: np.ndarray, detector: str) -> AttackOutcome:
        """Retrain without the ``flagged`` examples and measure the new model."""
        return self._stage(
            ("recovery", mask_digest(flagged)),
            lambda: self.recovery_key(flagged),
            JSON,
            lambda: self._compute_recovery(flagged, detector),
            asdict,
            lambda raw: AttackOutcome(**raw),
        )

    def _compute_recovery(self, flagged: np.ndarray, detector: str) -> AttackOutcome:
        stage = self.poison_stage()
        poisoned = stage.poisoned
        keep = [e for e, drop in zip(poisoned.dataset.examples, flagged) if not drop]
        with self.timer.stage("recovery"):
            logger.info(
                "Retraining without the %d examples flagged by %s", int(flagged.sum()), detector
            )
            victim, _ = train_victim(self.config, poisoned.dataset.with_examples(keep))
            return evaluate_attack(
                victim, stage.test, list(stage.triggered_texts), poisoned.target_label
            )

    def recovery_rows(
        self, results_by_name: dict[str, DetectionResult], before: AttackOutcome
    ) -> list[dict[str, Any]]:
        """Retrain without each recovery detector's flagged set; identical sets train once."""
        poisoned = self.poison_stage().poisoned
        rows = []
        for name in self.config.recovery_detectors:
            if name not in results_by_name:
                logger.warning("Recovery skipped for %s: the detector did not run", name)
                continue
            flagged = results_by_name[name].flagged
            if flagged.any():
                outcome = self.recovery_outcome(flagged, name)
            else:
                outcome = before
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

    # -- the whole run --------------------------------------------------------------------
    def needs_influence(self) -> bool:
        return any(get_detector(name).track != "blind" for name in self.config.detectors)

    def result(self) -> ExperimentResult:
        """Run (or read back) every stage and return the run's measurements."""
        config = self.config
        stage = self.poison_stage()
        poisoned = stage.poisoned
        logger.info("Using %d training and %d test examples", stage.n_train, len(stage.test))

        self.trained_model()
        outcome = self.attack_outcome()
        logger.info(
            "Poisoned model: clean accuracy %.4f, ASR %.4f",
            outcome.clean_accuracy,
            outcome.attack_success_rate,
        )

        query_sets = {name: self.query_set(name) for name in self.clean_set_names()}
        triggered = self.query_set(TRIGGERED)
        if self.needs_influence():
            self.influence_scores()

        detector_rows = []
        results_by_name = {}
        for name in config.detectors:
            results_by_name[name] = self.detect(name)
            detector_rows.append(self.detection_row(name, results_by_name[name]))
        recovery_rows = self.recovery_rows(results_by_name, outcome)

        timings = self._engine.timings if self._engine is not None else None
        return ExperimentResult(
            config=asdict(config),
            environment=_environment(),
            poisoning={
                "attack": config.attack.name,
                "n_train": stage.n_train,
                "n_poisons": poisoned.n_poisons,
                "methods": poisoned.method_counts(),
                "fingerprint": poisoned.fingerprint(),
            },
            poisoned_model=outcome,
            queries={
                "n_queries": len(query_sets[ORIGINAL].query_set.texts),
                "n_triggered": len(triggered.query_set.texts),
                "changed": {
                    name: stored.n_changed
                    for name, stored in query_sets.items()
                    if stored.n_changed is not None
                },
            },
            influence={
                "factors_seconds": timings.factors_seconds if timings else 0.0,
                "factors_cached": timings.factors_cached if timings else None,
                "scores_seconds": timings.scores_seconds if timings else {},
                "factors_key": self._engine.factors_key if self._engine else None,
                # Leading queries of each set that each per-query detector reads (None: all).
                "per_query_max_queries": {
                    name: getattr(get_detector(name), "max_queries", None)
                    for name in config.detectors
                    if uses_per_query_influence(name)
                },
            },
            detectors=detector_rows,
            recovery=recovery_rows,
            stage_seconds=self.timer.seconds,
        )
