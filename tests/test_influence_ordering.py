"""Length-sorted influence passes: the order helpers and their effect on real kronfluence scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.data import load_sst2
from benchmark.influence import InfluenceConfig, InfluenceEngine, QuerySet
from benchmark.influence.engine import influence_key_fields
from benchmark.influence.ordering import item_lengths, length_sorted_order, restore_order
from benchmark.models import EncoderClassifier, TrainingConfig


def test_order_sorts_longest_first_and_keeps_ties_stable():
    lengths = [5, 9, 1, 9, 4]
    order = length_sorted_order(lengths)
    assert order.tolist() == [1, 3, 0, 4, 2]
    assert sorted(order.tolist()) == list(range(5))


def test_item_lengths_accept_tensors_and_lists():
    """Encoder data sets hold tensors, generative ones lists of token ids."""
    items = [{"input_ids": torch.arange(4)}, {"input_ids": [5, 6]}, {"input_ids": []}]
    assert item_lengths(items) == [4, 2, 0]


def test_restore_order_inverts_the_permutation():
    values = np.arange(10.0) * 3
    order = np.random.default_rng(1).permutation(10)
    np.testing.assert_array_equal(restore_order(values[order], order), values)
    matrix = np.stack([values, -values])
    np.testing.assert_array_equal(restore_order(matrix[:, order], order), matrix)


def test_key_fields_omit_disabled_options():
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
    assert plain.factors_key == sorted_.factors_key
    expected = plain.score_many([query_set])["original"]
    np.testing.assert_allclose(
        sorted_.score_many([query_set])["original"], expected, rtol=1e-4, atol=1e-9
    )
    np.testing.assert_allclose(sorted_.score(query_set), expected, rtol=1e-4, atol=1e-9)


def test_sorted_scoring_matches_data_set_order_with_ekfac(trained, tmp_path):
    """Factors are fitted in data set order either way, so the scores agree to rounding."""
    _, _, query_set = trained
    plain = engine(trained, tmp_path / "plain", sort_by_length=False)
    sorted_ = engine(trained, tmp_path / "sorted")
    assert plain.factors_key == sorted_.factors_key
    expected = plain.score_many([query_set])["original"]
    scale = np.abs(expected).max()
    np.testing.assert_allclose(
        sorted_.score_many([query_set])["original"], expected, rtol=1e-4, atol=1e-6 * scale
    )
    np.testing.assert_allclose(sorted_.score(query_set), expected, rtol=1e-4, atol=1e-6 * scale)
