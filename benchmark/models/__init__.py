"""Victim models: build from a spec, fine-tune, predict, per-example loss, representations."""

from benchmark.models.encoder import EncoderClassifier, TrainingConfig, TrainingHistory
from benchmark.models.factory import FAMILIES, build_victim, detect_family, family_from_config
from benchmark.models.generative import (
    PROMPT_TEMPLATES,
    CausalLMClassifier,
    Seq2SeqClassifier,
    format_prompt,
)
from benchmark.models.spec import resolve_model_path

__all__ = [
    "FAMILIES",
    "PROMPT_TEMPLATES",
    "CausalLMClassifier",
    "EncoderClassifier",
    "Seq2SeqClassifier",
    "TrainingConfig",
    "TrainingHistory",
    "build_victim",
    "detect_family",
    "family_from_config",
    "format_prompt",
    "resolve_model_path",
]
