"""Fit EK-FAC factors once per trained model and score training examples on query sets.

Sign convention: a positive score for training example i on a query set means that
up-weighting i lowers the mean measurement (loss or negated margin) of the queries, that is,
i helps the model predict the queries' labels. Scores are averaged over the queries of a set.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmark.influence.distributed import (
    barrier,
    broadcast_from_main,
    chunk_balanced_order,
    fisher_label_seed,
    kronfluence_launch_state,
    kronfluence_timing,
    prepare_model_for_launch,
    run_on_main,
    shared_process_id,
)
from benchmark.influence.ordering import item_lengths, length_sorted_order, reorder, restore_order
from benchmark.influence.task import MEASUREMENTS, ClassificationTask

logger = logging.getLogger(__name__)

STRATEGIES = ("ekfac", "kfac", "diagonal", "identity")


@dataclass(frozen=True)
class InfluenceConfig:
    """Options of the influence stage.

    ``damping_factor`` None uses kronfluence's heuristic (0.1 times the mean eigenvalue).
    ``tracked_modules`` are regular expressions over module names; empty tracks every
    ``nn.Linear`` of the model. ``lambda_max_examples`` caps the training examples used for
    the eigenvalue correction, the costliest pass of EK-FAC fitting; None uses them all.
    ``one_pass`` scores all query sets of :meth:`InfluenceEngine.score_many` in one pass over
    the training data (see :mod:`benchmark.influence.one_pass`) instead of one
    kronfluence call per set; both give the same scores up to summation order.
    ``sort_by_length`` feeds the training examples to the scoring passes longest first (see
    :mod:`benchmark.influence.ordering`), which cuts padding; scores come back in data set
    order and equal the unsorted ones up to summation order.
    ``token_lambda`` computes the eigenvalue correction from rotated tokens (see
    :mod:`benchmark.influence.token_lambda`): the same values, fewer operations.
    """

    strategy: str = "ekfac"
    measurement: str = "loss"
    damping_factor: float | None = None
    tracked_modules: tuple[str, ...] = ()
    factor_batch_size: int = 32
    train_batch_size: int = 32
    query_batch_size: int = 16
    covariance_max_examples: int | None = None
    lambda_max_examples: int | None = None
    one_pass: bool = True
    sort_by_length: bool = True
    token_lambda: bool = True

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.measurement not in MEASUREMENTS:
            raise ValueError(f"measurement must be one of {MEASUREMENTS}, got {self.measurement!r}")
        if self.damping_factor is not None and self.damping_factor <= 0:
            raise ValueError(f"damping_factor must be positive or None, got {self.damping_factor}")
        for name in ("factor_batch_size", "train_batch_size", "query_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class QuerySet:
    """Texts and the labels that the measurement scores them against."""

    name: str
    texts: tuple[str, ...]
    labels: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(
                f"query set {self.name!r}: {len(self.texts)} texts but {len(self.labels)} labels"
            )
        if not self.texts:
            raise ValueError(f"query set {self.name!r} is empty")


@dataclass
class InfluenceTimings:
    """Wall-clock seconds of the influence stage."""

    factors_seconds: float = 0.0
    factors_cached: bool = False
    scores_seconds: dict[str, float] = field(default_factory=dict)


def model_fingerprint(model: torch.nn.Module) -> str:
    """Return a SHA-256 hex digest of a model's parameters and buffers."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class InfluenceEngine:
    """EK-FAC influence for one trained victim and one training set.

    ``victim`` is an :class:`~benchmark.models.EncoderClassifier`; its weights are copied, so
    kronfluence's module wrappers never touch the victim itself.
    """

    def __init__(
        self,
        victim,
        train_texts: Sequence[str],
        train_labels: Sequence[int],
        config: InfluenceConfig,
        cache_dir: str | Path,
        seed: int = 0,
    ):
        self.victim = victim
        self.config = config
        self.seed = seed
        self.cache_dir = Path(cache_dir)
        self.train_dataset = victim.make_dataset(train_texts, train_labels)
        self.order = np.arange(len(self.train_dataset))
        if config.sort_by_length:
            self.order = length_sorted_order(item_lengths(self.train_dataset))
        self.ordered_train_dataset = reorder(self.train_dataset, self.order)
        self.timings = InfluenceTimings()
        self._analyzer = None
        self._factors_name: str | None = None

        train_digest = hashlib.sha256(
            json.dumps([list(train_texts), list(train_labels)]).encode()
        ).hexdigest()
        factor_fields = influence_key_fields(config)
        for name in ("measurement", "train_batch_size", "query_batch_size", "one_pass"):
            factor_fields.pop(name)  # these change scores, not factors
        factor_fields.pop("sort_by_length", None)  # factors are fitted in data set order
        key_source = json.dumps(
            {
                "model": model_fingerprint(victim.model),
                "train": train_digest,
                "max_length": victim.max_length,
                "factors": factor_fields,
            },
            sort_keys=True,
        )
        self.factors_key = hashlib.sha256(key_source.encode()).hexdigest()[:16]

    # -- set-up ---------------------------------------------------------------------------
    def _tracked_module_names(self, model: torch.nn.Module) -> list[str] | None:
        if not self.config.tracked_modules:
            return None
        patterns = [re.compile(pattern) for pattern in self.config.tracked_modules]
        names = [
            name
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and any(p.search(name) for p in patterns)
        ]
        if not names:
            raise ValueError(
                f"tracked_modules {list(self.config.tracked_modules)} match no nn.Linear module"
            )
        return names

    def _get_analyzer(self):
        if self._analyzer is not None:
            return self._analyzer
        launch_state = _launch_state()
        from kronfluence.analyzer import Analyzer, prepare_model

        from benchmark.influence.token_lambda import install_token_lambda

        model = copy.deepcopy(self.victim.model).eval()
        tracked_modules = self._tracked_module_names(model)
        # Generative victims build their own task (answer-token loss, their default modules).
        if hasattr(self.victim, "influence_task"):
            task = self.victim.influence_task(self.config.measurement, tracked_modules)
        else:
            task = ClassificationTask(self.config.measurement, tracked_modules)
        model = prepare_model(model, task)
        if self.config.token_lambda:
            install_token_lambda(model)
        cpu = not torch.cuda.is_available()
        if launch_state is not None:
            model = prepare_model_for_launch(model, launch_state)
            cpu = False  # kronfluence rejects cpu=True with a DDP-wrapped model
        # kronfluence 1.0.1 sets the root logger's level to its log_level; keep ours.
        root_level = logging.getLogger().level
        self._analyzer = Analyzer(
            analysis_name="influence",
            model=model,
            task=task,
            cpu=cpu,
            disable_tqdm=False,
            output_dir=str(self.cache_dir),
            log_level=logging.WARNING,
        )
        logging.getLogger().setLevel(root_level)
        from kronfluence.utils.dataset import DataLoaderKwargs

        self._analyzer.set_dataloader_kwargs(
            DataLoaderKwargs(collate_fn=self.victim.collator(), num_workers=0)
        )
        return self._analyzer

    def _query_datasets(self, query_sets: Sequence[QuerySet]) -> dict[str, object]:
        """Build the victim's data set of each query set, by set name."""
        return {
            query_set.name: self.victim.make_dataset(query_set.texts, query_set.labels)
            for query_set in query_sets
        }

    def _factors_dir(self, name: str) -> Path:
        return self.cache_dir / "influence" / f"factors_{name}"

    # -- factors --------------------------------------------------------------------------
    def fit_factors(self) -> str:
        """Fit EK-FAC factors, or reuse cached ones for the same model, data and options.

        Factors are written under a temporary name and renamed when complete, so an
        interrupted fit never leaves a directory that a later run would trust. Under a
        multi-process launch the processes split the examples, the main process writes and
        renames the factors, and every process must call this method.
        """
        if self._factors_name is not None:
            return self._factors_name
        from kronfluence.arguments import FactorArguments

        analyzer = self._get_analyzer()
        state = analyzer.state
        final_dir = self._factors_dir(self.factors_key)
        # Every process must take the same branch, so the main process decides.
        if broadcast_from_main(final_dir.is_dir(), state):
            logger.info("Reusing cached EK-FAC factors %s; skipping factor fitting", final_dir)
            self.timings.factors_cached = True
            self._factors_name = self.factors_key
            return self._factors_name

        temporary_name = f"{self.factors_key}-partial-{shared_process_id(state)}"
        run_on_main(
            lambda: shutil.rmtree(self._factors_dir(temporary_name), ignore_errors=True),
            "removing stale partial factors",
            state,
        )
        factor_args = FactorArguments(strategy=self.config.strategy)
        if self.config.covariance_max_examples is not None:
            factor_args.covariance_max_examples = self.config.covariance_max_examples
        if self.config.lambda_max_examples is not None:
            factor_args.lambda_max_examples = self.config.lambda_max_examples

        logger.info(
            "Fitting %s factors on %d training examples",
            self.config.strategy,
            len(self.train_dataset),
        )
        start = time.perf_counter()
        try:
            # The Fisher factors sample labels from the model, so fitting draws from torch's
            # random generator: seed it, leaving the caller's random state as it was.
            # NOTE: under a launch the eigendecomposition runs on the main process only. If
            # it fails there, the other processes wait in kronfluence's barrier until the
            # process group times out.
            with torch.random.fork_rng(), kronfluence_timing(state):
                torch.manual_seed(fisher_label_seed(self.seed, state))
                analyzer.fit_all_factors(
                    factors_name=temporary_name,
                    dataset=self.train_dataset,
                    per_device_batch_size=self.config.factor_batch_size,
                    factor_args=factor_args,
                    overwrite_output_dir=True,
                )
        except torch.linalg.LinAlgError as error:
            if state.is_main_process:
                shutil.rmtree(self._factors_dir(temporary_name), ignore_errors=True)
            raise FloatingPointError(
                f"EK-FAC eigendecomposition failed ({error}); the covariance factors are "
                "probably non-finite. Check the training loss for NaN, or track fewer modules "
                "(InfluenceConfig.tracked_modules)."
            ) from error
        self.timings.factors_seconds = time.perf_counter() - start
        # kronfluence's last barrier follows the main process's writes, so the files are
        # complete, and every process finds the same values.
        _check_factors_finite(self._factors_dir(temporary_name))

        def store() -> None:
            try:
                os.replace(self._factors_dir(temporary_name), final_dir)
            except OSError:
                if not final_dir.is_dir():
                    raise
                # A parallel run stored factors under the same key first. Equal keys mean
                # equal factors, so keep those.
                logger.info("Factors %s were stored by another process; using those", final_dir)
                shutil.rmtree(self._factors_dir(temporary_name), ignore_errors=True)

        barrier(state)  # every process has finished reading the temporary folder
        run_on_main(store, f"storing factors in {final_dir}", state)
        logger.info("Fitted factors in %.1f s", self.timings.factors_seconds)
        self._factors_name = self.factors_key
        return self._factors_name

    # -- scores ---------------------------------------------------------------------------
    def score(self, query_set: QuerySet) -> np.ndarray:
        """Return the mean influence of each training example on ``query_set``, shape (n_train,).

        Under a multi-process launch every process must call this method, and each one
        needs at least one query of the set, because kronfluence sums the query gradients
        over the processes.
        """
        from kronfluence.arguments import ScoreArguments

        factors_name = self.fit_factors()
        analyzer = self._get_analyzer()
        state = analyzer.state
        if state.use_distributed and len(query_set.texts) < state.num_processes:
            raise ValueError(
                f"query set {query_set.name!r} has {len(query_set.texts)} queries, fewer than "
                f"the {state.num_processes} launched processes. Score it with score_many "
                "(InfluenceConfig.one_pass) or launch fewer processes."
            )
        query_dataset = self.victim.make_dataset(query_set.texts, query_set.labels)
        score_args = ScoreArguments(
            damping_factor=self.config.damping_factor,
            aggregate_query_gradients=True,
        )
        train_dataset, order = self.ordered_train_dataset, self.order
        if state.use_distributed:
            # kronfluence gives each process a contiguous chunk of the training set, so this
            # order makes each chunk a strided share of the length-sorted order.
            order = self.order[chunk_balanced_order(len(self.order), state.num_processes)]
            train_dataset = reorder(self.train_dataset, order)
        scores_name = f"{factors_name}-{query_set.name}-{shared_process_id(state)}"
        start = time.perf_counter()
        with kronfluence_timing(state):
            analyzer.compute_pairwise_scores(
                scores_name=scores_name,
                factors_name=factors_name,
                query_dataset=query_dataset,
                train_dataset=train_dataset,
                per_device_query_batch_size=self.config.query_batch_size,
                per_device_train_batch_size=self.config.train_batch_size,
                score_args=score_args,
                overwrite_output_dir=True,
            )
        seconds = time.perf_counter() - start
        self.timings.scores_seconds[query_set.name] = seconds
        # The main process has written the scores before kronfluence's last barrier.
        result = analyzer.load_pairwise_scores(scores_name)
        barrier(state)  # every process has read the scores
        run_on_main(
            lambda: shutil.rmtree(
                self.cache_dir / "influence" / f"scores_{scores_name}", ignore_errors=True
            ),
            "removing the scores folder",
            state,
        )

        summed = result["all_modules"].to(torch.float64).sum(dim=0).numpy()
        scores = _mean_scores(query_set.name, restore_order(summed, order), len(query_set.texts))
        logger.info(
            "Scored %d training examples on query set %s (%d queries) in %.1f s",
            len(scores),
            query_set.name,
            len(query_set.texts),
            seconds,
        )
        return scores

    def score_many(self, query_sets: Sequence[QuerySet]) -> dict[str, np.ndarray]:
        """Return the mean influence on each query set, each of shape (n_train,).

        With ``config.one_pass`` all sets share one pass over the training data; otherwise
        each set gets its own kronfluence call. Under a multi-process launch every process
        must call this method. The processes split the queries and the training examples,
        and each one returns all scores.
        """
        if not self.config.one_pass:
            return {query_set.name: self.score(query_set) for query_set in query_sets}
        from kronfluence.arguments import ScoreArguments

        from benchmark.influence.one_pass import score_query_sets_one_pass

        factors_name = self.fit_factors()
        analyzer = self._get_analyzer()
        datasets = self._query_datasets(query_sets)
        start = time.perf_counter()
        summed = score_query_sets_one_pass(
            analyzer,
            factors_name,
            datasets,
            self.ordered_train_dataset,
            ScoreArguments(damping_factor=self.config.damping_factor),
            self.victim.collator(),
            self.config.query_batch_size,
            self.config.train_batch_size,
        )
        seconds = time.perf_counter() - start
        self.timings.scores_seconds["one pass: " + ", ".join(datasets)] = seconds
        logger.info(
            "Scored %d training examples on %d query sets in one pass in %.1f s",
            len(self.train_dataset),
            len(datasets),
            seconds,
        )
        return {
            query_set.name: _mean_scores(
                query_set.name,
                restore_order(summed[query_set.name].to(torch.float64).numpy(), self.order),
                len(query_set.texts),
            )
            for query_set in query_sets
        }

    def score_per_query(
        self, query_sets: Sequence[QuerySet], memory_budget_bytes: int | None = None
    ) -> dict[str, np.ndarray]:
        """Score every query of each set and return, by set name, arrays (n_queries, n_train).

        Row j contains the scores on query j of the set, with the sign convention of
        :meth:`score`, and the mean over rows equals :meth:`score_many`'s result up to
        summation order. ``memory_budget_bytes`` caps the stacked query gradients of one
        training pass (None: :data:`benchmark.influence.per_query.DEFAULT_MEMORY_BUDGET_BYTES`).
        See :mod:`benchmark.influence.per_query` for the passes.
        """
        from kronfluence.arguments import ScoreArguments

        from benchmark.influence.per_query import (
            DEFAULT_MEMORY_BUDGET_BYTES,
            score_queries_per_query,
        )

        factors_name = self.fit_factors()
        analyzer = self._get_analyzer()
        datasets = self._query_datasets(query_sets)
        start = time.perf_counter()
        per_query = score_queries_per_query(
            analyzer,
            factors_name,
            datasets,
            self.ordered_train_dataset,
            ScoreArguments(
                damping_factor=self.config.damping_factor, aggregate_query_gradients=False
            ),
            self.victim.collator(),
            self.config.query_batch_size,
            self.config.train_batch_size,
            DEFAULT_MEMORY_BUDGET_BYTES if memory_budget_bytes is None else memory_budget_bytes,
        )
        seconds = time.perf_counter() - start
        self.timings.scores_seconds["per query: " + ", ".join(datasets)] = seconds
        n_queries = sum(len(query_set.texts) for query_set in query_sets)
        logger.info(
            "Scored %d training examples on %d queries of %d sets per query in %.1f s",
            len(self.train_dataset),
            n_queries,
            len(datasets),
            seconds,
        )
        scores = {}
        for query_set in query_sets:
            matrix = restore_order(per_query[query_set.name].to(torch.float64).numpy(), self.order)
            if not np.all(np.isfinite(matrix)):
                raise FloatingPointError(
                    f"per-query influence on query set {query_set.name!r} has "
                    f"{int((~np.isfinite(matrix)).sum())} non-finite scores. Raise "
                    "damping_factor (InfluenceConfig.damping_factor) and run again"
                )
            scores[query_set.name] = matrix
        return scores


