"""kronfluence ``Task`` classes and batch helpers for instruction tuning of language models.

An instruction example is a prompt and an answer. Only answer tokens carry labels, so the
training loss, the Fisher samples and the measurement all ignore the prompt. Labels are
``IGNORE_INDEX`` (-100) on prompt and padding tokens, as in Hugging Face's loss functions.

Sign convention as in :class:`~benchmark.influence.task.ClassificationTask`: both
measurements decrease when the model grows more confident in the query's answer, so a
positive kronfluence score means that up-weighting the training example helps the query.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from kronfluence.module.tracked_module import TrackedModule
from kronfluence.task import Task

from benchmark.influence.task import MEASUREMENTS

IGNORE_INDEX = -100

# Decoder modules that project the encoder's hidden states: the key and value projections
# of cross-attention in T5 (``EncDecAttention.k``/``.v``) and in BART-style models
# (``encoder_attn.k_proj``/``.v_proj``). Their inputs have the encoder's sequence length.
CROSS_ATTENTION_ENCODER_INPUT_PATTERN = r"(EncDecAttention\.[kv]|encoder_attn\.[kv]_proj)$"


# -- examples and batches -------------------------------------------------------------------
def _token_ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _truncate_prompt(tokenizer, prompt_ids: list[int], budget: int) -> list[int]:
    """Cut ``prompt_ids`` to ``budget`` tokens on the tokenizer's ``truncation_side``."""
    if len(prompt_ids) <= budget:
        return prompt_ids
    if getattr(tokenizer, "truncation_side", "right") == "left":
        return prompt_ids[len(prompt_ids) - budget :]
    return prompt_ids[:budget]


def build_causal_lm_example(
    tokenizer, prompt: str, answer: str, max_length: int
) -> dict[str, list[int]]:
    """Tokenize a prompt-answer pair for a decoder-only model, with labels on the answer only.

    Prompt and answer are tokenized separately and concatenated, so the answer tokens are
    the same whatever the prompt. Give the answer its leading space (" positive") where
    the tokenizer encodes spaces in tokens, as BPE tokenizers do. The sequence starts with
    the tokenizer's BOS token and ends with its EOS token when it has them. EOS belongs to
    the answer and carries a label. When the sequence is longer than ``max_length``,
    prompt tokens are cut on the tokenizer's ``truncation_side``. Labels equal
    ``input_ids`` and are not shifted.

    Raises:
        ValueError: if the answer is empty or the answer alone is longer than ``max_length``.
    """
    prefix = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    answer_ids = _token_ids(tokenizer, answer)
    if not answer_ids:
        raise ValueError(f"answer {answer!r} has no tokens; pass a non-empty answer")
    if tokenizer.eos_token_id is not None:
        answer_ids.append(tokenizer.eos_token_id)
    budget = max_length - len(prefix) - len(answer_ids)
    if budget < 0:
        raise ValueError(
            f"answer {answer!r} needs {len(answer_ids) + len(prefix)} tokens, more than "
            f"max_length={max_length}; raise max_length"
        )
    prompt_ids = prefix + _truncate_prompt(tokenizer, _token_ids(tokenizer, prompt), budget)

    input_ids = prompt_ids + answer_ids
    return {
        "input_ids": input_ids,
        "attention_mask": [1] * len(input_ids),
        "labels": [IGNORE_INDEX] * len(prompt_ids) + answer_ids,
    }


def build_seq2seq_example(
    tokenizer, prompt: str, answer: str, max_length: int
) -> dict[str, list[int]]:
    """Tokenize a prompt-answer pair for an encoder-decoder model.

    The encoder input is the prompt with the tokenizer's special tokens, truncated to
    ``max_length``. The decoder targets (``labels``) are the answer tokens, followed by the
    tokenizer's EOS token when it has one. The model builds its decoder input by shifting
    the labels right (see :class:`Seq2SeqTask`).

    Raises:
        ValueError: if the answer is empty or longer than ``max_length`` tokens.
    """
    encoded = tokenizer(prompt, truncation=True, max_length=max_length)
    labels = _token_ids(tokenizer, answer)
    if not labels:
        raise ValueError(f"answer {answer!r} has no tokens; pass a non-empty answer")
    if tokenizer.eos_token_id is not None:
        labels.append(tokenizer.eos_token_id)
    if len(labels) > max_length:
        raise ValueError(
            f"answer {answer!r} needs {len(labels)} tokens, more than max_length={max_length}; "
            "raise max_length"
        )
    return {
        "input_ids": list(encoded["input_ids"]),
        "attention_mask": list(encoded["attention_mask"]),
        "labels": labels,
        "decoder_attention_mask": [1] * len(labels),
    }


