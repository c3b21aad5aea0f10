"""Tiny randomly initialised models built locally, for tests and fast smoke runs.

They reuse the WordPiece tokenizer of the packaged all-MiniLM-L6-v2, so nothing is
downloaded. Weights are seeded, so the same preset gives the same bytes.

- ``tiny-bert``: a two-layer BERT sequence classifier with two labels (encoder victims).
- ``tiny-causal``: a two-layer Llama with hidden size 32 (decoder-only victims).
- ``tiny-t5``: a T5 with two encoder and two decoder layers and ``d_model`` 32
  (encoder-decoder victims).

The generative presets save the tokenizer with ``[CLS]`` as BOS and ``[SEP]`` as EOS, so
their instruction examples start and end the way those of real language models do.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

TINY_PRESETS = ("tiny-bert", "tiny-causal", "tiny-t5")


def tiny_model_dir(preset: str, cache_dir: str | Path | None = None) -> Path:
    """Build (once) and return the folder of a tiny preset model."""
    if preset not in TINY_PRESETS:
        raise ValueError(f"unknown tiny preset {preset!r}; known: {TINY_PRESETS}")
    if cache_dir is None:
        cache_dir = os.environ.get("POISONBENCH_CACHE_DIR", Path.home() / ".cache" / "poisonbench")
    folder = Path(cache_dir) / "models" / preset
    if _is_complete(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{preset}-", dir=folder.parent))
    try:
        _BUILDERS[preset](staging)
        if _is_complete(staging):
            try:
                os.replace(staging, folder)
                logger.info("Built tiny preset %s in %s", preset, folder)
            except OSError:
                if not _is_complete(folder):
                    raise RuntimeError(
                        f"{folder} exists but lacks config.json or weights; delete it and "
                        "run again"
                    ) from None
        else:
            # Once torch.distributed is initialised, transformers writes weights on rank 0
            # only, so the other ranks wait for rank 0's folder.
            _wait_for_complete(folder, WAIT_SECONDS)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


WAIT_SECONDS = 600.0


def _is_complete(folder: Path) -> bool:
    """Return whether ``folder`` contains a model config and its weights."""
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def _wait_for_complete(folder: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _is_complete(folder):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"timed out after {timeout:.0f} s waiting for another process to build {folder}"
            )
        time.sleep(0.5)


def _build_tiny_bert(folder: Path) -> None:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from benchmark.models.spec import MINILM_PRESET, resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(MINILM_PRESET))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=2,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _load_minilm_tokenizer(bos_and_eos: bool = False):
    """Load the packaged MiniLM tokenizer, with BOS ``[CLS]`` and EOS ``[SEP]`` if asked."""
    from transformers import AutoTokenizer

    from benchmark.models.spec import MINILM_PRESET, resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(MINILM_PRESET))
    if bos_and_eos:
        tokenizer.bos_token = tokenizer.cls_token
        tokenizer.eos_token = tokenizer.sep_token
    return tokenizer


def _build_tiny_causal(folder: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _load_minilm_tokenizer(bos_and_eos=True)
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _build_tiny_t5(folder: Path) -> None:
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = _load_minilm_tokenizer(bos_and_eos=True)
    config = T5Config(
        vocab_size=tokenizer.vocab_size,
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


_BUILDERS = {
    "tiny-bert": _build_tiny_bert,
    "tiny-causal": _build_tiny_causal,
    "tiny-t5": _build_tiny_t5,
}
