"""Single-transform detectors: strong influence that one transform leaves unchanged."""

from __future__ import annotations

import numpy as np

from benchmark.context import DetectionContext
from detectors.base import DETECTORS, Detector
from detectors.influence_change import influence_change

BUILT_IN_TRANSFORMS = (
    "prefix_negation",
    "antonym_substitution",
    "paraphrase",
    "question_negation",
    "grammatical_negation",
    "clause_reordering",
)


class SingleTransformDetector(Detector):
    """Score ``|a| / (c_t + median c_t)`` for one transform t.

    Flags examples whose strength is at or above the ``strength_percentile``-th percentile
    and whose change is at or below the ``change_percentile``-th percentile; 90 and 10 are
    the "simple threshold" values of the authors' public code.
    """

    track = "clean-queries"
    transform: str = ""

    def __init__(self, strength_percentile: float = 90.0, change_percentile: float = 10.0):
        super().__init__(None)
        self.strength_percentile = strength_percentile
        self.change_percentile = change_percentile

    def _quantities(self, context: DetectionContext):
        return influence_change(context, (self.transform,))

    def score(self, context: DetectionContext) -> np.ndarray:
        quantities = self._quantities(context)
        change = quantities.change[0]
        return quantities.strength / (change + np.median(change) + 1e-12)

    def flag(self, scores: np.ndarray, context: DetectionContext) -> np.ndarray:
        quantities = self._quantities(context)
        strong = quantities.strength >= np.percentile(quantities.strength, self.strength_percentile)
        unchanged = quantities.change[0] <= np.percentile(
            quantities.change[0], self.change_percentile
        )
        return strong & unchanged


def _register_single_transform_detectors() -> None:
    for transform in BUILT_IN_TRANSFORMS:
        cls = type(
            f"SingleTransformDetector_{transform}",
            (SingleTransformDetector,),
            {
                "transform": transform,
                "description": f"strong influence unchanged under {transform} alone",
                "__doc__": f"Single-transform detector on {transform}.",
            },
        )
        DETECTORS.register(f"single-{transform.replace('_', '-')}")(cls)


_register_single_transform_detectors()
