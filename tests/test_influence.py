"""EK-FAC influence with real kronfluence on a tiny BERT trained on real SST-2 examples."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from benchmark.data import load_sst2
from benchmark.influence import InfluenceConfig, InfluenceEngine, QuerySet
from benchmark.models import EncoderClassifier, TrainingConfig


@pytest.fixture(scope="module")
def trained(shared_data):
    train, test = load_sst2(shared_data)
    train = train.sample(96, seed=0)
    victim = EncoderClassifier("tiny-bert", 2, train.definition, max_length=32, seed=0)
    victim.fit(train.texts, train.labels, TrainingConfig(epochs=2, batch_size=16, max_length=32))
    return victim, train, test.sample(8, seed=1)


def test_scores_finite_and_cached(trained, tmp_path, caplog):
    victim, train, queries = trained
    config = InfluenceConfig(factor_batch_size=16, train_batch_size=16, damping_factor=1e-3)
    query_set = QuerySet("original", tuple(queries.texts), tuple(queries.labels))

    first = InfluenceEngine(victim, train.texts, train.labels, config, tmp_path)
    scores = first.score(query_set)
    assert scores.shape == (96,)
    assert np.all(np.isfinite(scores))
    assert scores.std() > 0
    assert not first.timings.factors_cached

    caplog.set_level(logging.INFO, logger="benchmark.influence.engine")
    second = InfluenceEngine(victim, train.texts, train.labels, config, tmp_path)
    again = second.score(query_set)
    assert second.timings.factors_cached
    assert "skipping factor fitting" in caplog.text
    np.testing.assert_array_equal(scores, again)
    assert first.factors_key == second.factors_key


def test_factor_key_depends_on_data(trained, tmp_path):
    victim, train, _ = trained
    config = InfluenceConfig()
    one = InfluenceEngine(victim, train.texts, train.labels, config, tmp_path)
    flipped = [1 - label for label in train.labels]
    other = InfluenceEngine(victim, train.texts, flipped, config, tmp_path)
    assert one.factors_key != other.factors_key


def test_sign_convention_same_label_helps(trained, tmp_path):
    """Positive means helpful: a query's own training example and same-label examples score > 0."""
    victim, train, _ = trained
    config = InfluenceConfig(factor_batch_size=16, train_batch_size=16, damping_factor=1e-3)
    engine = InfluenceEngine(victim, train.texts, train.labels, config, tmp_path)
    labels = np.array(train.labels)
    for index in (3, 17, 42):
        query = QuerySet(f"self{index}", (train.texts[index],), (train.labels[index],))
        scores = engine.score(query)
        assert scores[index] > 0
        assert scores[labels == labels[index]].mean() > 0
        assert scores[labels != labels[index]].mean() < 0


def test_flipped_label_query_reverses_sign(trained, tmp_path):
    """Asking for the opposite label negates the gradient of a two-class loss's margin."""
    victim, train, queries = trained
    config = InfluenceConfig(
        measurement="margin", factor_batch_size=16, train_batch_size=16, damping_factor=1e-3
    )
    engine = InfluenceEngine(victim, train.texts, train.labels, config, tmp_path)
    texts = tuple(queries.texts)
    scores = engine.score(QuerySet("q", texts, tuple(queries.labels)))
    flipped = engine.score(QuerySet("q_flipped", texts, tuple(1 - y for y in queries.labels)))
    np.testing.assert_allclose(flipped, -scores, rtol=1e-4, atol=1e-6 * np.abs(scores).max())


def test_invalid_config_values():
    with pytest.raises(ValueError, match="strategy"):
        InfluenceConfig(strategy="exact")
    with pytest.raises(ValueError, match="damping_factor"):
        InfluenceConfig(damping_factor=-1.0)
    with pytest.raises(ValueError, match="query set 'q' is empty"):
        QuerySet("q", (), ())


def test_one_pass_matches_kronfluence_per_set(trained, tmp_path):
    """All query sets scored in one training pass equal one kronfluence call per set."""
    victim, train, queries = trained
    config = InfluenceConfig(factor_batch_size=16, train_batch_size=16, damping_factor=1e-3)
    engine = InfluenceEngine(victim, train.texts, train.labels, config, tmp_path)
    texts, labels = tuple(queries.texts), tuple(queries.labels)
    query_sets = [
        QuerySet("original", texts, labels),
        QuerySet("flipped", texts, tuple(1 - y for y in labels)),
        QuerySet("first_half", texts[:4], labels[:4]),
    ]
    one_pass = engine.score_many(query_sets)
    assert set(one_pass) == {"original", "flipped", "first_half"}
    for query_set in query_sets:
        reference = engine.score(query_set)
        scale = np.abs(reference).max()
        np.testing.assert_allclose(
            one_pass[query_set.name], reference, rtol=1e-4, atol=1e-5 * scale
        )


def test_failed_eigendecomposition_is_clear(trained, tmp_path, monkeypatch):
    """A linear-algebra failure inside kronfluence becomes an error that says what to do."""
    from kronfluence.analyzer import Analyzer

    def fail(*args, **kwargs):
        raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")

    monkeypatch.setattr(Analyzer, "fit_all_factors", fail)
    victim, train, _ = trained
    engine = InfluenceEngine(victim, train.texts, train.labels, InfluenceConfig(), tmp_path)
    with pytest.raises(FloatingPointError, match="eigendecomposition failed"):
        engine.fit_factors()
    assert not list((tmp_path / "influence").glob("factors_*"))


def test_factors_ignore_caller_random_state(trained, tmp_path):
    """Factor fitting seeds its own label sampling and leaves the caller's generator alone."""
    victim, train, queries = trained
    config = InfluenceConfig(factor_batch_size=16, train_batch_size=16, damping_factor=1e-3)
    query_set = QuerySet("original", tuple(queries.texts), tuple(queries.labels))

    torch.manual_seed(1)
    first = InfluenceEngine(victim, train.texts, train.labels, config, tmp_path / "a", seed=3)
    scores = first.score(query_set)

    torch.manual_seed(2)
    torch.rand(1000)
    second = InfluenceEngine(victim, train.texts, train.labels, config, tmp_path / "b", seed=3)
    state = torch.get_rng_state()
    second.fit_factors()
    assert torch.equal(torch.get_rng_state(), state)
    again = second.score(query_set)
    np.testing.assert_array_equal(scores, again)

    other_seed = InfluenceEngine(victim, train.texts, train.labels, config, tmp_path / "c", seed=4)
    assert not np.array_equal(scores, other_seed.score(query_set))
