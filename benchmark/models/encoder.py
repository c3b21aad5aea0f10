"""Encoder victim: a pretrained transformer encoder with a classification head."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from benchmark.models.batching import PaddingCollator, TokenizedDataset, format_instruction
from benchmark.models.spec import resolve_model_path
from benchmark.models.training import TrainingConfig, TrainingHistory, fine_tune

logger = logging.getLogger(__name__)


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

    def batch_losses(
        self, batch: dict[str, torch.Tensor], model: torch.nn.Module | None = None
    ) -> torch.Tensor:
        """Return each example's cross-entropy, shape (batch,), computed by ``model``.

        ``model`` None means this victim's model; training passes its DDP wrapper instead
        under a multi-process launch.
        """
        model = self.model if model is None else model
        inputs = {key: value for key, value in batch.items() if key != "labels"}
        return F.cross_entropy(model(**inputs).logits, batch["labels"], reduction="none")

    # -- training -------------------------------------------------------------------------
    def fit(
        self, texts: Sequence[str], labels: Sequence[int], config: TrainingConfig
    ) -> TrainingHistory:
        """Fine-tune all weights with AdamW and a linear warm-up/decay schedule.

        Runs under ``accelerate launch`` too; see :mod:`benchmark.models.training`.
        """
        dataset = self.make_dataset(texts, labels)
        return fine_tune(self.model, dataset, self.collator(), self.batch_losses, config)

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
