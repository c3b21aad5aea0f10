"""EK-FAC eigenvalue correction computed from rotated tokens instead of rotated gradients.

The eigenvalue correction ("lambda") of EK-FAC sums, over training examples, the squared
per-example gradient of each linear module expressed in the Kronecker eigenbasis:
``(Q_g^T G Q_a)**2`` with ``G = sum_t g_t a_t^T`` over the example's tokens ``t``. kronfluence
1.0.1 forms ``G`` (out x in) for every example and then rotates it, which costs about
``out * in * (out + in)`` operations per example and module. The same rotated gradient is
``sum_t (Q_g^T g_t)(Q_a^T a_t)^T``: rotating each token's activation and output gradient
first costs ``T * (out**2 + in**2 + out * in)``. That is far less when an example has
fewer tokens than the layer is wide: for a 25-token sentence and MiniLM's 384 and 1,536
units, about 15 times fewer operations. The result is the same up to floating-point rounding.

:func:`install_token_lambda` swaps kronfluence's lambda tracker of every tracked linear
module for :class:`TokenLambdaTracker`, which picks the cheaper of the two orders for each
batch. It relies on kronfluence 1.0.1 internals (``TrackedModule._trackers``,
``LambdaTracker``, the storage names in ``kronfluence.utils.constants``); re-check them
when upgrading.
"""

from __future__ import annotations

import torch
from kronfluence.module.linear import TrackedLinear
from kronfluence.module.tracked_module import ModuleMode, TrackedModule
from kronfluence.module.tracker.factor import LambdaTracker
from kronfluence.utils.constants import (
    ACTIVATION_EIGENVECTORS_NAME,
    GRADIENT_EIGENVECTORS_NAME,
    LAMBDA_MATRIX_NAME,
    NUM_LAMBDA_PROCESSED,
)


def token_order_is_cheaper(n_tokens: int, n_in: int, n_out: int) -> bool:
    """Tell whether rotating tokens takes fewer multiply-adds than rotating example gradients."""
    tokens_first = n_tokens * (n_in * n_in + n_out * n_out + n_in * n_out)
    gradient_first = n_tokens * n_in * n_out + n_in * n_out * (n_in + n_out)
    return tokens_first < gradient_first


class TokenLambdaTracker(LambdaTracker):
    """kronfluence's lambda tracker for ``nn.Linear``, rotating tokens when that is cheaper.

    Modules with shared parameters, activations offloaded to the CPU, a per-sample gradient
    hook, or a strategy other than EK-FAC keep kronfluence's own computation.
    """

    def _uses_own_path(self) -> bool:
        args = self.module.factor_args
        return (
            args.strategy == "ekfac"
            and not args.has_shared_parameters
            and not args.offload_activations_to_cpu
            and self.module.per_sample_gradient_process_fnc is None
        )

    def register_hooks(self) -> None:
        if not self._uses_own_path():
            super().register_hooks()
            return

        @torch.no_grad()
        def forward_hook(module, inputs, outputs) -> None:
            del module
            self.cached_activations = (
                inputs[0]
                .detach()
                .to(dtype=self.module.factor_args.per_sample_gradient_dtype, copy=True)
            )
            self.cached_hooks.append(outputs.register_hook(backward_hook))

        @torch.no_grad()
        def backward_hook(output_gradient: torch.Tensor) -> None:
            if self.cached_activations is None:
                self._raise_cache_not_found_exception()
            self.cached_hooks.pop().remove()
            activation = self.module._flatten_input_activation(
                input_activation=self.cached_activations.to(device=output_gradient.device)
            )
            gradient = output_gradient.detach().to(
                dtype=self.module.factor_args.per_sample_gradient_dtype
            )
            self.clear_all_cache()
            self._accumulate(activation, gradient)

        self.registered_hooks.append(self.module.register_forward_hook(forward_hook))

    def _accumulate(self, activation: torch.Tensor, gradient: torch.Tensor) -> None:
        batch_size = activation.shape[0]
        activation = activation.reshape(batch_size, -1, activation.shape[-1])
        gradient = gradient.reshape(batch_size, -1, gradient.shape[-1])
        n_tokens, n_in, n_out = activation.shape[1], activation.shape[2], gradient.shape[2]

        if not token_order_is_cheaper(n_tokens, n_in, n_out):
            per_sample = torch.einsum("bto,bti->boi", gradient, activation)
            per_sample = per_sample.to(dtype=self.module.factor_args.lambda_dtype)
            if self.module.gradient_scale != 1.0:
                per_sample.mul_(self.module.gradient_scale)
            self._update_lambda_matrix(per_sample_gradient=per_sample)
            return

        dtype = self.module.factor_args.lambda_dtype
        storage = self.module.storage
        if storage[NUM_LAMBDA_PROCESSED] is None:
            storage[NUM_LAMBDA_PROCESSED] = torch.zeros(1, dtype=torch.int64)
            storage[LAMBDA_MATRIX_NAME] = torch.zeros(
                (n_out, n_in), dtype=dtype, device=activation.device
            )
            for name in (ACTIVATION_EIGENVECTORS_NAME, GRADIENT_EIGENVECTORS_NAME):
                if storage[name] is None:
                    raise RuntimeError(
                        f"EK-FAC eigenvectors of module {self.module.name} are missing; fit "
                        "the covariance factors and their eigendecomposition first"
                    )
                storage[name] = storage[name].to(dtype=dtype, device=activation.device)

        rotated_activation = torch.matmul(
            activation.to(dtype), storage[ACTIVATION_EIGENVECTORS_NAME]
        )
        rotated_gradient = torch.matmul(gradient.to(dtype), storage[GRADIENT_EIGENVECTORS_NAME])
        rotated = torch.einsum("bto,bti->boi", rotated_gradient, rotated_activation)
        if self.module.gradient_scale != 1.0:
            rotated.mul_(self.module.gradient_scale)
        storage[NUM_LAMBDA_PROCESSED].add_(batch_size)
        storage[LAMBDA_MATRIX_NAME].add_(rotated.square_().sum(dim=0))


def install_token_lambda(model: torch.nn.Module) -> int:
    """Give every tracked linear module of a kronfluence-prepared ``model`` the token tracker.

    Returns the number of modules changed. Call it after ``prepare_model`` and before
    fitting factors.
    """
    changed = 0
    for module in model.modules():
        if isinstance(module, TrackedModule) and isinstance(module, TrackedLinear):
            module._trackers[ModuleMode.LAMBDA] = TokenLambdaTracker(module)
            changed += 1
    return changed
