"""Length-sorted influence passes: the order helpers and their effect on real kronfluence scores."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from benchmark.data import load_sst2
from benchmark.influence import InfluenceConfig, InfluenceEngine, QuerySet
from benchmark.influence.engine import influence_key_fields
from benchmark.influence.ordering import length_sorted_order, restore_order
from benchmark.models import EncoderClassifier, TrainingConfig


def test_order_is_a_permutation_sorted_within_segments():
    rng = np.random.default_rng(3)
    lengths = rng.integers(3, 60, size=200)
    order = length_sorted_order(lengths, seed=7, prefixes=(50, None, 120))
    assert sorted(order.tolist()) == list(range(200))
    for start, stop in ((0, 50), (50, 120), (120, 200)):
        segment = lengths[order[start:stop]]
        assert np.all(np.diff(segment) <= 0), (start, stop)
    # Each capped prefix holds the same examples as the seeded permutation's prefix, so it
    # is a uniform random sample and not the 50 longest examples.
    permutation = np.random.default_rng(7).permutation(200)
    assert set(order[:50]) == set(permutation[:50])
    assert set(order[:120]) == set(permutation[:120])
    assert lengths[order[:50]].mean() < np.sort(lengths)[-50:].mean()
    np.testing.assert_array_equal(order, length_sorted_order(lengths, 7, (50, 120)))


def test_without_caps_the_whole_set_is_sorted():
    lengths = [5, 9, 1, 9, 4]
    order = length_sorted_order(lengths, seed=0)
    assert [lengths[i] for i in order] == [9, 9, 5, 4, 1]


def test_restore_order_inverts_the_permutation():
    values = np.arange(10.0) * 3
    order = np.random.default_rng(1).permutation(10)
    np.testing.assert_array_equal(restore_order(values[order], order), values)
    matrix = np.stack([values, -values])
    np.testing.assert_array_equal(restore_order(matrix[:, order], order), matrix)


def test_key_fields_keep_earlier_keys_for_data_set_order():
    assert "sort_by_length" not in influence_key_fields(InfluenceConfig(sort_by_length=False))
    assert influence_key_fields(InfluenceConfig())["sort_by_length"] is True


@pytest.fixture(scope="module")
def trained(shared_data):
    train, test = load_sst2(shared_data)
    train = train.sample(96, seed=0)
    victim = EncoderClassifier("tiny-bert", 2, train.definition, max_length=32, seed=0)
    victim.fit(train.texts, train.labels, TrainingConfig(epochs=2, batch_size=16, max_length=32))
    queries = test.sample(8, seed=1)
    return victim, train, QuerySet("original", tuple(queries.texts), tuple(queries.labels))


def engine(trained, tmp_path, **options) -> InfluenceEngine:
    victim, train, _ = trained
    config = InfluenceConfig(
        factor_batch_size=16, train_batch_size=16, damping_factor=1e-3, **options
    )
    return InfluenceEngine(victim, train.texts, train.labels, config, tmp_path, seed=0)


def test_sorted_batches_change_nothing_without_sampled_factors(trained, tmp_path):
    """With identity preconditioning no Fisher labels are drawn: scores must agree exactly."""
    _, _, query_set = trained
    plain = engine(trained, tmp_path / "plain", strategy="identity", sort_by_length=False)
    sorted_ = engine(trained, tmp_path / "sorted", strategy="identity")
    assert plain.factors_key != sorted_.factors_key
    expected = plain.score_many([query_set])["original"]
    np.testing.assert_allclose(
        sorted_.score_many([query_set])["original"], expected, rtol=1e-4, atol=1e-9
    )
    np.testing.assert_allclose(sorted_.score(query_set), expected, rtol=1e-4, atol=1e-9)


def test_sorted_ekfac_scores_keep_the_ranking(trained, tmp_path):
    """EK-FAC factors differ only through the sampled Fisher labels.

    A score restored to the wrong example would drop the rank correlation to about zero.
    """
    _, _, query_set = trained
    plain = engine(trained, tmp_path / "plain", sort_by_length=False).score_many([query_set])
    sorted_scores = engine(trained, tmp_path / "sorted").score_many([query_set])
    rho = spearmanr(plain["original"], sorted_scores["original"]).statistic
    assert rho > 0.98
