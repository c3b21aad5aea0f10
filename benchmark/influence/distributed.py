"""Influence split between the processes of a multi-process launch (``accelerate launch``).

kronfluence 1.0.1 has a distributed mode: its ``State`` stores the rank and the process
count, its samplers give each process a share of the data, and its trackers sum the
covariance, Lambda and query-gradient statistics across processes. It turns that mode on
only when ``LOCAL_RANK`` is set and CUDA is available, and then uses NCCL on the GPUs.
This module uses that mode under a GPU launch as kronfluence sets it up, and adds what a
CPU launch (gloo) needs, because kronfluence 1.0.1 assumes CUDA wherever it branches on
``state.use_distributed``:

- ``State`` is put into distributed mode on the CPU device (:func:`kronfluence_launch_state`);
- the model is wrapped in DDP without ``device_ids``, which kronfluence would set to the
  local rank (:func:`prepare_model_for_launch`);
- the trackers' ``synchronize`` methods skip their reductions unless CUDA is available, so
  each tracked module gets trackers that reduce on any device
  (:func:`install_any_device_trackers`);
- ``kronfluence.utils.logger.get_time`` calls ``torch.cuda.synchronize`` in distributed
  mode, so :func:`kronfluence_timing` swaps it for a CPU-safe clock during kronfluence calls.

In a single process (no launch, or a launch of one process) every helper here does
nothing, so results stay exactly those of a plain run.

NOTE: the tracker classes and the ``get_time`` swap depend on internals of kronfluence
1.0.1, so :func:`kronfluence_launch_state` rejects other versions under a CPU launch.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import version
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

SUPPORTED_KRONFLUENCE = "1.0.1"

T = TypeVar("T")


# -- process state ------------------------------------------------------------------------
def kronfluence_launch_state(world_size: int):
    """Return kronfluence's ``State`` in distributed mode for a launch of ``world_size`` processes.

    The process group comes from accelerate (the one that fine-tuning uses), so
    ``ACCELERATE_USE_CPU=true`` gives gloo on the CPU and a GPU launch gives NCCL. On a GPU
    kronfluence sets up its own state (device ``cuda:LOCAL_RANK``). On the CPU this function
    sets the fields that kronfluence reads: the rank, the process count and the device.
    """
    from kronfluence.utils.state import State

    from benchmark.models.training import distributed_device

    device = distributed_device()  # initialises the process group through accelerate
    if not dist.is_initialized():
        raise RuntimeError(
            f"WORLD_SIZE is {world_size} but torch.distributed has no process group. Start "
            "the processes with accelerate launch or torchrun."
        )
    if dist.get_world_size() != world_size:
        raise RuntimeError(
            f"the process group has {dist.get_world_size()} processes but WORLD_SIZE is "
            f"{world_size}. Start every process with the same launcher."
        )

    if device.type == "cuda":
        state = State(cpu=False)
    else:
        installed = version("kronfluence")
        if installed != SUPPORTED_KRONFLUENCE:
            raise RuntimeError(
                f"influence under a CPU launch needs kronfluence {SUPPORTED_KRONFLUENCE}, "
                f"found {installed}. Install kronfluence=={SUPPORTED_KRONFLUENCE} or compute "
                "influence in a single process."
            )
        backend = dist.get_backend()
        if backend != "gloo":
            raise RuntimeError(
                f"influence on the CPU needs the gloo backend, but the process group uses "
                f"{backend}. Set ACCELERATE_USE_CPU=true for a CPU launch."
            )
        state = State(cpu=True)
        # State shares one dict between its instances, so these writes reach every
        # State that kronfluence creates later in this process.
        state.num_processes = dist.get_world_size()
        state.process_index = dist.get_rank()
        state.local_process_index = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        state.device = torch.device("cpu")

    if state.num_processes != world_size or state.process_index != dist.get_rank():
        raise RuntimeError(
            f"kronfluence's State has process {state.process_index} of {state.num_processes}, "
            f"but this is process {dist.get_rank()} of {world_size}. A State made before the "
            "launch was detected is still in use, so build the InfluenceEngine only after "
            "the launch has started."
        )
    if state.is_main_process:
        logger.info(
            "Computing influence in %d processes (%s backend on %s)",
            state.num_processes,
            dist.get_backend(),
            state.device.type,
        )
    return state


def is_cpu_launch(state) -> bool:
    """Return whether ``state`` is kronfluence's distributed mode on the CPU."""
    return bool(state.use_distributed) and state.device.type == "cpu"


