"""Detectors on synthetic influence whose answer is known by construction, and the registry."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.context import DetectionContext, QuerySetInfo
from benchmark.data import Example, TextDataset
from benchmark.metrics import detection_metrics
from detectors.base import DETECTORS, get_detector

TRANSFORMS = (
    ("prefix_negation", "lexicon"),
    ("antonym_substitution", "lexicon"),
    ("paraphrase", "semantic"),
    ("question_negation", "semantic"),
    ("grammatical_negation", "structural"),
    ("clause_reordering", "structural"),
)


def synthetic_context(n_train=200, n_poisons=10, seed=0):
    """Poisons: strong influence, identical under every transform. Clean: influence changes."""
    rng = np.random.default_rng(seed)
    poison_mask = np.zeros(n_train, dtype=bool)
    poison_mask[rng.choice(n_train, n_poisons, replace=False)] = True

    original = rng.normal(0.0, 1.0, n_train)
    original[poison_mask] = rng.uniform(4.0, 6.0, n_poisons) * rng.choice([-1, 1], n_poisons)
    influence = {"original": original}
    for name, _ in TRANSFORMS:
        transformed = rng.normal(0.0, 1.5, n_train)
        transformed[poison_mask] = original[poison_mask] * (1 + rng.normal(0, 0.01, n_poisons))
        influence[name] = transformed

    examples = tuple(Example(f"x{i}", f"text {i}", int(i % 2)) for i in range(n_train))
    train = TextDataset("synthetic", examples, ("negative", "positive"), "Classify.")
    infos = (QuerySetInfo("original", "original", None),) + tuple(
        QuerySetInfo(name, category, name) for name, category in TRANSFORMS
    )
    context = DetectionContext(
        train=train,
        victim=None,
        epoch_losses=np.zeros((1, n_train)),
        influence_provider=lambda name: influence[name],
        query_sets=infos,
        seed=seed,
    )
    return context, poison_mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_variance_recovers_poisons(seed):
    context, mask = synthetic_context(seed=seed)
    result = get_detector("transform-variance").detect(context, "transform-variance")
    assert result.flagged.tolist() == mask.tolist()
    assert detection_metrics(result.scores, result.flagged, mask).auroc == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unanimous_voting_recovers_poisons(seed):
    context, mask = synthetic_context(seed=seed)
    detector = get_detector("transform-voting", top_k=10)
    result = detector.detect(context, "transform-voting")
    assert result.flagged.tolist() == mask.tolist()
    assert detection_metrics(result.scores, result.flagged, mask).auroc == 1.0


def test_majority_voting_flags_superset():
    context, mask = synthetic_context(seed=5)
    result = get_detector("transform-voting-majority").detect(context, "majority")
    assert result.flagged[mask].all()
    assert result.flagged.sum() <= 3 * mask.sum()


def test_single_transform_ranks_poisons_first():
    context, mask = synthetic_context(seed=3)
    result = get_detector("single-prefix-negation").detect(context, "single")
    metrics = detection_metrics(result.scores, result.flagged, mask)
    assert metrics.auroc == 1.0
    assert metrics.precision == 1.0


def test_voting_without_transforms_is_an_error():
    context, _ = synthetic_context()
    detector = get_detector("transform-voting", transforms=("no_such_transform",))
    with pytest.raises(ValueError, match="no transformed query sets"):
        detector.detect(context, "transform-voting")


def test_detectors_never_see_the_mask():
    assert "poison_mask" not in DetectionContext.__dataclass_fields__


def test_registry_lists_ten_detectors_with_tracks():
    get_detector("random")  # imports the built-in detectors and baselines
    names = DETECTORS.names()
    assert len(names) >= 10
    for name in ("transform-variance", "transform-voting", "single-paraphrase", "loss", "random"):
        assert name in names
    for name, cls in DETECTORS:
        assert cls.track in ("blind", "clean-queries", "oracle"), name
    assert DETECTORS.get("oracle-triggered-influence").track == "oracle"
