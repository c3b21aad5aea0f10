"""The detector interface shared by detectors and baselines, and ground-truth-free flag rules."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from benchmark.registry import Registry

if TYPE_CHECKING:
    from benchmark.context import DetectionContext

TRACKS = ("blind", "clean-queries", "oracle")
"""Detector tracks, named by what a detector needs beyond the training set and the model.

``blind``: nothing more. ``clean-queries``: clean held-out queries (and their transforms), the
setting of arXiv 2504.09026. ``oracle``: knowledge of the trigger, an upper bound that is
never ranked beside the other tracks.
"""

FLAG_RULES = ("robust_zscore", "zscore", "percentile", "top_k")


@dataclass(frozen=True)
class FlagRule:
    """Turn suspicion scores into a flagged set without the poison mask.

    ``robust_zscore``: flag scores whose (x - median) / (1.4826 * MAD) exceeds ``value``.
    ``zscore``: the same with mean and standard deviation. ``percentile``: flag scores at or
    above the ``value``-th percentile (0-100). ``top_k``: flag the ``int(value)`` highest.
    """

    kind: str = "robust_zscore"
    value: float = 3.5

    def __post_init__(self) -> None:
        if self.kind not in FLAG_RULES:
            raise ValueError(f"flag rule kind must be one of {FLAG_RULES}, got {self.kind!r}")
        if self.kind == "percentile" and not 0 <= self.value <= 100:
            raise ValueError(f"percentile must lie in [0, 100], got {self.value}")
        if self.kind == "top_k" and self.value < 0:
            raise ValueError(f"top_k must be non-negative, got {self.value}")

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """Return a boolean mask, shape (n,), of the flagged examples."""
        scores = np.asarray(scores, dtype=np.float64)
        if self.kind == "top_k":
            k = min(int(self.value), len(scores))
            flagged = np.zeros(len(scores), dtype=bool)
            if k > 0:
                flagged[np.argsort(-scores, kind="stable")[:k]] = True
            return flagged
        if self.kind == "percentile":
            return scores >= np.percentile(scores, self.value)
        if self.kind == "zscore":
            spread = scores.std()
            center = scores.mean()
        else:
            center = np.median(scores)
            spread = 1.4826 * np.median(np.abs(scores - center))
        if spread == 0:
            return scores > center
        return (scores - center) / spread > self.value


@dataclass
class DetectionResult:
    """One detector's output on one training set.

    ``scores`` has shape (n_train,); higher means more suspicious. ``flagged`` is a boolean
    mask of the same shape chosen by the detector's own rule.
    """

    detector: str
    track: str
    scores: np.ndarray
    flagged: np.ndarray
    seconds: float


class Detector(ABC):
    """Score every training example for suspicion and flag a subset.

    Subclasses set ``name``-independent class attributes ``description`` (one line) and
    ``track`` (one of :data:`TRACKS`); the registry supplies the name. Parameters are stored
    unchanged in ``__init__``; work happens in :meth:`score`. No detector may read the poison
    mask: the context does not expose it.
    """

    description: ClassVar[str]
    track: ClassVar[str]
    default_flag_rule: ClassVar[FlagRule] = FlagRule()

    def __init__(self, flag_rule: FlagRule | None = None):
        self.flag_rule = flag_rule or self.default_flag_rule

    @abstractmethod
    def score(self, context: DetectionContext) -> np.ndarray:
        """Return suspicion scores, shape (n_train,), higher = more suspicious."""

    def flag(self, scores: np.ndarray, context: DetectionContext) -> np.ndarray:
        """Return the flagged mask, shape (n_train,); the default applies ``flag_rule``."""
        return self.flag_rule.apply(scores)

    def detect(self, context: DetectionContext, name: str) -> DetectionResult:
        start = time.perf_counter()
        scores = np.asarray(self.score(context), dtype=np.float64)
        if scores.shape != (context.n_train,):
            raise ValueError(
                f"detector {name} returned scores of shape {scores.shape}, "
                f"expected ({context.n_train},)"
            )
        if not np.all(np.isfinite(scores)):
            raise FloatingPointError(f"detector {name} returned non-finite scores")
        flagged = np.asarray(self.flag(scores, context), dtype=bool)
        return DetectionResult(name, self.track, scores, flagged, time.perf_counter() - start)


DETECTORS: Registry[Detector] = Registry("detector", "poisonbench.detectors")


def get_detector(name: str, **params) -> Detector:
    """Instantiate the registered detector or baseline called ``name``."""
    import baselines  # noqa: F401  (registers the baselines)
    import detectors  # noqa: F401

    return DETECTORS.get(name)(**params)


BUILT_IN_PACKAGES = ("detectors", "baselines")


def register_detector_spec(spec: str) -> str:
    """Register the detector class named by ``spec`` and return its registry name.

    ``spec`` is ``module.path:ClassName``, optionally preceded by ``NAME=`` to choose the
    name (the default name is ``spec`` itself), or the name of a detector that is already
    registered (built in, or added through the ``poisonbench.detectors`` entry point).
    Importing the module runs its code: only name modules you trust.

    Raises:
        InputError: if the module cannot be imported, lacks the class, or the class is not
            a :class:`Detector` with a valid ``track``.
    """
    import importlib

    from benchmark.errors import InputError

    name, _, target = spec.rpartition("=")
    if ":" not in target:
        if target in DETECTORS:
            return target
        raise InputError(
            f"detector {spec!r}: not a registered detector and not of the form "
            "module.path:ClassName; see 'poisonbench list detectors'"
        )
    name = name or target
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise InputError(
            f"detector {spec!r}: cannot import module {module_name!r} ({error}); "
            "put its folder on PYTHONPATH or install its package"
        ) from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Detector)):
        raise InputError(
            f"detector {spec!r}: {module_name} has no Detector subclass named {class_name!r}"
        )
    if getattr(cls, "track", None) not in TRACKS:
        raise InputError(
            f"detector {spec!r}: class attribute track must be one of {TRACKS}, "
            f"got {getattr(cls, 'track', None)!r}"
        )
    if name in DETECTORS and DETECTORS.get(name) is not cls:
        raise InputError(f"detector {spec!r}: the name {name!r} is taken by another detector")
    DETECTORS.register(name)(cls)
    return name


def detector_code_digest(name: str) -> str | None:
    """Return a digest of the source of a detector's module, or None for built-in detectors.

    Cache keys of plug-in detectors include it, so editing a plug-in's code invalidates its
    cached outputs. Built-in detectors change only with poisonbench's own version.
    """
    import hashlib
    import inspect
    import sys

    cls = DETECTORS.get(name)
    if cls.__module__.split(".")[0] in BUILT_IN_PACKAGES:
        return None
    try:
        source = inspect.getsource(sys.modules[cls.__module__])
    except (OSError, TypeError, KeyError):
        return None
    return hashlib.sha256(source.encode("utf-8")).hexdigest()
