"""Scan a user's fine-tuning file: fine-tune a victim on it, run detectors, rank, find phrases.

Unlike an experiment, a scan has no poison mask and no trigger: it ranks every example of
the file by suspicion and reports which word n-grams the suspects share.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from benchmark.context import DetectionContext
from benchmark.data import TextDataset
from benchmark.data.formats import LoadedData, load_examples
from benchmark.errors import InputError
from benchmark.influence import InfluenceConfig, InfluenceEngine
from benchmark.models import EncoderClassifier, TrainingConfig, build_victim
from benchmark.runner.config import DEFAULT_TRANSFORMS
from benchmark.runner.pipeline import StageTimer
from benchmark.runner.queries import build_clean_query_sets, sample_balanced
from benchmark.scan.consensus import Consensus, consensus_ranking
from benchmark.scan.estimate import RunTimeEstimate, estimate_run_time, measure_step_seconds
from benchmark.scan.options import ScanOptions
from benchmark.scan.phrases import MIN_SUSPECT_COUNT, Phrase, candidate_phrases
from detectors.base import DETECTORS, DetectionResult, get_detector

logger = logging.getLogger(__name__)

QUERY_FRACTION = 0.1
MAX_HELD_OUT_QUERIES = 100
MIN_QUERIES = 2
SUSPECT_FALLBACK_FRACTION = 0.03
SUSPECT_FALLBACK_MIN = 10
CALIBRATION_BATCH = 32


@dataclass
class QuerySource:
    """Origin of the clean queries, for the report; ``dataset`` is None when none are needed."""

    description: str
    dataset: TextDataset | None = None
    bad_rows: tuple = ()


@dataclass
class ScanResult:
    """Everything a scan computed; the report module turns it into files."""

    options: ScanOptions
    data: LoadedData
    queries: QuerySource
    detections: dict[str, DetectionResult]
    consensus: Consensus
    suspects: np.ndarray
    suspect_rule: str
    phrases: list[Phrase]
    estimate: RunTimeEstimate
    mean_loss_per_epoch: list[float]
    victim_family: str
    stage_seconds: dict[str, float] = field(default_factory=dict)
    total_seconds: float = 0.0

    @property
    def strong_phrases(self) -> list[Phrase]:
        return [phrase for phrase in self.phrases if phrase.strong]

    def label_counts(self) -> dict[str, int]:
        counts = Counter(self.data.dataset.labels)
        names = self.data.dataset.label_names
        return {names[index]: counts.get(index, 0) for index in range(len(names))}


def check_detectors(names: tuple[str, ...]) -> dict[str, str]:
    """Return each detector's track; raise InputError for detectors a scan cannot run.

    Those are unknown names, oracle detectors and detectors that read per-query influence.
    """
    import baselines  # noqa: F401  (registers the baselines)
    import detectors  # noqa: F401

    if not names:
        raise InputError("no detectors chosen; pass --detectors with at least one name")
    tracks = {}
    for name in names:
        if name not in DETECTORS:
            raise InputError(
                f"unknown detector {name!r}; see 'poisonbench list detectors' "
                f"({', '.join(DETECTORS.names())})"
            )
        track = DETECTORS.get(name).track
        if track == "oracle":
            raise InputError(
                f"detector {name!r} is an oracle detector, which needs the attack's trigger; "
                "a scan of unknown data has none, so choose blind or clean-queries detectors"
            )
        if getattr(DETECTORS.get(name), "uses_per_query_influence", False):
            raise InputError(
                f"detector {name!r} reads per-query influence, which a scan does not compute; "
                "run it through 'poisonbench run' or a sweep, or choose another detector"
            )
        tracks[name] = track
    return tracks


def run_scan(options: ScanOptions) -> ScanResult:
    """Load, fine-tune, detect, rank and look for candidate trigger phrases."""
    start = time.perf_counter()
    timer = StageTimer()
    tracks = check_detectors(options.detectors)
    training = TrainingConfig(
        epochs=options.epochs,
        max_length=options.max_length,
        learning_rate=options.learning_rate,
        seed=options.seed,
    )
    influence_config = InfluenceConfig(tracked_modules=options.tracked_modules)

    with timer.stage("data"):
        data = load_examples(options.data_file, options.data_format, options.skip_bad_rows)
        train = data.dataset
        _check_training_set(train, data.path)
        logger.info(
            "Read %d examples with %d labels from %s (%s); %d malformed rows skipped",
            len(train),
            len(train.label_names),
            data.path,
            data.format,
            len(data.bad_rows),
        )
        needs_queries = "clean-queries" in tracks.values()
        queries = _build_query_source(options, data, needs_queries)

    with timer.stage("model set-up"):
        victim, seconds_per_example = _set_up_victim(options, train, training)

    n_query_examples = 0
    if queries.dataset is not None:
        n_query_examples = len(queries.dataset) * (1 + len(DEFAULT_TRANSFORMS))
    estimate = estimate_run_time(
        seconds_per_example, len(train), training.epochs, tracks, n_query_examples
    )
    logger.info("%s", estimate.describe())
    print(estimate.describe(), flush=True)

    with timer.stage("fine-tuning"):
        history = victim.fit(train.texts, train.labels, training)

    context = _detection_context(
        options, train, victim, history.epoch_losses, queries, influence_config, timer
    )
    detections = _run_detectors(options.detectors, context, timer)

    with timer.stage("phrases"):
        consensus = consensus_ranking({name: r.scores for name, r in detections.items()})
        suspects, suspect_rule = choose_suspects(detections, consensus)
        phrases = candidate_phrases(train.texts, suspects)

    total = time.perf_counter() - start
    logger.info(
        "Scan finished in %.1f s (estimated %.1f s before fine-tuning)",
        total,
        estimate.total_seconds,
    )
    return ScanResult(
        options=options,
        data=data,
        queries=queries,
        detections=detections,
        consensus=consensus,
        suspects=suspects,
        suspect_rule=suspect_rule,
        phrases=phrases,
        estimate=estimate,
        mean_loss_per_epoch=history.mean_loss_per_epoch,
        victim_family=victim.family,
        stage_seconds=timer.seconds,
        total_seconds=total,
    )


def _set_up_victim(
    options: ScanOptions, train: TextDataset, training: TrainingConfig
) -> tuple[EncoderClassifier, float]:
    """Build the victim and time one training step, in seconds per example.

    The model family comes from the preset or the model's config. Causal and seq2seq
    victims use the Natural-Instructions prompt and the label names as verbalizers.
    """
    try:
        victim = build_victim(
            options.model,
            len(train.label_names),
            train.definition,
            train.label_names,
            max_length=training.max_length,
            seed=training.seed,
        )
    except InputError:
        raise
    except ValueError as error:
        raise InputError(f"--model {options.model}: {error}") from None
    _warn_long_definition(victim, train.definition)
    calibration = slice(0, min(CALIBRATION_BATCH, len(train)))
    seconds_per_example = measure_step_seconds(
        victim, train.texts[calibration], train.labels[calibration]
    )
    return victim, seconds_per_example


def _run_detectors(
    names: tuple[str, ...], context: DetectionContext, timer: StageTimer
) -> dict[str, DetectionResult]:
    detections = {}
    for name in names:
        with timer.stage("detection"):
            detections[name] = get_detector(name).detect(context, name)
        logger.info(
            "Detector %s flagged %d of %d examples in %.1f s",
            name,
            int(detections[name].flagged.sum()),
            context.n_train,
            detections[name].seconds,
        )
    return detections


def choose_suspects(
    detections: dict[str, DetectionResult], consensus: Consensus
) -> tuple[np.ndarray, str]:
    """Return the suspect mask for the phrase search and a sentence that describes it.

    Suspects are the examples that at least one detector flags. When fewer than three are
    flagged, too few for any n-gram to be tested, the top 3% by consensus rank (at least
    10 examples) stand in.
    """
    flagged = np.any([result.flagged for result in detections.values()], axis=0)
    if flagged.sum() >= MIN_SUSPECT_COUNT:
        return flagged, (f"the {int(flagged.sum())} examples flagged by at least one detector")
    n = len(consensus.rank)
    k = min(n, max(SUSPECT_FALLBACK_MIN, math.ceil(SUSPECT_FALLBACK_FRACTION * n)))
    top = np.zeros(n, dtype=bool)
    top[consensus.order()[:k]] = True
    return top, (
        f"the top {k} examples by consensus rank (3%, at least {SUSPECT_FALLBACK_MIN}), "
        f"because only {int(flagged.sum())} examples were flagged"
    )


def _check_training_set(train: TextDataset, path: str) -> None:
    if len(train.label_names) < 2:
        raise InputError(
            f"{path}: every example has the label {train.label_names[0]!r}; a scan fine-tunes "
            "a classifier, which needs at least two labels"
        )
    if len(train) < 10:
        raise InputError(f"{path}: {len(train)} examples; a scan needs at least 10")


def _build_query_source(options: ScanOptions, data: LoadedData, needed: bool) -> QuerySource:
    """Load the queries file, or copy a held-out slice of the training file, when needed."""
    train = data.dataset
    if not needed:
        if options.queries_file is not None:
            logger.warning(
                "Ignoring --queries %s: none of the chosen detectors uses queries",
                options.queries_file,
            )
        return QuerySource("none (no chosen detector uses queries)")

    if options.queries_file is not None:
        loaded = load_examples(
            options.queries_file,
            options.data_format,
            options.skip_bad_rows,
            label_names=train.label_names,
        )
        queries = loaded.dataset
        if options.n_queries is not None:
            queries = sample_balanced(queries, options.n_queries, options.seed)
        if queries.definition != train.definition:
            logger.warning(
                "The queries file's instruction differs from the training file's; queries are "
                "formatted with the training instruction"
            )
        _check_query_count(len(queries), str(options.queries_file))
        return QuerySource(
            f"{len(queries)} examples of {loaded.path} ({loaded.format})",
            queries,
            loaded.bad_rows,
        )

    n_queries = options.n_queries
    if n_queries is None:
        n_queries = min(MAX_HELD_OUT_QUERIES, max(MIN_QUERIES, round(QUERY_FRACTION * len(train))))
    queries = sample_balanced(train, min(n_queries, len(train)), options.seed)
    _check_query_count(len(queries), data.path)
    return QuerySource(
        f"{len(queries)} examples drawn from the scanned file with seed {options.seed}, "
        "labels as balanced as the file allows (10% of the file, at most "
        f"{MAX_HELD_OUT_QUERIES}, unless --n-queries is given). They are copies: the "
        "scanned training set keeps every example, so these examples are both trained on "
        "and used as queries",
        queries,
    )


def _check_query_count(n_queries: int, where: str) -> None:
    if n_queries < MIN_QUERIES:
        raise InputError(
            f"{where}: {n_queries} queries; influence detectors need at least {MIN_QUERIES}"
        )


def _warn_long_definition(victim: EncoderClassifier, definition: str) -> None:
    if not definition:
        return
    n_tokens = len(victim.tokenizer(definition)["input_ids"])
    if n_tokens >= victim.max_length // 2:
        logger.warning(
            "The instruction takes %d of the %d input tokens (--max-length), so the texts are "
            "cut short; raise --max-length",
            n_tokens,
            victim.max_length,
        )


def _detection_context(
    options: ScanOptions,
    train: TextDataset,
    victim: EncoderClassifier,
    epoch_losses: np.ndarray,
    queries: QuerySource,
    influence_config: InfluenceConfig,
    timer: StageTimer,
) -> DetectionContext:
    """Build the detectors' context; influence is fitted and scored on first request only."""
    if queries.dataset is None:

        def no_influence(name: str) -> np.ndarray:
            raise RuntimeError(f"influence on {name!r} requested, but the scan built no queries")

        return DetectionContext(train, victim, epoch_losses, no_influence, (), options.seed)

    with timer.stage("queries"):
        query_sets, infos, _ = build_clean_query_sets(
            queries.dataset, DEFAULT_TRANSFORMS, options.seed
        )
    engine = InfluenceEngine(
        victim, train.texts, train.labels, influence_config, options.cache_dir, seed=options.seed
    )
    scored: dict[str, np.ndarray] = {}

    def provide_influence(name: str) -> np.ndarray:
        # The first request fits the factors and scores every query set in one pass.
        if name not in scored:
            with timer.stage("influence"):
                engine.fit_factors()
                scored.update(engine.score_many(list(query_sets.values())))
        return scored[name]

    return DetectionContext(train, victim, epoch_losses, provide_influence, infos, options.seed)
