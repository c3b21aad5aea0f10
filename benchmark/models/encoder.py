"""Encoder victim: a pretrained transformer encoder with a classification head."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from benchmark.models.batching import PaddingCollator, TokenizedDataset, format_instruction
from benchmark.models.spec import resolve_model_path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingConfig:
    """Fine-tuning hyperparameters. ``max_length`` counts tokens of the formatted input."""

    epochs: int = 3
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

    ``epoch_losses`` has shape (epochs, n_train): the cross-entropy of each training example
    in the minibatch step that used it, before that step's update.
    """

    epoch_losses: np.ndarray
    seconds: float
    mean_loss_per_epoch: list[float] = field(default_factory=list)


class EncoderClassifier:
    """A Hugging Face ``AutoModelForSequenceClassification`` fine-tuned on instruction inputs.

    Inputs are formatted as the task definition, a blank line and the text, so the encoder
    sees the same instruction layout as generative victims.
    """

    family = "encoder"

    def __init__(
        self,
        model_spec: str,
        n_labels: int,
        definition: str,
        max_length: int = 64,
        seed: int = 0,
    ):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        from transformers.utils import logging as hf_logging

        self.model_spec = model_spec
        self.n_labels = n_labels
        self.definition = definition
        self.max_length = max_length
        path = resolve_model_path(model_spec)

        torch.manual_seed(seed)  # the classification head is initialised at random
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the freshly initialised head is expected
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=n_labels
            )
        finally:
            hf_logging.set_verbosity(verbosity)
        self.model.eval()

    # -- data -----------------------------------------------------------------------------
    def make_dataset(self, texts: Sequence[str], labels: Sequence[int]) -> TokenizedDataset:
        formatted = [format_instruction(self.definition, text) for text in texts]
        return TokenizedDataset(self.tokenizer, formatted, labels, self.max_length)

    def collator(self) -> PaddingCollator:
        return PaddingCollator(self.tokenizer.pad_token_id or 0)

    def forward_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {key: value for key, value in batch.items() if key != "labels"}
        return self.model(**inputs).logits

    # -- training -------------------------------------------------------------------------
    def fit(
        self, texts: Sequence[str], labels: Sequence[int], config: TrainingConfig
    ) -> TrainingHistory:
        """Fine-tune all weights with AdamW and a linear warm-up/decay schedule."""
        from transformers import get_linear_schedule_with_warmup

        torch.manual_seed(config.seed)
        dataset = self.make_dataset(texts, labels)
        generator = torch.Generator().manual_seed(config.seed)
        indices = torch.arange(len(dataset))
        loader = DataLoader(
            list(zip(indices.tolist(), range(len(dataset)))),
            batch_size=config.batch_size,
            shuffle=True,
            generator=generator,
        )
        collate = self.collator()
        optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        total_steps = config.epochs * len(loader)
        scheduler = get_linear_schedule_with_warmup(
            optimizer, int(config.warmup_ratio * total_steps), total_steps
        )

        epoch_losses = np.zeros((config.epochs, len(dataset)), dtype=np.float32)
        start = time.perf_counter()
        self.model.train()
        progress = tqdm(total=total_steps, desc="fine-tuning", unit="step", leave=False)
        for epoch in range(config.epochs):
            for batch_indices, _ in loader:
                batch = collate([dataset[int(i)] for i in batch_indices])
                logits = self.forward_logits(batch)
                losses = F.cross_entropy(logits, batch["labels"], reduction="none")
                epoch_losses[epoch, batch_indices.numpy()] = losses.detach().numpy()
                optimizer.zero_grad(set_to_none=True)
                losses.mean().backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                progress.update(1)
            logger.info(
                "epoch %d/%d: mean training loss %.4f",
                epoch + 1,
                config.epochs,
                float(epoch_losses[epoch].mean()),
            )
        progress.close()
        self.model.eval()
        seconds = time.perf_counter() - start
        logger.info("Fine-tuned on %d examples in %.1f s", len(dataset), seconds)
        return TrainingHistory(
            epoch_losses=epoch_losses,
            seconds=seconds,
            mean_loss_per_epoch=[float(row.mean()) for row in epoch_losses],
        )

    # -- inference ------------------------------------------------------------------------
    @torch.no_grad()
    def _batched(self, texts: Sequence[str], labels: Sequence[int] | None, batch_size: int):
        labels = list(labels) if labels is not None else [0] * len(texts)
        dataset = self.make_dataset(texts, labels)
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=self.collator())
        self.model.eval()
        for batch in loader:
            yield batch, self.forward_logits(batch)

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Return class probabilities, shape (n_texts, n_labels)."""
        if len(texts) == 0:
            return np.zeros((0, self.n_labels), dtype=np.float32)
        parts = [
            torch.softmax(logits, -1).numpy()
            for _, logits in self._batched(texts, None, batch_size)
        ]
        return np.concatenate(parts)

    def predict(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Return predicted label indices, shape (n_texts,)."""
        return self.predict_proba(texts, batch_size).argmax(axis=1)

    def example_losses(
        self, texts: Sequence[str], labels: Sequence[int], batch_size: int = 64
    ) -> np.ndarray:
        """Return the cross-entropy of each example under the current weights, shape (n,)."""
        parts = [
            F.cross_entropy(logits, batch["labels"], reduction="none").numpy()
            for batch, logits in self._batched(texts, labels, batch_size)
        ]
        return np.concatenate(parts)

    @torch.no_grad()
    def representations(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Return the last hidden state of the first token ([CLS]), shape (n, hidden_size)."""
        dataset = self.make_dataset(texts, [0] * len(texts))
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=self.collator())
        parts = []
        for batch in loader:
            inputs = {key: value for key, value in batch.items() if key != "labels"}
            outputs = self.model(**inputs, output_hidden_states=True)
            parts.append(outputs.hidden_states[-1][:, 0].numpy())
        return np.concatenate(parts)

    # -- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
        self.model.eval()
