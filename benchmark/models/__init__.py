"""Victim models: build from a spec, fine-tune, predict, per-example loss, representations."""

from benchmark.models.encoder import EncoderClassifier, TrainingConfig, TrainingHistory
from benchmark.models.spec import resolve_model_path

__all__ = ["EncoderClassifier", "TrainingConfig", "TrainingHistory", "resolve_model_path"]