class PaddingCollator:
    """Collate examples into a batch of tensors, padding sequences on the right.

    ``input_ids`` and ``decoder_input_ids`` are padded with ``pad_token_id``, ``labels``
    with ``IGNORE_INDEX`` and every other sequence (attention masks) with 0. Scalar values,
    such as class labels, are stacked into a 1-D tensor.
    """

    def __init__(self, pad_token_id: int):
        if pad_token_id is None:
            raise ValueError("pad_token_id is None; set the tokenizer's pad token first")
        self.pad_token_id = pad_token_id

    def _padding_value(self, key: str) -> int:
        if key in ("input_ids", "decoder_input_ids"):
            return self.pad_token_id
        if key == "labels":
            return IGNORE_INDEX
        return 0

    def __call__(self, examples: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        batch = {}
        for key in examples[0]:
            values = [example[key] for example in examples]
            if isinstance(values[0], torch.Tensor) and values[0].dim() == 0:
                batch[key] = torch.stack(values)
                continue
            if not isinstance(values[0], (Sequence, torch.Tensor)):
                batch[key] = torch.tensor(values)
                continue
            length = max(len(value) for value in values)
            padded = torch.full((len(values), length), self._padding_value(key), dtype=torch.long)
            for row, value in enumerate(values):
                padded[row, : len(value)] = torch.as_tensor(value, dtype=torch.long)
            batch[key] = padded
        return batch


def linear_module_names(
    model: torch.nn.Module, include_output_embeddings: bool = False
) -> list[str]:
    """Return the names of the model's ``nn.Linear`` modules, the ones kronfluence can track.

    The output embedding (``lm_head``) is left out by default: its gradient covariance is a
    vocabulary-by-vocabulary matrix (30522² floats, 3.7 GB, for a BERT vocabulary).
    """
    output_embeddings = (
        model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    )
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if module is output_embeddings and not include_output_embeddings:
            continue
        names.append(name)
    return names


# -- losses and measurements ----------------------------------------------------------------
def _answer_token_loss(logits: torch.Tensor, labels: torch.Tensor, sample: bool) -> torch.Tensor:
    """Return the cross-entropy summed over labelled positions.

    The softmax is taken at labelled positions only, which matters with vocabulary-sized
    logits and long prompts. With ``sample=True`` the targets are drawn from the model's
    predictive distribution (without gradient) instead of read from ``labels``.
    """
    labelled = labels != IGNORE_INDEX
    if not bool(labelled.any()):
        raise ValueError(f"batch has no answer tokens: every label is {IGNORE_INDEX}")
    answer_logits = logits[labelled]
    targets = labels[labelled]
    if sample:
        with torch.no_grad():
            probabilities = torch.softmax(answer_logits.detach().float(), dim=-1)
            targets = torch.multinomial(probabilities, 1).flatten()
    return F.cross_entropy(answer_logits, targets, reduction="sum")


def _verbalizer_margin_measurement(
    logits: torch.Tensor, labels: torch.Tensor, verbalizer_token_ids: torch.Tensor
) -> torch.Tensor:
    """Return ``-sum_i (z_y - logsumexp_{v != y} z_v)`` at each example's first answer token.

    ``z`` are the logits of the verbalizer tokens at the position that predicts the first
    labelled token ``y``. Later answer tokens (such as EOS) do not enter the margin.
    """
    labelled = labels != IGNORE_INDEX
    if not bool(labelled.any(dim=1).all()):
        raise ValueError("margin measurement needs at least one answer token per example")
    rows = torch.arange(labels.shape[0], device=labels.device)
    first_positions = labelled.int().argmax(dim=1)
    targets = labels[rows, first_positions]

    is_target = targets.unsqueeze(1) == verbalizer_token_ids.to(targets.device).unsqueeze(0)
    if not bool(is_target.any(dim=1).all()):
        unknown = targets[~is_target.any(dim=1)].tolist()
        raise ValueError(
            f"first answer tokens {unknown} are not in verbalizer_token_ids "
            f"{verbalizer_token_ids.tolist()}; the margin needs single-token verbalizer answers"
        )
    verbalizer_logits = logits[rows, first_positions][:, verbalizer_token_ids.to(logits.device)]
    correct = verbalizer_logits[is_target]
    others = verbalizer_logits.masked_fill(is_target, -torch.inf)
    margins = correct - others.logsumexp(dim=-1)
    return -margins.sum()


class _AnswerTokenTask(Task):
    """Shared loss and measurement over the answer tokens of generative models."""

    def __init__(
        self,
        measurement: str = "loss",
        tracked_modules: list[str] | None = None,
        verbalizer_token_ids: Sequence[int] | None = None,
    ):
        if measurement not in MEASUREMENTS:
            raise ValueError(f"measurement must be one of {MEASUREMENTS}, got {measurement!r}")
        if measurement == "margin" and verbalizer_token_ids is None:
            raise ValueError("measurement='margin' needs verbalizer_token_ids")
        if verbalizer_token_ids is not None:
            ids = list(verbalizer_token_ids)
            if len(ids) < 2 or len(set(ids)) != len(ids):
                raise ValueError(
                    f"verbalizer_token_ids must be at least two distinct token ids, got {ids}"
                )
        self.measurement = measurement
        self.tracked_modules = tracked_modules
        self.verbalizer_token_ids = (
            None
            if verbalizer_token_ids is None
            else torch.tensor(list(verbalizer_token_ids), dtype=torch.long)
        )

    def _aligned_logits(
        self, batch: Any, model: torch.nn.Module
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return logits and labels aligned so that ``logits[:, t]`` predicts ``labels[:, t]``."""
        raise NotImplementedError

    def compute_train_loss(self, batch: Any, model: torch.nn.Module, sample: bool = False):
        # Answer tokens drawn from the model's own predictive distribution (sample=True) give
        # the true Fisher, which kronfluence uses for the covariance factors.
        logits, labels = self._aligned_logits(batch, model)
        return _answer_token_loss(logits, labels, sample)

    def compute_measurement(self, batch: Any, model: torch.nn.Module) -> torch.Tensor:
        logits, labels = self._aligned_logits(batch, model)
        if self.measurement == "loss":
            return _answer_token_loss(logits, labels, sample=False)
        return _verbalizer_margin_measurement(logits, labels, self.verbalizer_token_ids)

    def get_influence_tracked_modules(self) -> list[str] | None:
        return self.tracked_modules


class CausalLMTask(_AnswerTokenTask):
    """Training loss and query measurement of a decoder-only LM on instruction examples.

    Batches are dicts with ``input_ids``, ``attention_mask`` and ``labels`` (see
    :func:`build_causal_lm_example`). Labels are aligned with ``input_ids``: the task, not
    the model, shifts them, so that the logits at position t are scored against the label
    at t + 1. The model is called without labels, so it computes no loss of its own.

    The training loss is the cross-entropy summed over all answer tokens of the batch. The
    measurement is the same sum ("loss") or the negated verbalizer margin at the first
    answer token ("margin"), which needs ``verbalizer_token_ids``, for example the token ids
    of " positive" and " negative".

    ``tracked_modules`` None tracks every ``nn.Linear``, including the output embedding,
    whose factors have vocabulary size. Pass :func:`linear_module_names` to leave it out.
    """

    def _aligned_logits(
        self, batch: Any, model: torch.nn.Module
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return logits[:, :-1], batch["labels"][:, 1:]

    def get_attention_mask(self, batch: Any) -> torch.Tensor:
        return batch["attention_mask"]


class Seq2SeqTask(_AnswerTokenTask):
    """Training loss and query measurement of an encoder-decoder LM (T5, BART) on instructions.

    Batches are dicts with ``input_ids``, ``attention_mask``, ``labels`` (decoder targets,
    ``IGNORE_INDEX`` on padding) and optionally ``decoder_attention_mask``, which defaults
    to ``labels != IGNORE_INDEX``. The decoder input is the labels shifted right by the
    model's ``prepare_decoder_input_ids_from_labels``, so it is always the real answer.
    With ``sample=True`` only the targets are sampled. Loss and measurement are as in
    :class:`CausalLMTask`.

    ``model`` is needed because kronfluence calls :meth:`get_attention_mask` before any
    forward pass, with the batch alone. Encoder modules see the encoder's padding and decoder
    modules the decoder's, so :meth:`get_attention_mask` returns a mask per module name.
    Modules under the encoder, and the decoder modules whose names match
    ``cross_attention_encoder_input_pattern`` (cross-attention key and value projections),
    get the encoder mask. Every other module gets the decoder mask.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        measurement: str = "loss",
        tracked_modules: list[str] | None = None,
        verbalizer_token_ids: Sequence[int] | None = None,
        cross_attention_encoder_input_pattern: str = CROSS_ATTENTION_ENCODER_INPUT_PATTERN,
    ):
        super().__init__(measurement, tracked_modules, verbalizer_token_ids)
        if not hasattr(model, "get_encoder"):
            raise ValueError(
                f"{type(model).__name__} has no get_encoder(); pass an encoder-decoder model"
            )
        self.model = model
        self.cross_attention_encoder_input_pattern = re.compile(
            cross_attention_encoder_input_pattern
        )
        self._encoder_side_names: list[str] | None = None
        self._decoder_side_names: list[str] | None = None

    def _aligned_logits(
        self, batch: Any, model: torch.nn.Module
    ) -> tuple[torch.Tensor, torch.Tensor]:
        labels = batch["labels"]
        decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)
        logits = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=self._decoder_mask(batch),
        ).logits
        return logits, labels

    @staticmethod
    def _decoder_mask(batch: Any) -> torch.Tensor:
        if batch.get("decoder_attention_mask") is not None:
            return batch["decoder_attention_mask"]
        return (batch["labels"] != IGNORE_INDEX).long()

    def _split_module_names(self) -> tuple[list[str], list[str]]:
        """Return the names of encoder-side and decoder-side modules, computed once."""
        if self._encoder_side_names is not None:
            return self._encoder_side_names, self._decoder_side_names
        encoder = self.model.get_encoder()
        encoder_prefix = next(
            (name for name, module in self.model.named_modules() if module is encoder), None
        )
        if not encoder_prefix:
            raise ValueError(
                f"the encoder returned by {type(self.model).__name__}.get_encoder() is not a "
                "named submodule of the model; cannot tell encoder modules from decoder modules"
            )
        encoder_side, decoder_side = [], []
        for name, module in self.model.named_modules():
            # After prepare_model, a TrackedModule replaces each nn.Linear under the same name
            # and keeps the original as its child "original_module", which needs no mask.
            if not isinstance(module, (torch.nn.Linear, TrackedModule)):
                continue
            if name.endswith(".original_module"):
                continue
            in_encoder = name.startswith(encoder_prefix + ".")
            if in_encoder or self.cross_attention_encoder_input_pattern.search(name):
                encoder_side.append(name)
            else:
                decoder_side.append(name)
        self._encoder_side_names, self._decoder_side_names = encoder_side, decoder_side
        return encoder_side, decoder_side

    def get_attention_mask(self, batch: Any) -> dict[str, torch.Tensor]:
        encoder_side, decoder_side = self._split_module_names()
        encoder_mask = batch["attention_mask"]
        decoder_mask = self._decoder_mask(batch)
        masks = {name: encoder_mask for name in encoder_side}
        masks.update({name: decoder_mask for name in decoder_side})
        return masks
