"""Loss-based detection: poisons with a wrong (attacker's) label are fitted late and poorly."""

from __future__ import annotations

import numpy as np

from benchmark.context import DetectionContext
from detectors.base import DETECTORS, Detector


@DETECTORS.register("loss")
class FinalLossDetector(Detector):
    """Cross-entropy of each training example under the trained model (higher = suspicious)."""

    description = "per-example training loss of the final model"
    track = "blind"

    def score(self, context: DetectionContext) -> np.ndarray:
        return context.final_losses()


@DETECTORS.register("loss-epochs")
class EpochLossDetector(Detector):
    """Mean over epochs of each example's minibatch loss during fine-tuning.

    Dirty-label poisons contradict the text, so the model fits them only once it has
    learned the trigger; their loss stays high over more of training than clean examples.
    """

    description = "per-example training loss averaged over fine-tuning epochs"
    track = "blind"

    def score(self, context: DetectionContext) -> np.ndarray:
        return np.asarray(context.epoch_losses, dtype=np.float64).mean(axis=0)