def fisher_label_seed(seed: int, state) -> int:
    """Return the seed for the Fisher labels that this process samples during factor fitting.

    A single process uses ``seed`` itself. Under a launch each process fits on its own
    examples, and one shared seed would give every process the same random draws, so each
    process derives its own seed from ``seed`` and its rank.
    """
    if not state.use_distributed:
        return seed
    return int(np.random.SeedSequence([seed, state.process_index]).generate_state(1)[0])


# -- model --------------------------------------------------------------------------------
def prepare_model_for_launch(model: torch.nn.Module, state) -> torch.nn.Module:
    """Return ``model`` ready for kronfluence's distributed mode.

    On the CPU the tracked modules get trackers that reduce over gloo, and the model is
    wrapped in DDP without ``device_ids``. kronfluence wraps an unwrapped model itself with
    ``device_ids=[local rank]``, which only works for a model on a GPU, so on a GPU the
    model is returned unchanged.
    """
    if not is_cpu_launch(state):
        return model
    install_any_device_trackers(model)
    return torch.nn.parallel.DistributedDataParallel(model)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """Return the module inside a DDP wrapper, or ``model`` itself."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return model.module
    return model


def install_any_device_trackers(model: torch.nn.Module) -> None:
    """Make the trackers of every tracked module of ``model`` reduce on any device.

    Each covariance, Lambda, gradient and precondition tracker is replaced by an instance
    of a subclass of its own class whose ``synchronize`` also runs without CUDA. The
    subclass keeps every other method, so a tracker that replaced kronfluence's own keeps
    its computation. Call this after any such replacement.
    """
    from kronfluence.module.tracked_module import ModuleMode, TrackedModule

    synchronizers = {
        ModuleMode.COVARIANCE: _CovarianceSync,
        ModuleMode.LAMBDA: _LambdaSync,
        ModuleMode.GRADIENT_AGGREGATION: _GradientSync,
        ModuleMode.PRECONDITION_GRADIENT: _PreconditionSync,
    }
    for module in model.modules():
        if not isinstance(module, TrackedModule):
            continue
        if module.current_mode != ModuleMode.DEFAULT:
            raise RuntimeError(
                f"tracked module {module.name} is in mode {module.current_mode}. Replace its "
                "trackers before any kronfluence computation."
            )
        for mode, synchronizer in synchronizers.items():
            tracker_class = type(module._trackers[mode])
            if not issubclass(tracker_class, synchronizer):
                module._trackers[mode] = _synchronized_class(synchronizer, tracker_class)(module)


@functools.cache
def _synchronized_class(synchronizer: type, tracker_class: type) -> type:
    return type(f"{tracker_class.__name__}AnyDevice", (synchronizer, tracker_class), {})


def _reduce_to_main(storage: dict, names: list[str]) -> None:
    for name in names:
        storage[name] = storage[name].contiguous()
        dist.reduce(tensor=storage[name], dst=0, op=dist.ReduceOp.SUM)


class _CovarianceSync:
    """Sends the covariance sums to the main process, which saves them (CPU included)."""

    def synchronize(self, num_processes: int) -> None:
        from kronfluence.utils.constants import COVARIANCE_FACTOR_NAMES

        if dist.is_initialized() and self.exist():
            _reduce_to_main(self.module.storage, COVARIANCE_FACTOR_NAMES)


class _LambdaSync:
    """Sends the Lambda sums to the main process, which saves them (CPU included)."""

    def synchronize(self, num_processes: int) -> None:
        from kronfluence.utils.constants import LAMBDA_FACTOR_NAMES

        if dist.is_initialized() and self.exist():
            _reduce_to_main(self.module.storage, LAMBDA_FACTOR_NAMES)


class _GradientSync:
    """Sums the aggregated query gradient over the processes (CPU included).

    Every process needs a gradient of the same shape, so a process without queries fails
    here, as it does in kronfluence on GPUs.
    """

    def synchronize(self, num_processes: int = 1) -> None:
        from kronfluence.utils.constants import AGGREGATED_GRADIENT_NAME

        if not dist.is_initialized():
            return
        gradient = self.module.storage[AGGREGATED_GRADIENT_NAME]
        if gradient is None:
            raise RuntimeError(
                f"tracked module {self.module.name} has no query gradient in process "
                f"{dist.get_rank()}. Give every process at least one query."
            )
        gradient = gradient.contiguous()
        dist.all_reduce(tensor=gradient, op=dist.ReduceOp.SUM)
        self.module.storage[AGGREGATED_GRADIENT_NAME] = gradient


class _PreconditionSync:
    """Stacks the per-query preconditioned gradients of all processes (CPU included).

    gloo lacks ``all_gather_into_tensor``, so this gathers into a list and stacks it in
    kronfluence's layout: query i of process p lands at row ``i * num_processes + p``.
    """

    def synchronize(self, num_processes: int = 1) -> None:
        from kronfluence.utils.constants import PRECONDITIONED_GRADIENT_NAME

        stored = self.module.storage[PRECONDITIONED_GRADIENT_NAME]
        if not dist.is_initialized() or stored is None:
            return
        if isinstance(stored, list):
            self.module.storage[PRECONDITIONED_GRADIENT_NAME] = [
                _interleave_gathered(part, num_processes) for part in stored
            ]
        else:
            self.module.storage[PRECONDITIONED_GRADIENT_NAME] = _interleave_gathered(
                stored, num_processes
            )


def _interleave_gathered(tensor: torch.Tensor, num_processes: int) -> torch.Tensor:
    parts = [torch.empty_like(tensor) for _ in range(num_processes)]
    dist.all_gather(parts, tensor.contiguous())
    stacked = torch.stack(parts, dim=0)  # (processes, queries, ...)
    return stacked.transpose(0, 1).reshape(num_processes * tensor.shape[0], *tensor.shape[1:])


@contextlib.contextmanager
def kronfluence_timing(state) -> Iterator[None]:
    """Let kronfluence's factor and score computers time their passes under a CPU launch.

    In distributed mode kronfluence 1.0.1's ``get_time`` calls ``torch.cuda.synchronize``,
    which fails without CUDA. Under a CPU launch this swaps the function that the two
    computer modules imported for one that takes the maximum wall-clock time over the
    processes without touching CUDA, and puts the original back on exit. Elsewhere it does
    nothing.
    """
    if not is_cpu_launch(state):
        yield
        return
    from kronfluence.computer import factor_computer, score_computer

    modules = (factor_computer, score_computer)
    originals = [module.get_time for module in modules]
    for module in modules:
        module.get_time = _cpu_get_time
    try:
        yield
    finally:
        for module, original in zip(modules, originals, strict=True):
            module.get_time = original


def _cpu_get_time(state) -> float:
    import time

    now = torch.tensor(time.time(), dtype=torch.float64)
    dist.all_reduce(now, op=dist.ReduceOp.MAX)
    return float(now.item())


# -- coordination -------------------------------------------------------------------------
def barrier(state) -> None:
    """Wait until every process reaches this call. A single process returns at once."""
    state.wait_for_everyone()


def broadcast_from_main(value: T, state) -> T:
    """Return the main process's ``value`` in every process (``value`` itself when single)."""
    if not state.use_distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0, device=_collective_device(state))
    return holder[0]


