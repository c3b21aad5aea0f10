"""Influence baselines: raw influence on clean queries, and the trigger oracle."""

from __future__ import annotations

import numpy as np

from benchmark.context import DetectionContext
from detectors.base import DETECTORS, Detector
from detectors.influence_change import ORIGINAL


@DETECTORS.register("raw-influence")
class RawInfluenceDetector(Detector):
    """Strength |a| of the mean influence on the untransformed clean queries."""

    description = "absolute influence on clean queries, no transforms"
    track = "clean-queries"

    def score(self, context: DetectionContext) -> np.ndarray:
        return np.abs(context.influence(ORIGINAL))


@DETECTORS.register("oracle-triggered-influence")
class TriggeredInfluenceDetector(Detector):
    """Mean influence on triggered queries labelled with the attacker's target label.

    Needs the trigger, so it is an upper bound (oracle track), not a usable detector.
    Positive scores mean the example pushes triggered inputs towards the target label.
    """

    description = "influence on triggered queries towards the target label (needs the trigger)"
    track = "oracle"

    def score(self, context: DetectionContext) -> np.ndarray:
        return context.oracle_influence()
