"""Tokenized data sets and padding collation shared by training, inference and influence."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset


def format_instruction(definition: str, text: str) -> str:
    """Return the instruction-formatted input: the task definition, a blank line, the text."""
    return f"{definition}\n\n{text}" if definition else text


class TokenizedDataset(Dataset):
    """Pre-tokenized classification inputs; items are dicts of 1-D tensors."""

    def __init__(self, tokenizer, texts: Sequence[str], labels: Sequence[int], max_length: int):
        encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
        self.features = [
            {key: encoded[key][i] for key in encoded.keys()} for i in range(len(texts))
        ]
        self.labels = list(labels)
        self.pad_token_id = tokenizer.pad_token_id or 0

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {key: torch.tensor(value) for key, value in self.features[index].items()}
        item["labels"] = torch.tensor(self.labels[index])
        return item


class PaddingCollator:
    """Pad every sequence field of a batch to the longest item; ``attention_mask`` pads with 0."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {}
        for key in items[0]:
            values = [item[key] for item in items]
            if values[0].dim() == 0:
                batch[key] = torch.stack(values)
                continue
            pad_value = self.pad_token_id if key == "input_ids" else 0
            batch[key] = torch.nn.utils.rnn.pad_sequence(
                values, batch_first=True, padding_value=pad_value
            )
        return batch
