"""Poison detectors: the transform-ensemble method of arXiv 2504.09026 and its variants.

Importing this package registers the built-in detectors; baselines live in ``baselines``.
"""

from detectors import single_transform, transform_ensemble  # noqa: F401  (registration)
from detectors.base import DETECTORS, TRACKS, DetectionResult, Detector, FlagRule, get_detector

__all__ = ["DETECTORS", "TRACKS", "DetectionResult", "Detector", "FlagRule", "get_detector"]
