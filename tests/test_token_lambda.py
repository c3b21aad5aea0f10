"""The eigenvalue correction from rotated tokens equals kronfluence's own, on real models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.data import load_sst2
from benchmark.influence import InfluenceConfig, InfluenceEngine, QuerySet, token_lambda
from benchmark.models import EncoderClassifier, TrainingConfig


def test_cost_rule_prefers_tokens_for_short_sequences():
    assert token_lambda.token_order_is_cheaper(25, 384, 1536)
    assert token_lambda.token_order_is_cheaper(48, 385, 384)
    assert not token_lambda.token_order_is_cheaper(4096, 385, 384)


@pytest.fixture(scope="module")
def trained(shared_data):
    train, test = load_sst2(shared_data)
    train = train.sample(64, seed=2)
    victim = EncoderClassifier("tiny-bert", 2, train.definition, max_length=32, seed=0)
    victim.fit(train.texts, train.labels, TrainingConfig(epochs=1, batch_size=16, max_length=32))
    queries = test.sample(6, seed=3)
    return victim, train, QuerySet("original", tuple(queries.texts), tuple(queries.labels))


def fit(trained, tmp_path, token: bool):
    victim, train, query_set = trained
    config = InfluenceConfig(
        factor_batch_size=16, train_batch_size=16, damping_factor=1e-3, token_lambda=token
    )
    engine = InfluenceEngine(victim, train.texts, train.labels, config, tmp_path, seed=0)
    name = engine.fit_factors()
    factors = engine._get_analyzer().load_all_factors(name)
    return factors, engine.score_many([query_set])["original"]


@pytest.mark.parametrize("order", ["tokens", "gradients"])
def test_lambda_and_scores_match_kronfluence(trained, tmp_path, monkeypatch, order):
    reference, reference_scores = fit(trained, tmp_path / "kronfluence", token=False)
    monkeypatch.setattr(token_lambda, "token_order_is_cheaper", lambda *_: order == "tokens")
    factors, scores = fit(trained, tmp_path / order, token=True)

    lambdas, expected = factors["lambda_matrix"], reference["lambda_matrix"]
    assert set(lambdas) == set(expected)
    assert len(lambdas) > 5
    for module, matrix in expected.items():
        assert matrix.abs().max() > 0, module
        torch.testing.assert_close(
            lambdas[module], matrix, rtol=2e-4, atol=1e-6 * matrix.abs().max()
        )
    for module, count in reference["num_lambda_processed"].items():
        assert int(factors["num_lambda_processed"][module]) == int(count) == 64
    np.testing.assert_allclose(
        scores, reference_scores, rtol=1e-3, atol=1e-6 * np.abs(reference_scores).max()
    )


def test_installs_on_every_tracked_linear(trained, tmp_path):
    victim, train, _ = trained
    engine = InfluenceEngine(victim, train.texts, train.labels, InfluenceConfig(), tmp_path)
    model = engine._get_analyzer().model
    trackers = [
        module._trackers
        for module in model.modules()
        if isinstance(module, token_lambda.TrackedLinear)
    ]
    assert trackers
    assert all(
        isinstance(t[token_lambda.ModuleMode.LAMBDA], token_lambda.TokenLambdaTracker)
        for t in trackers
    )


def test_default_stage_matches_plain_kronfluence(trained, tmp_path):
    """(b), the default stage, against (a), kronfluence's own passes with one call per set."""
    victim, train, query_set = trained
    flipped = QuerySet("flipped", query_set.texts, tuple(1 - y for y in query_set.labels))
    options = dict(factor_batch_size=16, train_batch_size=16, damping_factor=1e-3)
    plain = InfluenceConfig(sort_by_length=False, token_lambda=False, one_pass=False, **options)
    fast = InfluenceConfig(**options)
    assert fast.sort_by_length
    assert fast.token_lambda
    assert fast.one_pass
    reference = InfluenceEngine(victim, train.texts, train.labels, plain, tmp_path / "a", seed=0)
    ours = InfluenceEngine(victim, train.texts, train.labels, fast, tmp_path / "b", seed=0)
    expected = reference.score_many([query_set, flipped])
    scores = ours.score_many([query_set, flipped])
    for name, values in expected.items():
        scale = np.abs(values).max()
        np.testing.assert_allclose(scores[name], values, rtol=1e-3, atol=1e-5 * scale)
