"""Fine-tuning loop shared by every victim, in one process or under ``accelerate launch``.

A plain process (``WORLD_SIZE`` unset or 1) trains on the model's own device with plain
PyTorch, as the victims always did, so a seed gives the same numbers as before this loop
was shared. When a launcher such as ``accelerate launch`` or ``torchrun`` starts several
processes, the model, optimizer, data loader and scheduler go through
``Accelerator.prepare`` (data-parallel training with DDP). Each process then trains on its
own share of every epoch's shuffled examples, with ``batch_size`` examples per process and
step. The per-example losses are gathered from every process with their example indices,
so each process returns the whole ``epoch_losses`` array.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

BatchLosses = Callable[[dict[str, torch.Tensor], torch.nn.Module], torch.Tensor]


@dataclass(frozen=True)
class TrainingConfig:
    """Fine-tuning hyperparameters. ``max_length`` counts tokens of the formatted input.

    Under a multi-process launch ``batch_size`` is the batch of each process, so one
    optimizer step uses ``batch_size`` times the number of processes examples.
    """

    # With three epochs, MiniLM learned several triggers too weakly. At 3% poisons, four
    # attacks stayed at an ASR of 0.69-0.89 on some seeds (benchmarks/README.md).
    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_length: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8 tokens, got {self.max_length}")


@dataclass
class TrainingHistory:
    """Record of one fine-tuning run.

    ``epoch_losses`` has shape (epochs, n_train): the loss of each training example in the
    minibatch step that used it, before that step's update.
    """

    epoch_losses: np.ndarray
    seconds: float
    mean_loss_per_epoch: list[float] = field(default_factory=list)


def launched_processes() -> int:
    """Return the number of training processes that the launcher started (``WORLD_SIZE``).

    ``accelerate launch`` and ``torchrun`` set ``WORLD_SIZE``; a plain process has none,
    which counts as 1.
    """
    return int(os.environ.get("WORLD_SIZE", "1"))


def distributed_device() -> torch.device:
    """Return this process's device under a multi-process launch, as accelerate assigns it.

    ``Accelerator`` reads ``ACCELERATE_USE_CPU``, so a CPU launch gets the gloo backend and
    the CPU even where GPUs exist. Its state is shared with the ``Accelerator`` of
    :func:`fine_tune`.
    """
    from accelerate import Accelerator

    return Accelerator().device


def fine_tune(
    model: torch.nn.Module,
    dataset: Dataset,
    collate: Callable[[list], dict[str, torch.Tensor]],
    batch_losses: BatchLosses,
    config: TrainingConfig,
) -> TrainingHistory:
    """Fine-tune the trainable weights of ``model`` with AdamW and a linear warm-up/decay.

    ``batch_losses(batch, module)`` returns each example's loss, shape (batch,), computed by
    calling ``module``: ``model`` itself in one process, its DDP wrapper under a
    multi-process launch. The optimised loss is the batch mean, and gradients are clipped
    to norm 1. The model is left in eval mode on the device it started on.
    """
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(
        range(len(dataset)), batch_size=config.batch_size, shuffle=True, generator=generator
    )
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        parameters, lr=config.learning_rate, weight_decay=config.weight_decay
    )
    # The scheduler counts single-process steps; accelerate's prepared scheduler steps once
    # per process at each optimizer step, so the schedule spans the same examples.
    total_steps = config.epochs * len(loader)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * total_steps), total_steps
    )

    accelerator = None
    start_device = _model_device(model)
    trained: torch.nn.Module = model
    if launched_processes() > 1:
        from accelerate import Accelerator

        accelerator = Accelerator()
        trained, optimizer, loader, scheduler = accelerator.prepare(
            model, optimizer, loader, scheduler
        )
    is_main = accelerator is None or accelerator.is_main_process
    if accelerator is not None and is_main:
        logger.info(
            "Fine-tuning in %d processes (%s), %d examples per process and step",
            accelerator.num_processes,
            accelerator.distributed_type,
            config.batch_size,
        )

    epoch_losses = np.zeros((config.epochs, len(dataset)), dtype=np.float32)
    start = time.perf_counter()
    model.train()
    progress = tqdm(
        total=config.epochs * len(loader),
        desc="fine-tuning",
        unit="step",
        leave=False,
        disable=not is_main,
    )
    for epoch in range(config.epochs):
        for batch_indices in loader:
            batch = collate([dataset[int(i)] for i in batch_indices])
            losses = batch_losses(batch, trained)
            _record_losses(epoch_losses[epoch], batch_indices, losses.detach(), accelerator)
            optimizer.zero_grad(set_to_none=True)
            if accelerator is None:
                losses.mean().backward()
                torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            else:
                accelerator.backward(losses.mean())
                accelerator.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            scheduler.step()
            progress.update(1)
        if is_main:
            logger.info(
                "epoch %d/%d: mean training loss %.4f",
                epoch + 1,
                config.epochs,
                float(epoch_losses[epoch].mean()),
            )
    progress.close()

    if accelerator is not None:
        model = accelerator.unwrap_model(trained)
        accelerator.free_memory()
        model.to(start_device)
    model.eval()
    seconds = time.perf_counter() - start
    if is_main:
        logger.info("Fine-tuned on %d examples in %.1f s", len(dataset), seconds)
    return TrainingHistory(
        epoch_losses=epoch_losses,
        seconds=seconds,
        mean_loss_per_epoch=[float(row.mean()) for row in epoch_losses],
    )


def _model_device(model: torch.nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _record_losses(
    row: np.ndarray, batch_indices: torch.Tensor, losses: torch.Tensor, accelerator
) -> None:
    """Write each example's loss into ``row`` at its index, gathering from every process.

    ``gather_for_metrics`` drops the examples that the prepared loader repeats to give
    every process a full last batch, so each index is written once per epoch.
    """
    if accelerator is not None:
        batch_indices, losses = accelerator.gather_for_metrics(
            (batch_indices.to(losses.device), losses)
        )
    row[batch_indices.cpu().numpy()] = losses.float().cpu().numpy()
