"""Per-query influence and the combined transform-ensemble detector built on it.

The influence tests use real kronfluence on a tiny BERT trained on real SST-2 rows. The
detector tests compare its score with a direct numpy computation on small matrices.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from scipy.stats import entropy

from benchmark.context import DetectionContext, QuerySetInfo
from benchmark.data import Example, TextDataset, load_sst2
from benchmark.influence import InfluenceConfig, InfluenceEngine, QuerySet
from benchmark.influence.per_query import QuerySegment, plan_passes, query_gradient_bytes
from benchmark.models import EncoderClassifier, TrainingConfig
from benchmark.runner.cache import StageCache
from benchmark.runner.config import load_config
from benchmark.runner.experiment import (
    PER_QUERY_INFLUENCE_STAGE,
    Experiment,
    is_transform_ensemble,
    restricted_ensemble,
    uses_per_query_influence,
)
from benchmark.runner.sweep import STAGES_FOLDER
from detectors.base import DETECTORS, get_detector
from detectors.transform_ensemble import (
    DEFAULT_COMBINED_MAX_QUERIES,
    combined_components,
    min_max_scale,
)


# -- pass planning ------------------------------------------------------------------------
def test_plan_passes_fills_across_sets():
    passes = plan_passes({"a": 5, "b": 3, "c": 4}, queries_per_pass=4)
    assert passes == [
        (QuerySegment("a", 0, 4),),
        (QuerySegment("a", 4, 5), QuerySegment("b", 0, 3)),
        (QuerySegment("c", 0, 4),),
    ]


def test_plan_passes_uses_the_minimum_number():
    sizes = {"original": 50, "t1": 50, "t2": 50, "t3": 50, "t4": 50, "t5": 50, "t6": 50}
    for capacity in (1, 7, 49, 50, 51, 100, 349, 350, 1000):
        passes = plan_passes(sizes, capacity)
        assert len(passes) == -(-350 // capacity), capacity
        assert all(sum(s.size for s in p) <= capacity for p in passes), capacity
        covered = [(s.name, i) for p in passes for s in p for i in range(s.start, s.stop)]
        assert covered == [(name, i) for name in sizes for i in range(50)], capacity


def test_plan_passes_rejects_bad_input():
    with pytest.raises(ValueError, match="queries_per_pass must be at least 1"):
        plan_passes({"a": 3}, 0)
    with pytest.raises(ValueError, match="query set 'a' is empty"):
        plan_passes({"a": 0}, 4)


# -- per-query influence with real kronfluence ---------------------------------------------
@pytest.fixture(scope="module")
def trained(shared_data):
    train, test = load_sst2(shared_data)
    train = train.sample(96, seed=0)
    victim = EncoderClassifier("tiny-bert", 2, train.definition, max_length=32, seed=0)
    victim.fit(train.texts, train.labels, TrainingConfig(epochs=2, batch_size=16, max_length=32))
    queries = test.sample(10, seed=1)
    texts, labels = tuple(queries.texts), tuple(queries.labels)
    query_sets = [
        QuerySet("original", texts, labels),
        QuerySet("flipped", texts, tuple(1 - y for y in labels)),
        QuerySet("first_half", texts[:5], labels[:5]),
    ]
    return victim, train, query_sets


def make_engine(trained, folder) -> InfluenceEngine:
    victim, train, _ = trained
    config = InfluenceConfig(
        factor_batch_size=16, train_batch_size=16, query_batch_size=4, damping_factor=1e-3
    )
    return InfluenceEngine(victim, train.texts, train.labels, config, folder, seed=0)


def test_per_query_mean_matches_score_many(trained, tmp_path):
    _, _, query_sets = trained
    engine = make_engine(trained, tmp_path)
    per_query = engine.score_per_query(query_sets)
    means = engine.score_many(query_sets)
    assert set(per_query) == {"original", "flipped", "first_half"}
    for query_set in query_sets:
        matrix = per_query[query_set.name]
        assert matrix.shape == (len(query_set.texts), 96)
        scale = np.abs(means[query_set.name]).max()
        np.testing.assert_allclose(
            matrix.mean(axis=0), means[query_set.name], rtol=1e-4, atol=1e-5 * scale
        )


def test_per_query_matches_kronfluence(trained, tmp_path):
    """Each row equals kronfluence's unaggregated pairwise scores on the same factors."""
    from kronfluence.arguments import ScoreArguments

    victim, _, query_sets = trained
    engine = make_engine(trained, tmp_path)
    # The engine feeds the training set sorted by length and must restore data set order.
    assert not np.array_equal(engine.order, np.arange(96))
    per_query = engine.score_per_query(query_sets)
    factors_name = engine.fit_factors()
    analyzer = engine._get_analyzer()
    for query_set in query_sets:
        scores_name = f"reference-{query_set.name}"
        analyzer.compute_pairwise_scores(
            scores_name=scores_name,
            factors_name=factors_name,
            query_dataset=victim.make_dataset(query_set.texts, query_set.labels),
            train_dataset=engine.train_dataset,
            per_device_query_batch_size=4,
            per_device_train_batch_size=16,
            score_args=ScoreArguments(damping_factor=1e-3, aggregate_query_gradients=False),
            overwrite_output_dir=True,
        )
        reference = analyzer.load_pairwise_scores(scores_name)["all_modules"].double().numpy()
        assert reference.shape == per_query[query_set.name].shape
        scale = np.abs(reference).max()
        np.testing.assert_allclose(
            per_query[query_set.name], reference, rtol=1e-4, atol=1e-5 * scale
        )