def shared_process_id(state) -> int:
    """Return an id for names that every process of this run shares: the main process's pid.

    In a single process this is ``os.getpid()``, so parallel plain runs still get
    distinct temporary folders.
    """
    return broadcast_from_main(os.getpid(), state)


def run_on_main(action: Callable[[], None], description: str, state) -> None:
    """Run ``action`` on the main process only, and raise in every process if it failed.

    The other processes wait for the outcome, so a failure on the main process ends every
    process with an error instead of leaving them waiting at the next collective call.
    """
    if not state.use_distributed:
        action()
        return
    failure: str | None = None
    caught: Exception | None = None
    if state.is_main_process:
        try:
            action()
        except Exception as error:  # re-raised below, after the other processes learn of it
            caught = error
            failure = f"{type(error).__name__}: {error}"
    failure = broadcast_from_main(failure, state)
    if caught is not None:
        raise caught
    if failure is not None:
        raise RuntimeError(f"{description} failed on the main process: {failure}")


def _collective_device(state) -> torch.device:
    # NCCL sends objects and tensors through the GPU, and gloo through the CPU.
    return state.device if dist.get_backend() == "nccl" else torch.device("cpu")


# -- sharding -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    """The examples of one process: every ``num_processes``-th index from ``rank``."""

    rank: int
    num_processes: int
    size: int

    @property
    def indices(self) -> list[int]:
        return list(range(self.rank, self.size, self.num_processes))


