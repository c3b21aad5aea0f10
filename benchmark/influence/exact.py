"""Exact damped Gauss-Newton influence on a small parameter subset, a reference for EK-FAC.

For a classifier trained with softmax cross-entropy, the Gauss-Newton matrix equals the
Fisher under the model's own predictive distribution:

    G = 1/N sum_n sum_c p_nc * grad log p_nc grad log p_nc^T

over the N training examples and C classes. The influence of training example j on query i
is ``grad f_i^T (G + damping * I)^{-1} grad L_j``, with ``f`` the task's measurement and
``L`` its training loss. This matches kronfluence's conventions (version 1.0.1): EK-FAC
approximates the same per-example-averaged Fisher, adds ``damping_factor`` to its
eigenvalues without rescaling, and a positive score means that up-weighting the training
example lowers the query's measurement. kronfluence estimates the sum over classes from
one label sampled per example, so its G is also noisier than the exact one.

kronfluence treats tracked modules as independent, so its G is block-diagonal over modules.
``block_diagonal=True`` drops the cross-module blocks of the exact G in the same way, which
separates the error of that approximation from the error of the Kronecker factorisation.

The matrix is built explicitly, so the subset must stay small (a few thousand parameters).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import scipy.linalg
import torch
from kronfluence.task import Task

MAX_PARAMETERS = 10_000  # G in float64 then takes 800 MB


def _module_name(parameter_name: str) -> str:
    """Return the name of the module that owns a parameter, without kronfluence's wrapper.

    kronfluence's ``prepare_model`` inserts an ``.original_module`` segment into the names
    of wrapped parameters, so wrapped and unwrapped models give the same module name.
    """
    return parameter_name.replace(".original_module.", ".").rpartition(".")[0]


def module_parameter_filter(module_names: Iterable[str]) -> Callable[[str], bool]:
    """Return a filter that selects the weight and bias of the named modules."""
    wanted = set(module_names)

    def select(parameter_name: str) -> bool:
        return _module_name(parameter_name) in wanted

    return select


def _split_examples(batches: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    """Yield each example of each batch as a batch of size one."""
    for batch in batches:
        sizes = {len(value) for value in batch.values() if isinstance(value, torch.Tensor)}
        if len(sizes) != 1:
            raise ValueError(f"batch tensors have different first dimensions {sorted(sizes)}")
        for index in range(sizes.pop()):
            yield {
                key: value[index : index + 1] if isinstance(value, torch.Tensor) else value
                for key, value in batch.items()
            }


class _FlatGradient:
    """Gradient of a scalar with respect to the selected parameters, as one float64 vector."""

    def __init__(self, parameters: list[torch.nn.Parameter]):
        self.parameters = parameters

    def __call__(self, scalar: torch.Tensor) -> np.ndarray:
        gradients = torch.autograd.grad(scalar, self.parameters, allow_unused=True)
        pieces = [
            torch.zeros_like(parameter) if gradient is None else gradient
            for parameter, gradient in zip(self.parameters, gradients)
        ]
        return torch.cat([piece.reshape(-1) for piece in pieces]).to(torch.float64).cpu().numpy()


def exact_influence(
    model: torch.nn.Module,
    task: Task,
    train_batches: Iterable[Mapping[str, Any]],
    query_batches: Iterable[Mapping[str, Any]],
    damping: float,
    param_filter: Callable[[str], bool],
    num_classes: int | None = None,
    max_parameters: int = MAX_PARAMETERS,
    block_diagonal: bool = False,
) -> np.ndarray:
    """Compute exact damped Gauss-Newton influence scores, shape (n_query, n_train).

    Only the parameters whose names ``param_filter`` accepts enter the gradients and G. The
    task must be a classification task: ``task.compute_train_loss(batch, model)`` on a
    one-example batch must be ``-log p_y`` for the class index in ``batch["labels"]``.
    The Gauss-Newton sum over classes is taken by replacing that label with each class in
    turn, which gives both ``p_c = exp(-loss)`` and ``grad log p_c``. ``num_classes``
    defaults to ``model.config.num_labels``. Batches are split into single examples, so any
    batch size works. The model runs in eval mode and its ``requires_grad`` flags are
    restored on return. ``block_diagonal=True`` zeroes the entries of G between parameters
    of different modules. A module's weight and bias stay in one block, as in kronfluence.

    Raises:
        ValueError: if no parameter or more than ``max_parameters`` parameters are
            selected, if ``damping`` is not positive, if a set of batches is empty, or if
            the class probabilities derived from the training loss do not sum to 1.
    """
    if damping <= 0:
        raise ValueError(f"damping must be positive, got {damping}")
    if num_classes is None:
        num_classes = getattr(getattr(model, "config", None), "num_labels", None)
        if num_classes is None:
            raise ValueError("num_classes is missing and the model has no config.num_labels")

    named = list(model.named_parameters())
    selected_names = [name for name, _ in named if param_filter(name)]
    selected = [parameter for name, parameter in named if name in selected_names]
    num_parameters = sum(parameter.numel() for parameter in selected)
    if not selected:
        raise ValueError("param_filter selects no parameter of the model")
    if num_parameters > max_parameters:
        raise ValueError(
            f"param_filter selects {num_parameters} parameters, more than max_parameters="
            f"{max_parameters}; the explicit {num_parameters}x{num_parameters} matrix would not "
            "fit. Select fewer modules or raise max_parameters."
        )

    saved_flags = [(parameter, parameter.requires_grad) for _, parameter in named]
    was_training = model.training
    model.eval()
    try:
        for _, parameter in named:
            parameter.requires_grad_(False)
        for parameter in selected:
            parameter.requires_grad_(True)
        flat_gradient = _FlatGradient(selected)
        train_gradients, gauss_newton = _train_gradients_and_gauss_newton(
            model, task, train_batches, flat_gradient, num_classes, num_parameters
        )
        query_gradients = [
            flat_gradient(task.compute_measurement(example, model))
            for example in _split_examples(query_batches)
        ]
    finally:
        for parameter, flag in saved_flags:
            parameter.requires_grad_(flag)
        model.train(was_training)
    if not query_gradients:
        raise ValueError("query_batches contain no example")

    if block_diagonal:
        owners = np.repeat(
            [_module_name(name) for name in selected_names],
            [parameter.numel() for parameter in selected],
        )
        gauss_newton *= owners[:, None] == owners[None, :]
    gauss_newton[np.diag_indices_from(gauss_newton)] += damping
    preconditioned_train = scipy.linalg.solve(
        gauss_newton, np.stack(train_gradients, axis=1), assume_a="pos"
    )
    return np.stack(query_gradients) @ preconditioned_train


def _train_gradients_and_gauss_newton(
    model: torch.nn.Module,
    task: Task,
    train_batches: Iterable[Mapping[str, Any]],
    flat_gradient: _FlatGradient,
    num_classes: int,
    num_parameters: int,
) -> tuple[list[np.ndarray], np.ndarray]:
    """Return the training-loss gradient of every example and the averaged G.

    The training-loss gradient is the class pass for the example's own label, so each
    example costs ``num_classes`` forward and backward passes.
    """
    train_gradients = []
    gauss_newton = np.zeros((num_parameters, num_parameters))
    for example in _split_examples(train_batches):
        labels = example["labels"]
        if labels.numel() != 1 or labels.is_floating_point():
            raise ValueError(
                f"exact influence needs one integer class label per example, got labels {labels}"
            )
        true_label = int(labels.item())
        if not 0 <= true_label < num_classes:
            raise ValueError(f"label {true_label} is outside the {num_classes} classes")

        total_probability = 0.0
        for label in range(num_classes):
            relabelled = dict(example, labels=torch.full_like(labels, label))
            negative_log_probability = task.compute_train_loss(relabelled, model, sample=False)
            probability = float(torch.exp(-negative_log_probability.detach()))
            loss_gradient = flat_gradient(negative_log_probability)
            gauss_newton += probability * np.outer(loss_gradient, loss_gradient)
            total_probability += probability
            if label == true_label:
                train_gradients.append(loss_gradient)
        if abs(total_probability - 1.0) > 1e-3:
            raise ValueError(
                f"class probabilities exp(-compute_train_loss) sum to {total_probability:.6f}, "
                f"not 1, over {num_classes} classes; the task's training loss must be the "
                "negative log-likelihood of batch['labels'] for exact influence"
            )
    if not train_gradients:
        raise ValueError("train_batches contain no example")
    return train_gradients, gauss_newton / len(train_gradients)
