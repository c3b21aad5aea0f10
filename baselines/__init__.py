"""Baseline detectors that the transform-ensemble method is compared against.

Importing this package registers them in :data:`detectors.base.DETECTORS`.
"""

from baselines import activation_clustering, influence, loss, random_scores, spectral, strip  # noqa: F401,I001  (registration)