def shard_of(size: int, state) -> Shard:
    """Return this process's strided shard of ``size`` examples (all of them when single).

    Strided shards are disjoint, cover every index once, and differ in size by at most
    one. On a length-sorted data set they give every process a similar mix of lengths.
    """
    if not state.use_distributed:
        return Shard(0, 1, size)
    return Shard(state.process_index, state.num_processes, size)


def chunk_balanced_order(size: int, num_processes: int) -> np.ndarray:
    """Return a permutation that turns contiguous chunks into strided shards.

    kronfluence's training-set sampler for pairwise scores gives each process one
    contiguous chunk. On a length-sorted data set the first process would then get every
    long example. Reading the data set in this order gives each process the examples of
    its strided shard instead (up to one example at the chunk borders).
    """
    return np.concatenate(
        [np.arange(rank, size, num_processes, dtype=np.int64) for rank in range(num_processes)]
    )


def gather_shards(values: torch.Tensor, shard: Shard, state) -> torch.Tensor:
    """Return every process's ``values`` (shape (rows, shard size)) as (rows, size) in index order.

    Every process receives the whole result. In a single process ``values`` comes back as
    it is.
    """
    if not state.use_distributed:
        return values
    device = _collective_device(state)
    rows = values.shape[0]
    width = -(-shard.size // shard.num_processes)  # the largest shard
    padded = torch.zeros((rows, width), dtype=values.dtype, device=device)
    padded[:, : values.shape[1]] = values.to(device)
    parts = [torch.empty_like(padded) for _ in range(shard.num_processes)]
    dist.all_gather(parts, padded)

    gathered = torch.empty((rows, shard.size), dtype=values.dtype)
    for rank, part in enumerate(parts):
        indices = Shard(rank, shard.num_processes, shard.size).indices
        gathered[:, indices] = part[:, : len(indices)].cpu()
    return gathered


def sum_over_processes(tensors: dict[str, torch.Tensor | None], state) -> dict[str, torch.Tensor]:
    """Return the element-wise sum over processes of each named tensor.

    A process without data for a name passes None, and then contributes zeros of the shape
    and dtype that the other processes report. At least one process must pass a tensor
    for every name.
    """
    if not state.use_distributed:
        missing = [name for name, tensor in tensors.items() if tensor is None]
        if missing:
            raise ValueError(f"missing tensors to sum for {missing}")
        return dict(tensors)
    layouts = {
        name: None if tensor is None else (tuple(tensor.shape), str(tensor.dtype))
        for name, tensor in tensors.items()
    }
    everyone: list[dict] = [{} for _ in range(state.num_processes)]
    dist.all_gather_object(everyone, layouts)

    summed: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if tensor is None:
            layout = next((other[name] for other in everyone if other[name] is not None), None)
            if layout is None:
                raise ValueError(f"missing tensor for {name} in every process")
            shape, dtype_name = layout
            tensor = torch.zeros(shape, dtype=getattr(torch, dtype_name.removeprefix("torch.")))
        tensor = tensor.to(state.device).contiguous()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        summed[name] = tensor
    return summed
