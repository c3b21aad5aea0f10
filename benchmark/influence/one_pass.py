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

NOTE: this uses internal functions of kronfluence 1.0.1 (``kronfluence.module.utils``,
``kronfluence.score.dot_product``); pin that version or re-check them when upgrading.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch.amp import GradScaler
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

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
    """Return, for each query set, the summed influence on its queries, shape (n_train,)."""
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

    model = analyzer.model
    task = analyzer.task
    state = analyzer.state
    factor_args = analyzer.load_factor_args(factors_name)
    loaded_factors = analyzer.load_all_factors(factors_name)
    update_factor_args(model=model, factor_args=factor_args)
    update_score_args(model=model, score_args=score_args)
    tracked = get_tracked_module_names(model=model)
    modules = [m for m in model.modules() if isinstance(m, TrackedModule) and m.name in tracked]

    stacked: dict[str, list[torch.Tensor]] = {module.name: [] for module in modules}
    names = list(query_datasets)
    for name in tqdm(names, desc="query gradients", unit="set", leave=False):
        set_mode(
            model=model,
            mode=ModuleMode.GRADIENT_AGGREGATION,
            tracked_module_names=tracked,
            release_memory=True,
        )
        for factor_name, factors in loaded_factors.items():
            set_factors(model=model, factor_name=factor_name, factors=factors, clone=True)
        prepare_modules(model=model, tracked_module_names=tracked, device=state.device)
        loader = DataLoader(
            query_datasets[name], batch_size=query_batch_size, shuffle=False, collate_fn=collate_fn
        )
        for batch in loader:
            model.zero_grad(set_to_none=True)
            measurement = task.compute_measurement(batch=batch, model=model)
            measurement.backward()
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
    train_loader = DataLoader(
        train_dataset, batch_size=train_batch_size, shuffle=False, collate_fn=collate_fn
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
    )
    model.zero_grad(set_to_none=True)
    set_mode(model=model, mode=ModuleMode.DEFAULT, release_memory=True)
    matrix = scores["all_modules"]  # (n_sets, n_train)
    return {name: matrix[i] for i, name in enumerate(names)}