def _launch_state():
    """Return kronfluence's distributed ``State`` under a multi-process launch, else None.

    Under ``accelerate launch`` or ``torchrun`` with ``WORLD_SIZE`` > 1 the processes split
    factor fitting and scoring through kronfluence's distributed mode: NCCL on GPUs, gloo
    on the CPU (see :mod:`benchmark.influence.distributed`).
    """
    from benchmark.models.training import launched_processes

    world_size = launched_processes()
    if world_size <= 1:
        return None
    return kronfluence_launch_state(world_size)


def influence_key_fields(config: InfluenceConfig) -> dict:
    """Return the fields of ``config`` that identify its results in cache keys.

    ``sort_by_length`` and ``token_lambda`` appear only when True: results cached before
    these options existed were computed without them, and their keys stay valid for that
    setting.
    """
    fields = asdict(config)
    for name in ("sort_by_length", "token_lambda"):
        if not fields[name]:
            del fields[name]
    return fields


def _mean_scores(name: str, summed: np.ndarray, n_queries: int) -> np.ndarray:
    scores = np.asarray(summed, dtype=np.float64).reshape(-1) / n_queries
    if not np.all(np.isfinite(scores)):
        n_bad = int((~np.isfinite(scores)).sum())
        raise FloatingPointError(
            f"influence on query set {name!r} has {n_bad} non-finite scores; "
            "raise damping_factor (InfluenceConfig.damping_factor) and run again"
        )
    return scores


def _check_factors_finite(factors_dir: Path) -> None:
    from safetensors.torch import load_file

    for path in sorted(factors_dir.glob("*.safetensors")):
        for name, tensor in load_file(str(path)).items():
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise FloatingPointError(
                    f"EK-FAC factor {name} in {path} has non-finite values; the covariance "
                    "or eigendecomposition failed. Check the training loss for NaN, or track "
                    "fewer modules (InfluenceConfig.tracked_modules)."
                )
