"""Score several query sets against the training set in one pass over the training data.

kronfluence's ``compute_pairwise_scores`` makes one full forward and backward pass over the
training set per call, so scoring the original queries and six transformed copies costs
seven passes. Influence is linear in the query gradient, so this module instead

1. computes, for each query set, the summed query gradient and preconditions it with the
   fitted factors (kronfluence's own preconditioning, one cheap pass over that set's queries);
2. stacks the preconditioned gradients of all sets, shape (n_sets, ...) per module;
3. makes one pass over the training data in which kronfluence's dot-product routine scores
   every training example against all stacked gradients at once.

The result equals one ``compute_pairwise_scores(aggregate_query_gradients=True)`` call per
set up to floating-point summation order.

Under a multi-process launch (kronfluence's ``State`` in distributed mode, see
:mod:`benchmark.influence.distributed`) each process sums the query gradients of its
strided shard of every query set, and the sums are added over the processes before the
preconditioning, so every process preconditions the gradient of all queries. Each process
then scores its strided shard of the training set, and the scores are gathered into data
set order in every process. A process whose shard of a query set is empty adds zeros.

NOTE: this uses internal functions of kronfluence 1.0.1 (``kronfluence.module.utils``,
``kronfluence.score.dot_product``); pin that version or re-check them when upgrading.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch.amp import GradScaler
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from benchmark.influence.distributed import (
    Shard,
    gather_shards,
    shard_of,
    sum_over_processes,
    unwrap_model,
)

logger = logging.getLogger(__name__)


def score_query_sets_one_pass(
    analyzer,
    factors_name: str,
    query_datasets: Mapping[str, Dataset],
    train_dataset: Dataset,
    score_args,
    collate_fn,
    query_batch_size: int,
    train_batch_size: int,
) -> dict[str, torch.Tensor]:
    """Return, for each query set, the summed influence on its queries, shape (n_train,).

    Scores are in the order of ``train_dataset``. Under a launch every process must call
    this with the same arguments, and every process receives all scores.
    """
    from accelerate.utils import send_to_device
    from kronfluence.module.tracked_module import ModuleMode, TrackedModule
    from kronfluence.module.utils import (
        finalize_all_iterations,
        get_tracked_module_names,
        prepare_modules,
        set_factors,
        set_mode,
        update_factor_args,
        update_score_args,
    )
    from kronfluence.score.dot_product import compute_dot_products_with_loader
    from kronfluence.utils.constants import (
        ACCUMULATED_PRECONDITIONED_GRADIENT_NAME as PRECONDITIONED,
    )
    from kronfluence.utils.constants import AGGREGATED_GRADIENT_NAME as AGGREGATED

    state = analyzer.state
    # kronfluence's DDP wrapper would reduce parameter gradients in every backward pass;
    # this module sums the tracked statistics itself, so it runs the bare model.
    model = unwrap_model(analyzer.model)
    task = analyzer.task
    factor_args = analyzer.load_factor_args(factors_name)
    loaded_factors = analyzer.load_all_factors(factors_name)
    update_factor_args(model=model, factor_args=factor_args)
    update_score_args(model=model, score_args=score_args)
    tracked = get_tracked_module_names(model=model)
    modules = [m for m in model.modules() if isinstance(m, TrackedModule) and m.name in tracked]

    stacked: dict[str, list[torch.Tensor]] = {module.name: [] for module in modules}
    names = list(query_datasets)
    for name in tqdm(
        names,
        desc="query gradients",
        unit="set",
        leave=False,
        disable=not state.is_main_process,
    ):
        set_mode(
            model=model,
            mode=ModuleMode.GRADIENT_AGGREGATION,
            tracked_module_names=tracked,
            release_memory=True,
        )
        for factor_name, factors in loaded_factors.items():
            set_factors(model=model, factor_name=factor_name, factors=factors, clone=True)
        prepare_modules(model=model, tracked_module_names=tracked, device=state.device)
        query_shard = shard_of(len(query_datasets[name]), state)
        loader = DataLoader(
            _shard_dataset(query_datasets[name], query_shard),
            batch_size=query_batch_size,
            shuffle=False,
            collate_fn=collate_fn,
        )
        for batch in loader:
            batch = send_to_device(batch, state.device)
            model.zero_grad(set_to_none=True)
            measurement = task.compute_measurement(batch=batch, model=model)
            measurement.backward()
        if state.use_distributed:
            summed = sum_over_processes(
                {module.name: module.storage[AGGREGATED] for module in modules}, state
            )
            for module in modules:
                module.storage[AGGREGATED] = summed[module.name]
            logger.info(
                "Process %d summed the query gradients of %d of the %d queries of %s in %d batches",
                state.process_index,
                len(query_shard.indices),
                query_shard.size,
                name,
                len(loader),
            )
        set_mode(
            model=model,
            mode=ModuleMode.PRECONDITION_GRADIENT,
            tracked_module_names=tracked,
            release_memory=False,
        )
        finalize_all_iterations(model=model, tracked_module_names=tracked)
        for module in modules:
            gradient = module.storage[PRECONDITIONED]
            if isinstance(gradient, list):
                raise ValueError("one-pass scoring does not support low-rank query gradients")
            stacked[module.name].append(gradient.detach().clone())

    for module in modules:
        module.storage[PRECONDITIONED] = torch.cat(stacked[module.name], dim=0)
    train_shard = shard_of(len(train_dataset), state)
    if state.use_distributed and not train_shard.indices:
        raise ValueError(
            f"{len(train_dataset)} training examples cannot be split between "
            f"{state.num_processes} processes. Launch at most {len(train_dataset)} processes."
        )
    loop_state = state
    if state.use_distributed:
        loop_state = _ProcessLocalState(state.device, state.is_main_process)
    train_loader = DataLoader(
        _shard_dataset(train_dataset, train_shard),
        batch_size=train_batch_size,
        shuffle=False,
        collate_fn=collate_fn,
    )
    scores = compute_dot_products_with_loader(
        model=model,
        task=task,
        state=loop_state,
        train_loader=train_loader,
        factor_args=factor_args,
        score_args=score_args,
        tracked_module_names=tracked,
        scaler=GradScaler(enabled=False),
        disable_tqdm=False,
    )
    model.zero_grad(set_to_none=True)
    set_mode(model=model, mode=ModuleMode.DEFAULT, release_memory=True)
    if state.use_distributed:
        logger.info(
            "Process %d scored %d of the %d training examples in %d batches",
            state.process_index,
            len(train_shard.indices),
            train_shard.size,
            len(train_loader),
        )
    matrix = gather_shards(scores["all_modules"], train_shard, state)  # (n_sets, n_train)
    return {name: matrix[i] for i, name in enumerate(names)}


def _shard_dataset(dataset: Dataset, shard: Shard) -> Dataset:
    if shard.num_processes == 1:
        return dataset
    return Subset(dataset, shard.indices)


@dataclass(frozen=True)
class _ProcessLocalState:
    """The fields of kronfluence's ``State`` that its dot-product loop reads, for one process.

    Passing this instead of the distributed ``State`` makes the loop score this process's
    shard alone: with ``use_distributed`` False it neither synchronizes nor gathers, and
    :func:`gather_shards` collects the shards afterwards.
    """

    device: torch.device
    is_main_process: bool
    use_distributed: bool = False
    num_processes: int = 1

    def wait_for_everyone(self) -> None:
        """Return at once: the shards are gathered after the loop."""
