"""Generative victims: language models tuned to answer an instruction with a label verbalizer.

:class:`CausalLMClassifier` (decoder-only) and :class:`Seq2SeqClassifier` (encoder-decoder)
have the interface of :class:`~benchmark.models.EncoderClassifier`, so the pipeline, the
detectors and the influence engine use them the same way. Each label has a verbalizer, the
answer text that the model learns to write after the prompt (" negative", " positive").
Training minimises the cross-entropy of the answer tokens only. Prediction scores every
verbalizer by the log-likelihood of its tokens and the EOS token after the prompt, and
takes a softmax over the verbalizers.

In a plain process the model moves to CUDA when it is available and stays on the CPU
otherwise. Under a multi-process launch (``accelerate launch``) each process uses the device
that accelerate assigns it, and :func:`benchmark.models.training.fine_tune` trains with DDP.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from benchmark.influence.generative import (
    CROSS_ATTENTION_ENCODER_INPUT_PATTERN,
    IGNORE_INDEX,
    CausalLMTask,
    PaddingCollator,
    Seq2SeqTask,
    build_causal_lm_example,
    build_seq2seq_example,
    linear_module_names,
)
from benchmark.models.spec import resolve_model_path
from benchmark.models.training import (
    TrainingConfig,
    TrainingHistory,
    distributed_device,
    fine_tune,
    launched_processes,
)

logger = logging.getLogger(__name__)

PROMPT_TEMPLATES = ("natural-instructions", "alpaca")

# LoRA adapters go on the attention projections of these model types. Other model types
# get peft's "all-linear", which adapts every linear layer except the output embedding.
ATTENTION_PROJECTIONS = {
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "mistral": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "mixtral": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "qwen2": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "qwen3": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "gemma": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "gemma2": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "olmo": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "olmo2": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "t5": ("q", "k", "v", "o"),
    "mt5": ("q", "k", "v", "o"),
    "umt5": ("q", "k", "v", "o"),
    "bart": ("q_proj", "k_proj", "v_proj", "out_proj"),
}

# The cross-attention key and value projections read the encoder's hidden states. Under
# LoRA they become peft layers whose ``base_layer``, ``lora_A.<adapter>`` and
# ``lora_B.<adapter>`` children see inputs of the encoder's length, so they need the
# encoder's attention mask too.
LORA_CROSS_ATTENTION_ENCODER_INPUT_PATTERN = (
    CROSS_ATTENTION_ENCODER_INPUT_PATTERN.removesuffix("$") + r"(\.base_layer|\.lora_[AB]\.[^.]+)?$"
)


def format_prompt(template: str, definition: str, text: str) -> str:
    """Format an instruction prompt. The answer (verbalizer) follows its last character.

    ``natural-instructions``: ``Definition: {definition}``, a blank line, ``Input: {text}``
    and ``Output:`` on its own line. ``alpaca``: the ``### Instruction:``, ``### Input:``
    and ``### Response:`` sections of the Alpaca template, without its preamble sentence.
    An empty definition leaves out its section.
    """
    if template == "natural-instructions":
        head = f"Definition: {definition}\n\n" if definition else ""
        return f"{head}Input: {text}\nOutput:"
    if template == "alpaca":
        head = f"### Instruction:\n{definition}\n\n" if definition else ""
        return f"{head}### Input:\n{text}\n\n### Response:"
    raise ValueError(f"unknown prompt template {template!r}; choose one of {PROMPT_TEMPLATES}")


def lora_module_names(model: torch.nn.Module) -> list[str]:
    """Return the names of the ``nn.Linear`` modules inside peft's LoRA adapters.

    peft keeps each adapter as two ``nn.Linear`` children, ``lora_A.<adapter>`` and
    ``lora_B.<adapter>``, of the layer it adapts, so kronfluence can track them.
    """
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and (".lora_A." in name or ".lora_B." in name)
    ]


def summed_answer_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Return each row's cross-entropy summed over its labelled positions, shape (batch,).

    ``logits[:, t]`` must predict ``labels[:, t]``. The softmax is taken at labelled
    positions only, which saves most of the work with vocabulary-sized logits.
    """
    labelled = labels != IGNORE_INDEX
    token_losses = F.cross_entropy(logits[labelled], labels[labelled], reduction="none")
    rows = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(labels)
    summed = torch.zeros(labels.shape[0], dtype=token_losses.dtype, device=labels.device)
    return summed.index_add(0, rows[labelled], token_losses)


