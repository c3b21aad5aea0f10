"""Baseline detectors that the transform-ensemble method is compared against.

Importing this package registers them in :data:`detectors.base.DETECTORS`.
"""

from baselines import influence, loss, random_scores  # noqa: F401  (registration)
