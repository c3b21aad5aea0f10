"""The floor: uniformly random suspicion scores."""

from __future__ import annotations

import numpy as np

from benchmark.context import DetectionContext
from detectors.base import DETECTORS, Detector, FlagRule


@DETECTORS.register("random")
class RandomDetector(Detector):
    """Seeded uniform scores; flags the top 3% (a fixed budget, not the true poison count)."""

    description = "uniform random scores (the floor every detector must beat)"
    track = "blind"
    default_flag_rule = FlagRule("percentile", 97.0)

    def score(self, context: DetectionContext) -> np.ndarray:
        return np.random.default_rng(context.seed).random(context.n_train)