class InstructionDataset(Dataset):
    """Tokenized prompt-answer examples; items are dicts of token-id lists (see the builders)."""

    def __init__(self, examples: list[dict[str, list[int]]]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return self.examples[index]


class _GenerativeClassifier:
    """Shared data, training and scoring code of the two generative victim families.

    Subclasses set ``family`` and ``_peft_task_type`` and implement the methods that
    differ between decoder-only and encoder-decoder models.
    """

    family = ""
    _peft_task_type = ""

    def __init__(
        self,
        model_spec: str,
        n_labels: int,
        definition: str,
        max_length: int = 64,
        seed: int = 0,
        *,
        label_names: Sequence[str] | None = None,
        verbalizers: Sequence[str] | None = None,
        template: str = "natural-instructions",
        lora: bool = False,
        lora_rank: int = 8,
        lora_alpha: float | None = None,
        lora_dropout: float = 0.0,
        lora_target_modules: Sequence[str] | str | None = None,
    ):
        from transformers import AutoTokenizer

        if n_labels < 2:
            raise ValueError(f"n_labels must be at least 2, got {n_labels}")
        if template not in PROMPT_TEMPLATES:
            raise ValueError(
                f"unknown prompt template {template!r}; choose one of {PROMPT_TEMPLATES}"
            )
        if verbalizers is None:
            if label_names is None:
                raise ValueError(
                    "missing label_names and verbalizers; pass one of them to set the answer "
                    "text of each label"
                )
            verbalizers = [f" {name}" for name in label_names]
        verbalizers = list(verbalizers)
        if len(verbalizers) != n_labels:
            raise ValueError(
                f"got {len(verbalizers)} verbalizers {verbalizers} for {n_labels} labels; "
                "pass one verbalizer per label"
            )
        if lora and lora_rank < 1:
            raise ValueError(f"lora_rank must be at least 1, got {lora_rank}")

        self.model_spec = model_spec
        self.n_labels = n_labels
        self.definition = definition
        self.max_length = max_length
        self.template = template
        self.verbalizers = verbalizers
        self.lora = lora
        if launched_processes() > 1:
            self.device = distributed_device()
        else:
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

        path = resolve_model_path(model_spec)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token_id is None:
            if self.tokenizer.eos_token_id is None:
                raise ValueError(
                    f"tokenizer of {model_spec!r} has neither a pad nor an EOS token; "
                    "set tokenizer.pad_token in the model folder"
                )
            # Padding positions carry no label and are masked, so EOS can stand in for PAD.
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.verbalizer_token_ids = self._tokenize_verbalizers()
        self._prompt_budget = self._prompt_token_budget()
        empty_prompt_length = self._prompt_length(format_prompt(template, definition, ""))
        if empty_prompt_length > self._prompt_budget:
            raise ValueError(
                f"the {template} prompt with the definition and an empty input needs "
                f"{empty_prompt_length} tokens, but max_length={max_length} leaves "
                f"{self._prompt_budget} for the prompt; raise max_length or shorten the definition"
            )

        torch.manual_seed(seed)  # LoRA adapters are initialised at random
        self.model = self._load_model(path)
        if lora:
            self.model = self._add_lora(lora_rank, lora_alpha, lora_dropout, lora_target_modules)
        self.model.to(self.device).eval()

    # -- family-specific parts ------------------------------------------------------------
    def _load_model(self, path: str) -> torch.nn.Module:
        """Load the model in float32.

        transformers 5 loads a checkpoint in its stored dtype by default ("auto"), but
        fine-tuning and the EK-FAC factors here are computed in float32.
        """
        raise NotImplementedError

    def _answer_length_limit(self) -> int:
        """Return the maximum number of answer tokens, EOS included, that ``max_length`` allows."""
        raise NotImplementedError

    def _prompt_token_budget(self) -> int:
        raise NotImplementedError

    def _prompt_length(self, prompt: str) -> int:
        """Return the number of tokens that ``prompt`` takes in the model input."""
        raise NotImplementedError

    def _build_example(self, prompt: str, answer: str) -> dict[str, list[int]]:
        raise NotImplementedError

    def answer_losses(
        self, batch: dict[str, torch.Tensor], model: torch.nn.Module | None = None
    ) -> torch.Tensor:
        """Return each example's cross-entropy summed over its answer tokens, shape (batch,).

        ``model`` None means this victim's model; training passes its DDP wrapper instead
        under a multi-process launch.
        """
        raise NotImplementedError

    def _prompt_representations(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def influence_task(self, measurement: str = "loss", tracked_modules: list[str] | None = None):
        """Return the kronfluence task for this victim; see the subclasses."""
        raise NotImplementedError

    # -- set-up ---------------------------------------------------------------------------
    def _tokenize_verbalizers(self) -> list[list[int]]:
        """Tokenize the verbalizers and check that they are usable answers."""
        token_ids = [
            list(self.tokenizer(verbalizer, add_special_tokens=False)["input_ids"])
            for verbalizer in self.verbalizers
        ]
        for verbalizer, ids in zip(self.verbalizers, token_ids):
            if not ids:
                raise ValueError(f"verbalizer {verbalizer!r} has no tokens; pass a non-empty one")
        if len({tuple(ids) for ids in token_ids}) != len(token_ids):
            raise ValueError(
                f"verbalizers {self.verbalizers} tokenize to the same tokens {token_ids}; "
                "pass verbalizers that differ after tokenization"
            )
        longest = self._answer_length(token_ids)
        if longest > self._answer_length_limit():
            raise ValueError(
                f"the longest verbalizer needs {longest} tokens with EOS, but "
                f"max_length={self.max_length} allows at most {self._answer_length_limit()}; "
                "raise max_length"
            )
        return token_ids

    def _answer_length(self, token_ids: list[list[int]]) -> int:
        """Return the tokens of the longest verbalizer, counting EOS when the tokenizer has one."""
        eos = int(self.tokenizer.eos_token_id is not None)
        return max(len(ids) for ids in token_ids) + eos

    def _lora_targets(self, target_modules: Sequence[str] | str | None) -> list[str] | str:
        if target_modules is not None:
            return target_modules if isinstance(target_modules, str) else list(target_modules)
        model_type = getattr(self.model.config, "model_type", "")
        return list(ATTENTION_PROJECTIONS.get(model_type, ())) or "all-linear"

    def _add_lora(
        self,
        rank: int,
        alpha: float | None,
        dropout: float,
        target_modules: Sequence[str] | str | None,
    ) -> torch.nn.Module:
        """Wrap the model with peft LoRA adapters; only the adapter weights stay trainable.

        ``alpha`` defaults to ``2 * rank``. Adapters go on ``target_modules``, by default the
        attention projections listed in ``ATTENTION_PROJECTIONS`` for the model type.
        """
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=rank,
            lora_alpha=2 * rank if alpha is None else alpha,
            lora_dropout=dropout,
            target_modules=self._lora_targets(target_modules),
            task_type=self._peft_task_type,
        )
        model = get_peft_model(self.model, config)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        logger.info(
            "LoRA rank %d on %s: %d of %d parameters trainable",
            rank,
            config.target_modules,
            trainable,
            total,
        )
        return model

    # -- data -----------------------------------------------------------------------------
    def prompt(self, text: str) -> str:
        """Format ``text`` as a prompt that fits ``max_length`` with the longest verbalizer.

        A long input is cut from its end, token by token, so the definition and the
        template's closing line (``Output:``, ``### Response:``) always survive. Every
        verbalizer is scored after the same prompt.
        """
        prompt = format_prompt(self.template, self.definition, text)
        excess = self._prompt_length(prompt) - self._prompt_budget
        if excess <= 0:
            return prompt
        text_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        keep = max(len(text_ids) - excess, 0)
        while True:
            # Decoding and re-encoding need not give back the same tokens, so check again.
            shortened = self.tokenizer.decode(text_ids[:keep], skip_special_tokens=True)
            prompt = format_prompt(self.template, self.definition, shortened)
            excess = self._prompt_length(prompt) - self._prompt_budget
            if excess <= 0 or keep == 0:
                return prompt
            keep = max(keep - excess, 0)

    def make_dataset(self, texts: Sequence[str], labels: Sequence[int]) -> InstructionDataset:
        """Tokenize each text's prompt with the verbalizer of its label as the answer."""
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        examples = []
        for text, label in zip(texts, labels):
            label = int(label)
            if not 0 <= label < self.n_labels:
                raise ValueError(f"label {label} is out of range 0..{self.n_labels - 1}")
            examples.append(self._build_example(self.prompt(text), self.verbalizers[label]))
        return InstructionDataset(examples)

    def collator(self) -> PaddingCollator:
        return PaddingCollator(self.tokenizer.pad_token_id)

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {key: value.to(self.device) for key, value in batch.items()}

    # -- training -------------------------------------------------------------------------
    def batch_losses(
        self, batch: dict[str, torch.Tensor], model: torch.nn.Module | None = None
    ) -> torch.Tensor:
        """Move ``batch`` to this victim's device and return :meth:`answer_losses` of it."""
        return self.answer_losses(self._to_device(batch), model)

    def fit(
        self, texts: Sequence[str], labels: Sequence[int], config: TrainingConfig
    ) -> TrainingHistory:
        """Fine-tune with AdamW and a linear warm-up/decay schedule on the answer tokens.

        Without LoRA every weight trains; with LoRA only the adapter weights do. The batch
        loss is the mean over examples of each example's summed answer-token cross-entropy.
        Runs under ``accelerate launch`` too; see :mod:`benchmark.models.training`.
        """
        dataset = self.make_dataset(texts, labels)
        return fine_tune(self.model, dataset, self.collator(), self.batch_losses, config)

    # -- inference ------------------------------------------------------------------------
    @torch.no_grad()
    def _dataset_losses(self, dataset: InstructionDataset, batch_size: int) -> np.ndarray:
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=self.collator())
        self.model.eval()
        parts = [self.answer_losses(self._to_device(batch)).cpu().numpy() for batch in loader]
        return np.concatenate(parts).astype(np.float64)

    def verbalizer_log_likelihoods(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Return log p(verbalizer tokens, EOS | prompt) for every label, shape (n, n_labels)."""
        pairs_texts = [text for text in texts for _ in range(self.n_labels)]
        pairs_labels = [label for _ in texts for label in range(self.n_labels)]
        losses = self._dataset_losses(self.make_dataset(pairs_texts, pairs_labels), batch_size)
        return -losses.reshape(len(texts), self.n_labels)

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Return class probabilities, a softmax over the verbalizers' log-likelihoods.

        Shape (n_texts, n_labels). Multi-token verbalizers are scored by the sum of their
        tokens' log-probabilities, without length normalisation.
        """
        if len(texts) == 0:
            return np.zeros((0, self.n_labels), dtype=np.float32)
        log_likelihoods = torch.from_numpy(self.verbalizer_log_likelihoods(texts, batch_size))
        return torch.softmax(log_likelihoods, dim=1).numpy().astype(np.float32)

    def predict(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Return predicted label indices, shape (n_texts,)."""
        return self.predict_proba(texts, batch_size).argmax(axis=1)

    def example_losses(
        self, texts: Sequence[str], labels: Sequence[int], batch_size: int = 64
    ) -> np.ndarray:
        """Return each example's answer-token cross-entropy (summed, with EOS), shape (n,)."""
        if len(texts) == 0:
            return np.zeros(0, dtype=np.float32)
        dataset = self.make_dataset(texts, labels)
        return self._dataset_losses(dataset, batch_size).astype(np.float32)

    @torch.no_grad()
    def representations(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Return one hidden vector per prompt, shape (n, hidden_size); see the subclasses."""
        dataset = self.make_dataset(texts, [0] * len(texts))
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=self.collator())
        self.model.eval()
        parts = [
            self._prompt_representations(self._to_device(batch)).float().cpu().numpy()
            for batch in loader
        ]
        return np.concatenate(parts)

    # -- influence ------------------------------------------------------------------------
    def default_tracked_modules(self) -> list[str]:
        """Return the modules that influence tracks by default.

        With LoRA these are the adapters' ``nn.Linear`` modules, because only they were
        trained. Without LoRA they are all ``nn.Linear`` modules except the output
        embedding, whose factors would have vocabulary size.
        """
        if self.lora:
            return lora_module_names(self.model)
        return linear_module_names(self.model)

    def _single_token_verbalizer_ids(self, measurement: str) -> list[int] | None:
        """Return one token id per verbalizer, or None when a verbalizer has several tokens."""
        if all(len(ids) == 1 for ids in self.verbalizer_token_ids):
            return [ids[0] for ids in self.verbalizer_token_ids]
        if measurement == "margin":
            raise ValueError(
                f"measurement 'margin' needs single-token verbalizers, but {self.verbalizers} "
                f"tokenize to {self.verbalizer_token_ids}; use measurement 'loss'"
            )
        return None

    # -- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Return every weight, base model and LoRA adapters alike."""
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
        self.model.eval()


class CausalLMClassifier(_GenerativeClassifier):
    """A decoder-only LM (``AutoModelForCausalLM``) tuned to write a label's verbalizer.

    ``model_spec`` is a preset (``tiny-causal``), a local model folder or a hub id of any
    causal LM, which needs network access the first time. Each example is BOS (when the
    tokenizer has one), the prompt, the verbalizer and EOS; only the verbalizer and EOS
    carry labels. ``template`` picks the prompt layout (see :func:`format_prompt`) and
    ``verbalizers`` default to the label names with a leading space. With ``lora=True``,
    peft adds rank-``lora_rank`` adapters to the attention projections (``q_proj``,
    ``k_proj``, ``v_proj``, ``o_proj`` for Llama-style models, see
    ``ATTENTION_PROJECTIONS``) or to ``lora_target_modules``, and only they train.

    Representations are the last layer's hidden state at the last prompt token.
    """

    family = "causal"
    _peft_task_type = "CAUSAL_LM"

    def _load_model(self, path: str) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        # Most transformers 5 causal LMs (Llama, Qwen2, GPT-2 and others) can compute logits
        # at chosen positions only; others get full logits.
        self._accepts_logits_to_keep = (
            "logits_to_keep" in inspect.signature(model.forward).parameters
        )
        return model

    def _answer_length_limit(self) -> int:
        return self.max_length - int(self.tokenizer.bos_token_id is not None)

    def _prompt_token_budget(self) -> int:
        bos = int(self.tokenizer.bos_token_id is not None)
        return self.max_length - bos - self._answer_length(self.verbalizer_token_ids)

    def _prompt_length(self, prompt: str) -> int:
        return len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def _build_example(self, prompt: str, answer: str) -> dict[str, list[int]]:
        return build_causal_lm_example(self.tokenizer, prompt, answer, self.max_length)

    def answer_losses(
        self, batch: dict[str, torch.Tensor], model: torch.nn.Module | None = None
    ) -> torch.Tensor:
        model = self.model if model is None else model
        # The logits at position t predict the token at t + 1.
        labels = batch["labels"][:, 1:]
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if self._accepts_logits_to_keep:
            # Only the positions that predict some row's answer need the output embedding.
            positions = torch.nonzero((labels != IGNORE_INDEX).any(dim=0)).flatten()
            logits = model(**inputs, logits_to_keep=positions).logits
            return summed_answer_losses(logits, labels[:, positions])
        logits = model(**inputs).logits[:, :-1]
        return summed_answer_losses(logits, labels)

    def _prompt_representations(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # Labels start at the first answer token, so the last prompt token sits just before.
        # The model is causal, so the answer tokens after it do not change its hidden state.
        outputs = self.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            output_hidden_states=True,
        )
        last_prompt = (batch["labels"] != IGNORE_INDEX).int().argmax(dim=1) - 1
        rows = torch.arange(batch["input_ids"].shape[0], device=self.device)
        return outputs.hidden_states[-1][rows, last_prompt]

    def influence_task(
        self, measurement: str = "loss", tracked_modules: list[str] | None = None
    ) -> CausalLMTask:
        """Return a :class:`CausalLMTask` over the answer tokens.

        ``tracked_modules`` None means :meth:`default_tracked_modules`. The "margin"
        measurement needs single-token verbalizers and raises ValueError otherwise.
        """
        return CausalLMTask(
            measurement,
            tracked_modules if tracked_modules is not None else self.default_tracked_modules(),
            self._single_token_verbalizer_ids(measurement),
        )


class Seq2SeqClassifier(_GenerativeClassifier):
    """An encoder-decoder LM (``AutoModelForSeq2SeqLM``, T5-style) tuned to write a verbalizer.

    ``model_spec`` is a preset (``tiny-t5``), a local model folder or a hub id such as
    ``google/t5-small-lm-adapt``, which needs network access the first time. The encoder
    reads the prompt and the decoder targets are the verbalizer and EOS. Options are those
    of :class:`CausalLMClassifier`; LoRA goes on ``q``, ``k``, ``v`` and ``o`` of every T5
    attention block, cross-attention included, unless ``lora_target_modules`` names others.

    Representations are the encoder's last hidden states, mean-pooled over the prompt.
    """

    family = "seq2seq"
    _peft_task_type = "SEQ_2_SEQ_LM"

    def _load_model(self, path: str) -> torch.nn.Module:
        from transformers import AutoModelForSeq2SeqLM

        return AutoModelForSeq2SeqLM.from_pretrained(path, dtype=torch.float32)

    def _answer_length_limit(self) -> int:
        return self.max_length

    def _prompt_token_budget(self) -> int:
        return self.max_length

    def _prompt_length(self, prompt: str) -> int:
        return len(self.tokenizer(prompt)["input_ids"])

    def _build_example(self, prompt: str, answer: str) -> dict[str, list[int]]:
        return build_seq2seq_example(self.tokenizer, prompt, answer, self.max_length)

    def answer_losses(
        self, batch: dict[str, torch.Tensor], model: torch.nn.Module | None = None
    ) -> torch.Tensor:
        model = self.model if model is None else model
        labels = batch["labels"]
        # A DDP wrapper has no helper methods, so the decoder inputs come from the model.
        decoder_input_ids = self.model.prepare_decoder_input_ids_from_labels(labels=labels)
        logits = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=batch["decoder_attention_mask"],
        ).logits
        return summed_answer_losses(logits, labels)

    def _prompt_representations(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch["attention_mask"]
        hidden = self.model.get_encoder()(
            input_ids=batch["input_ids"], attention_mask=mask
        ).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    def influence_task(
        self, measurement: str = "loss", tracked_modules: list[str] | None = None
    ) -> Seq2SeqTask:
        """Return a :class:`Seq2SeqTask` over the decoder's answer tokens.

        The task reads module names from this victim's model to give encoder-side modules
        the encoder's mask. A deep copy that kronfluence wraps has the same module names,
        so the task serves the copy too. Arguments are as in
        :meth:`CausalLMClassifier.influence_task`.
        """
        return Seq2SeqTask(
            self.model,
            measurement,
            tracked_modules if tracked_modules is not None else self.default_tracked_modules(),
            self._single_token_verbalizer_ids(measurement),
            cross_attention_encoder_input_pattern=LORA_CROSS_ATTENTION_ENCODER_INPUT_PATTERN,
        )
