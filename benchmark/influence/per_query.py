"""Score every query of several query sets against the training set, one score row per query.

kronfluence's ``compute_pairwise_scores`` without query aggregation makes one full pass over
the training data per batch of ``per_device_query_batch_size`` queries, so 7 sets of 50
queries in batches of 16 cost 28 passes. This module instead

1. computes the preconditioned gradient of every query (kronfluence's own per-example
   preconditioning, the mode that ``compute_pairwise_scores`` uses without aggregation);
2. stacks the gradients of as many queries as fit ``memory_budget_bytes``, filling each
   stack across query sets, so the number of stacks is
   ``ceil(n_queries / queries_per_pass)``;
3. makes one pass over the training data per stack, in which kronfluence's dot-product
   routine scores every training example against each stacked query.

The result equals ``compute_pairwise_scores(aggregate_query_gradients=False)`` on each set
up to floating-point summation order.

NOTE: this uses internal functions of kronfluence 1.0.1 (``kronfluence.module.utils``,
``kronfluence.score.dot_product``), as :mod:`benchmark.influence.one_pass` does; pin that
version or re-check them when upgrading.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch.amp import GradScaler
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

DEFAULT_MEMORY_BUDGET_BYTES = 4 * 1024**3
"""Memory for the stacked preconditioned query gradients of one training pass (4 GiB).

