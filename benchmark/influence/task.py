"""kronfluence ``Task`` for sequence classification victims."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from kronfluence.task import Task

MEASUREMENTS = ("loss", "margin")


class ClassificationTask(Task):
    """Training loss and query measurement of a sequence classifier.

    Batches are dicts with ``input_ids``, ``attention_mask``, optional ``token_type_ids`` and
    ``labels``. The measurement is either the cross-entropy of the labelled class ("loss")
    or the negated margin ``-(z_y - logsumexp_{c != y} z_c)`` ("margin"). Both decrease when
    the model grows more confident in the query's label, so with kronfluence's sign
    convention a positive influence score means that up-weighting the training example
    makes the model more confident in the query's label.
    """

    def __init__(self, measurement: str = "loss", tracked_modules: list[str] | None = None):
        if measurement not in MEASUREMENTS:
            raise ValueError(f"measurement must be one of {MEASUREMENTS}, got {measurement!r}")
        self.measurement = measurement
        self.tracked_modules = tracked_modules

    @staticmethod
    def _logits(batch: dict[str, torch.Tensor], model: torch.nn.Module) -> torch.Tensor:
        inputs = {key: value for key, value in batch.items() if key != "labels"}
        return model(**inputs).logits

    def compute_train_loss(self, batch: Any, model: torch.nn.Module, sample: bool = False):
        logits = self._logits(batch, model)
        if sample:
            # Labels drawn from the model's own predictive distribution give the true
            # Fisher, which kronfluence uses for the covariance factors.
            with torch.no_grad():
                labels = torch.multinomial(torch.softmax(logits.detach(), dim=-1), 1).flatten()
        else:
            labels = batch["labels"]
        return F.cross_entropy(logits, labels, reduction="sum")

    def compute_measurement(self, batch: Any, model: torch.nn.Module) -> torch.Tensor:
        logits = self._logits(batch, model)
        labels = batch["labels"]
        if self.measurement == "loss":
            return F.cross_entropy(logits, labels, reduction="sum")
        rows = torch.arange(logits.shape[0])
        correct = logits[rows, labels]
        others = logits.clone()
        others[rows, labels] = -torch.inf
        margins = correct - others.logsumexp(dim=-1)
        return -margins.sum()

    def get_influence_tracked_modules(self) -> list[str] | None:
        return self.tracked_modules

    def get_attention_mask(self, batch: Any) -> torch.Tensor:
        return batch["attention_mask"]
