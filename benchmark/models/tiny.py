"""Tiny randomly initialised models built locally, for tests and fast smoke runs.

They reuse the WordPiece tokenizer of the packaged all-MiniLM-L6-v2, so nothing is
downloaded. Weights are seeded, so the same preset gives the same bytes.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

TINY_PRESETS = ("tiny-bert",)


def tiny_model_dir(preset: str, cache_dir: str | Path | None = None) -> Path:
    """Build (once) and return the folder of a tiny preset model."""
    if preset not in TINY_PRESETS:
        raise ValueError(f"unknown tiny preset {preset!r}; known: {TINY_PRESETS}")
    if cache_dir is None:
        cache_dir = os.environ.get("POISONBENCH_CACHE_DIR", Path.home() / ".cache" / "poisonbench")
    folder = Path(cache_dir) / "models" / preset
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{preset}-", dir=folder.parent))
    try:
        _build_tiny_bert(staging)
        if not folder.exists():
            os.replace(staging, folder)
            logger.info("Built tiny preset %s in %s", preset, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


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