def test_per_query_passes_do_not_change_scores(trained, tmp_path, caplog):
    """A budget of three queries per pass splits sets across passes, and scores stay equal."""
    from kronfluence.module.tracked_module import TrackedModule

    _, _, query_sets = trained
    engine = make_engine(trained, tmp_path)
    whole = engine.score_per_query(query_sets)
    model = engine._get_analyzer().model
    modules = [m for m in model.modules() if isinstance(m, TrackedModule)]
    one_query = query_gradient_bytes(modules, torch.float32)
    caplog.set_level(logging.INFO, logger="benchmark.influence.per_query")
    split = engine.score_per_query(query_sets, memory_budget_bytes=3 * one_query + 1)
    assert "in 9 training passes (up to 3 queries" in caplog.text
    for name, matrix in whole.items():
        scale = np.abs(matrix).max()
        np.testing.assert_allclose(split[name], matrix, rtol=1e-5, atol=1e-6 * scale)


# -- reference computation of the combined score -------------------------------------------
def reference_kl(original: np.ndarray, transformed: list[np.ndarray]) -> np.ndarray:
    """KL(p || q) per training example with scipy, averaged over the transformed sets."""
    n_train = original.shape[1]
    values = np.zeros(n_train)
    for i in range(n_train):
        p = np.abs(original[:, i]) + 1e-10
        p = p / p.sum()
        divergences = []
        for matrix in transformed:
            q = np.abs(matrix[:, i]) + 1e-10
            q = q / q.sum()
            divergences.append(entropy(p, q))
        values[i] = np.mean(divergences)
    return values


def min_max(values: np.ndarray) -> np.ndarray:
    span = values.max() - values.min()
    return np.zeros_like(values) if span == 0 else (values - values.min()) / span


def reference_combined(original: np.ndarray, transformed: list[np.ndarray]) -> np.ndarray:
    means = np.stack([matrix.mean(axis=0) for matrix in [original, *transformed]])
    kl = reference_kl(original, transformed)
    variance = means.var(axis=0)
    influence = -original.mean(axis=0)
    return 0.4 * min_max(kl) + 0.3 * min_max(variance) + 0.3 * min_max(influence)


TRANSFORMS = (
    ("prefix_negation", "lexicon"),
    ("antonym_substitution", "lexicon"),
    ("paraphrase", "semantic"),
    ("question_negation", "semantic"),
    ("grammatical_negation", "structural"),
    ("clause_reordering", "structural"),
)


def hand_made_context(n_queries=5, n_train=40, seed=0):
    """Random per-query influence; a few examples keep the same influence under transforms."""
    rng = np.random.default_rng(seed)
    original = rng.normal(0.0, 1.0, (n_queries, n_train))
    per_query = {"original": original}
    for index, (name, _) in enumerate(TRANSFORMS):
        matrix = rng.normal(0.0, 1.0 + 0.2 * index, (n_queries, n_train))
        matrix[:, :3] = original[:, :3]
        per_query[name] = matrix
    examples = tuple(Example(f"x{i}", f"text {i}", i % 2) for i in range(n_train))
    train = TextDataset("hand-made", examples, ("negative", "positive"), "Classify.")
    infos = (QuerySetInfo("original", "original", None),) + tuple(
        QuerySetInfo(name, category, name) for name, category in TRANSFORMS
    )
    context = DetectionContext(
        train=train,
        victim=None,
        epoch_losses=np.zeros((1, n_train)),
        influence_provider=lambda name: per_query[name].mean(axis=0),
        query_sets=infos,
        seed=seed,
        per_query_influence_provider=lambda name, max_queries: per_query[name][:max_queries],
    )
    return context, per_query