With MiniLM (all 38 linear modules tracked, float32) one query takes 41.1 MiB, so 4 GiB
fits 99 queries. The budget covers the stack only. The model, the factors and the
per-batch tensors of the training pass come on top.
"""


@dataclass(frozen=True)
class QuerySegment:
    """Queries ``start`` to ``stop`` (exclusive) of the query set ``name``."""

    name: str
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def plan_passes(
    set_sizes: Mapping[str, int], queries_per_pass: int
) -> list[tuple[QuerySegment, ...]]:
    """Split the queries of all sets, in order, into passes of at most ``queries_per_pass``.

    A pass may take the end of one set and the start of the next, so every pass but the
    last is full and the number of passes is the minimum for that capacity.
    """
    if queries_per_pass < 1:
        raise ValueError(f"queries_per_pass must be at least 1, got {queries_per_pass}")
    passes: list[tuple[QuerySegment, ...]] = []
    current: list[QuerySegment] = []
    free = queries_per_pass
    for name, size in set_sizes.items():
        if size < 1:
            raise ValueError(f"query set {name!r} is empty")
        start = 0
        while start < size:
            stop = min(size, start + free)
            current.append(QuerySegment(name, start, stop))
            free -= stop - start
            start = stop
            if free == 0:
                passes.append(tuple(current))
                current, free = [], queries_per_pass
    if current:
        passes.append(tuple(current))
    return passes


def query_gradient_bytes(modules, dtype: torch.dtype) -> int:
    """Return the bytes of one query's preconditioned gradient over the tracked ``modules``.

    A tracked module's per-example gradient has one entry per weight and bias entry of the
    module it wraps (kronfluence appends the bias as an extra input column).
    """
    n_entries = 0
    for module in modules:
        n_entries += sum(p.numel() for p in module.original_module.parameters(recurse=False))
    return n_entries * (torch.finfo(dtype).bits // 8)


def score_queries_per_query(
    analyzer,
    factors_name: str,
    query_datasets: Mapping[str, Dataset],
    train_dataset: Dataset,
    score_args,
    collate_fn,
    query_batch_size: int,
    train_batch_size: int,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
) -> dict[str, torch.Tensor]:
    """Score each query of each set and return, by set name, tensors (n_queries, n_train).

    Training examples come in ``train_dataset`` order. ``score_args`` must leave query
    gradients unaggregated and at full rank (kronfluence's defaults).
    """
    from kronfluence.module.tracked_module import ModuleMode, TrackedModule
    from kronfluence.module.utils import (
        get_tracked_module_names,
        prepare_modules,
        set_factors,
        set_mode,
        update_factor_args,
        update_score_args,
    )
    from kronfluence.score.dot_product import compute_dot_products_with_loader
    from kronfluence.utils.constants import ALL_MODULE_NAME

    if score_args.query_gradient_low_rank is not None:
        raise ValueError(
            "per-query scoring does not support low-rank query gradients. Set "
            f"query_gradient_low_rank=None (got {score_args.query_gradient_low_rank})"
        )
    if memory_budget_bytes < 1:
        raise ValueError(f"memory_budget_bytes must be positive, got {memory_budget_bytes}")

    model = analyzer.model
    task = analyzer.task
    state = analyzer.state
    if state.use_distributed:
        # NOTE: not implemented. Under a launch each process would score a share of the
        # training examples, and the gathered scores would need putting back in order.
        raise RuntimeError(
            "per-query influence under a multi-process launch is not supported. Compute it "
            "in a single process, without accelerate launch or torchrun"
        )
    factor_args = analyzer.load_factor_args(factors_name)
    loaded_factors = analyzer.load_all_factors(factors_name)
    update_factor_args(model=model, factor_args=factor_args)
    update_score_args(model=model, score_args=score_args)
    tracked = get_tracked_module_names(model=model)
    modules = [m for m in model.modules() if isinstance(m, TrackedModule) and m.name in tracked]

    per_query_bytes = query_gradient_bytes(modules, score_args.score_dtype)
    queries_per_pass = memory_budget_bytes // per_query_bytes
    if queries_per_pass < 1:
        logger.warning(
            "One query's preconditioned gradient (%.1f MiB) exceeds the memory budget "
            "(%.1f MiB); scoring one query per training pass",
            per_query_bytes / 2**20,
            memory_budget_bytes / 2**20,
        )
        queries_per_pass = 1
    set_sizes = {name: len(dataset) for name, dataset in query_datasets.items()}
    passes = plan_passes(set_sizes, queries_per_pass)
    logger.info(
        "Scoring %d queries of %d sets per query in %d training passes "
        "(up to %d queries of %.1f MiB each per pass)",
        sum(set_sizes.values()),
        len(set_sizes),
        len(passes),
        queries_per_pass,
        per_query_bytes / 2**20,
    )

    # kronfluence's preparation turns the factors into their inverses in place, so it runs
    # once, on fresh copies, and the prepared factors serve every pass.
    set_mode(
        model=model,
        mode=ModuleMode.PRECONDITION_GRADIENT,
        tracked_module_names=tracked,
        release_memory=True,
    )
    for factor_name, factors in loaded_factors.items():
        set_factors(model=model, factor_name=factor_name, factors=factors, clone=True)
    prepare_modules(model=model, tracked_module_names=tracked, device=state.device)

    train_loader = DataLoader(
        train_dataset, batch_size=train_batch_size, shuffle=False, collate_fn=collate_fn
    )
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in query_datasets}
    for segments in tqdm(passes, desc="per-query training passes", unit="pass", leave=False):
        _stack_preconditioned_gradients(
            model,
            task,
            state,
            modules,
            factor_args.has_shared_parameters,
            query_datasets,
            segments,
            collate_fn,
            query_batch_size,
        )
        scores = compute_dot_products_with_loader(
            model=model,
            task=task,
            state=state,
            train_loader=train_loader,
            factor_args=factor_args,
            score_args=score_args,
            tracked_module_names=tracked,
            scaler=GradScaler(enabled=False),
            disable_tqdm=False,
        )[ALL_MODULE_NAME]  # (queries of this pass, n_train)
        offset = 0
        for segment in segments:
            rows[segment.name].append(scores[offset : offset + segment.size])
            offset += segment.size

    model.zero_grad(set_to_none=True)
    set_mode(model=model, mode=ModuleMode.DEFAULT, release_memory=True)
    return {name: torch.cat(chunks, dim=0) for name, chunks in rows.items()}


def _stack_preconditioned_gradients(
    model,
    task,
    state,
    modules,
    has_shared_parameters: bool,
    query_datasets: Mapping[str, Dataset],
    segments: tuple[QuerySegment, ...],
    collate_fn,
    query_batch_size: int,
) -> None:
    """Store the preconditioned gradients of the ``segments``' queries, stacked in order.

    Each module's stack, shape (n_queries, ...), goes where kronfluence's pairwise-score
    pass reads it. The stack is allocated once and filled batch by batch, so memory peaks
    at the stack plus one batch (kronfluence's own accumulation concatenates per batch).
    """
    from accelerate.utils import send_to_device
    from kronfluence.module.utils import finalize_iteration
    from kronfluence.utils.constants import (
        ACCUMULATED_PRECONDITIONED_GRADIENT_NAME as ACCUMULATED,
    )
    from kronfluence.utils.constants import PRECONDITIONED_GRADIENT_NAME as PRECONDITIONED

    n_queries = sum(segment.size for segment in segments)
    tracked = [module.name for module in modules]
    stacks: dict[str, torch.Tensor] = {}
    filled = 0
    for segment in segments:
        subset = Subset(query_datasets[segment.name], range(segment.start, segment.stop))
        loader = DataLoader(
            subset, batch_size=query_batch_size, shuffle=False, collate_fn=collate_fn
        )
        for batch in loader:
            batch = send_to_device(tensor=batch, device=state.device)
            model.zero_grad(set_to_none=True)
            measurement = task.compute_measurement(batch=batch, model=model)
            measurement.backward()
            if has_shared_parameters:
                finalize_iteration(model=model, tracked_module_names=tracked)
            batch_size = 0
            for module in modules:
                gradient = module.storage[PRECONDITIONED]
                if isinstance(gradient, list):
                    raise ValueError("per-query scoring does not support low-rank query gradients")
                if module.name not in stacks:
                    stacks[module.name] = gradient.new_empty((n_queries, *gradient.shape[1:]))
                batch_size = gradient.shape[0]
                stacks[module.name][filled : filled + batch_size].copy_(gradient)
                module.storage[PRECONDITIONED] = None
            filled += batch_size
            del measurement
    if filled != n_queries:
        raise RuntimeError(f"stacked {filled} query gradients for a pass of {n_queries} queries")
    model.zero_grad(set_to_none=True)
    for module in modules:
        module.storage[ACCUMULATED] = stacks[module.name]