def test_kl_term_on_two_queries_by_hand():
    original = np.array([[1.0, -2.0], [3.0, 2.0]])
    transformed = np.array([[3.0, 2.0], [1.0, -2.0]])
    terms = combined_components(original, [transformed])
    # Example 0: p = (1/4, 3/4), q = (3/4, 1/4). Example 1: p = q = (1/2, 1/2).
    expected = 0.25 * np.log(1 / 3) + 0.75 * np.log(3)
    np.testing.assert_allclose(terms.kl_divergence, [expected, 0.0], atol=1e-9)
    np.testing.assert_allclose(terms.variance, [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(terms.negated_influence, [-2.0, 0.0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_combined_score_matches_numpy(seed):
    context, per_query = hand_made_context(seed=seed)
    original = per_query["original"]
    transformed = [per_query[name] for name, _ in TRANSFORMS]
    result = get_detector("transform-combined").detect(context, "transform-combined")
    expected = reference_combined(original, transformed)
    np.testing.assert_allclose(result.scores, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(result.flagged, expected > np.percentile(expected, 90))
    assert result.flagged.sum() == 4
    assert result.track == "clean-queries"


def test_combined_terms_match_numpy():
    context, per_query = hand_made_context(seed=4)
    original = per_query["original"]
    transformed = [per_query[name] for name, _ in TRANSFORMS]
    terms = get_detector("transform-combined").components(context)
    np.testing.assert_allclose(terms.kl_divergence, reference_kl(original, transformed))
    means = np.stack([m.mean(axis=0) for m in [original, *transformed]])
    np.testing.assert_allclose(terms.variance, np.var(means, axis=0))
    np.testing.assert_allclose(terms.negated_influence, -original.mean(axis=0))
    # Examples 0-2 keep their influence under every transform: no divergence, no variance.
    np.testing.assert_allclose(terms.kl_divergence[:3], 0.0, atol=1e-12)
    np.testing.assert_allclose(terms.variance[:3], 0.0, atol=1e-12)


@pytest.mark.parametrize("category", ["lexicon", "semantic", "structural"])
def test_combined_holdout_uses_kept_sets(category):
    context, per_query = hand_made_context(seed=5)
    kept = tuple(name for name, c in TRANSFORMS if c != category)
    detector = restricted_ensemble("transform-combined", kept)
    result = detector.detect(context, "transform-combined")
    expected = reference_combined(per_query["original"], [per_query[name] for name in kept])
    np.testing.assert_allclose(result.scores, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(result.flagged, expected > np.percentile(expected, 90))
    full = get_detector("transform-combined").detect(context, "transform-combined")
    assert not np.allclose(result.scores, full.scores)


def test_combined_reads_first_max_queries():
    context, per_query = hand_made_context(n_queries=8, seed=6)
    detector = get_detector("transform-combined", max_queries=3)
    result = detector.detect(context, "transform-combined")
    original = per_query["original"][:3]
    transformed = [per_query[name][:3] for name, _ in TRANSFORMS]
    expected = reference_combined(original, transformed)
    np.testing.assert_allclose(result.scores, expected, rtol=1e-12, atol=1e-12)
    every_query = get_detector("transform-combined", max_queries=None)
    assert not np.allclose(every_query.detect(context, "all").scores, expected)


def test_min_max_scale_of_constant_is_zero():
    np.testing.assert_array_equal(min_max_scale(np.full(4, 2.5)), np.zeros(4))
    np.testing.assert_allclose(min_max_scale(np.array([2.0, 4.0, 3.0])), [0.0, 1.0, 0.5])


def test_combined_is_a_registered_ensemble():
    assert DETECTORS.get("transform-combined").track == "clean-queries"
    assert DETECTORS.get("transform-combined").description
    assert is_transform_ensemble("transform-combined")
    assert uses_per_query_influence("transform-combined")
    assert not uses_per_query_influence("transform-variance")


def test_combined_errors_name_the_problem():
    context, per_query = hand_made_context()
    detector = get_detector("transform-combined", transforms=("no_such_transform",))
    with pytest.raises(ValueError, match="no transformed query sets match"):
        detector.detect(context, "transform-combined")

    per_query["paraphrase"] = per_query["paraphrase"][:4]
    with pytest.raises(ValueError, match="query set 'paraphrase' has shape"):
        get_detector("transform-combined").detect(context, "transform-combined")

    means_only = DetectionContext(
        train=context.train,
        victim=None,
        epoch_losses=context.epoch_losses,
        influence_provider=context.influence_provider,
        query_sets=context.query_sets,
        seed=0,
    )
    with pytest.raises(RuntimeError, match="no per-query influence"):
        get_detector("transform-combined").detect(means_only, "transform-combined")

    with pytest.raises(ValueError, match="percentile must lie in"):
        get_detector("transform-combined", percentile=100)
    with pytest.raises(ValueError, match="kl_weight must be non-negative"):
        get_detector("transform-combined", kl_weight=-0.1)
    with pytest.raises(ValueError, match="max_queries must be at least 1 or None"):
        get_detector("transform-combined", max_queries=0)


# -- runner: per-query influence only when a detector reads it ------------------------------
def tiny_config(shared_data, detectors: list[str]):
    return load_config(
        None,
        {
            "model": "tiny-bert",
            "data.n_train": 60,
            "data.n_test": 40,
            "data.data_dir": str(shared_data),
            "training.epochs": 1,
            "training.max_length": 32,
            "training.learning_rate": 0.001,
            "queries.n_queries": 4,
            "queries.transforms": ["prefix_negation", "paraphrase", "grammatical_negation"],
            "influence.tracked_modules": ["classifier"],
            "detectors": detectors,
            "recovery_detectors": [],
        },
    )


def run_tiny(shared_data, cache_dir, detectors, held_out=None):
    config = tiny_config(shared_data, detectors)
    cache = StageCache(cache_dir / STAGES_FOLDER)
    experiment = Experiment(config, cache_dir, cache)
    result = experiment.result()
    if held_out is not None:
        experiment.detect("transform-combined", held_out)
    return experiment, result, cache.counts


def test_runner_computes_per_query_only_when_needed(shared_data, tmp_path):
    stage = PER_QUERY_INFLUENCE_STAGE
    experiment, result, counts = run_tiny(shared_data, tmp_path, ["transform-variance"])
    assert stage not in counts.computed
    assert stage not in counts.hits
    assert not list((tmp_path / STAGES_FOLDER).glob(f"{stage}/*"))
    assert not any(key.startswith("per query") for key in result.influence["scores_seconds"])

    experiment, result, counts = run_tiny(
        shared_data, tmp_path, ["transform-variance", "transform-combined"]
    )
    assert counts.computed == {stage: 4, "detection": 1}
    assert any(key.startswith("per query") for key in result.influence["scores_seconds"])
    assert result.influence["per_query_max_queries"] == {
        "transform-combined": DEFAULT_COMBINED_MAX_QUERIES
    }
    rows = {row["detector"]: row for row in result.detectors}
    assert rows["transform-combined"]["track"] == "clean-queries"
    # 10% of 60 examples lie strictly above the 90th percentile of distinct scores.
    assert rows["transform-combined"]["n_flagged"] == 6
    means = experiment.influence_scores()
    for name, matrix in experiment.per_query_influence_scores().items():
        assert matrix.shape == (4, 60)
        scale = np.abs(means[name]).max()
        np.testing.assert_allclose(matrix.mean(axis=0), means[name], rtol=1e-4, atol=1e-5 * scale)

    # A request for fewer queries scores and caches the leading ones under other keys.
    every_query = experiment.per_query_influence_scores()
    leading = experiment.per_query_influence_scores(2)
    assert experiment.stage_cache.counts.computed[stage] == 8
    for name, matrix in leading.items():
        scale = np.abs(every_query[name]).max()
        np.testing.assert_allclose(matrix, every_query[name][:2], rtol=1e-4, atol=1e-5 * scale)

    # Cached detection: the per-query scores are not even read. A held-out category is a
    # new detection, which reads them back from the cache.
    _, _, counts = run_tiny(shared_data, tmp_path, ["transform-combined"], held_out="lexicon")
    assert counts.computed == {"detection": 1}
    assert counts.hits[stage] == 4


def test_existing_detection_keys_unchanged(shared_data, tmp_path):
    """Detectors that read no per-query influence keep the key inputs they had before."""
    from benchmark.runner.cache import hash_inputs

    config = tiny_config(shared_data, ["transform-variance", "transform-combined"])
    experiment = Experiment(config, tmp_path)
    names = experiment.clean_set_names()
    for detector, held_out in (("transform-variance", None), ("transform-variance", "lexicon")):
        before = {
            "model": experiment.model_key,
            "detector": detector,
            "seed": config.seed,
            "influence": [experiment.influence_key(name) for name in names],
            "held_out_category": held_out,
            "transforms": None if held_out is None else list(experiment.kept_transforms(held_out)),
        }
        assert experiment.detection_key(detector, held_out) == hash_inputs("detection", before)
    combined = experiment.detection_key("transform-combined", None)
    assert combined != experiment.detection_key("transform-variance", None)
    per_query_keys = {experiment.per_query_influence_key(name, 4) for name in names}
    assert per_query_keys.isdisjoint({experiment.influence_key(name) for name in names})
    assert experiment.per_query_influence_key("original", 4) != (
        experiment.per_query_influence_key("original", 2)
    )
