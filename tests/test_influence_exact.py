"""Exact damped Gauss-Newton influence, and kronfluence's EK-FAC checked against it.

The EK-FAC comparison uses a tiny BERT classifier built locally with the packaged MiniLM
tokenizer and trained on 64 real SST-2 examples. Only the pooler and the classifier head
are tracked (306 parameters), so the exact Gauss-Newton matrix is small.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from kronfluence.task import Task
from scipy.stats import spearmanr

from benchmark.data import load_sst2
from benchmark.influence import ClassificationTask
from benchmark.influence.exact import exact_influence, module_parameter_filter
from benchmark.influence.generative import PaddingCollator

N_TRAIN = 64
N_QUERY = 8
MAX_LENGTH = 24
DAMPING = 1e-3  # passed to kronfluence as damping_factor and added to the exact G
TRACKED = ["bert.pooler.dense", "classifier"]
MIN_SPEARMAN = 0.9


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    """Run these tiny models on one intra-op thread, restoring the setting afterwards.

    Extra threads only add synchronisation at this size. On a 2-core machine busy with
    other work they made this file 2 to 3 times slower.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# -- exact influence on models with a closed form -------------------------------------------
class _FeatureTask(Task):
    """Cross-entropy of a model that maps ``features`` to class logits."""

    def __init__(self, loss_scale: float = 1.0):
        self.loss_scale = loss_scale

    def compute_train_loss(self, batch, model, sample=False):
        logits = model(batch["features"])
        return self.loss_scale * F.cross_entropy(logits, batch["labels"], reduction="sum")

    def compute_measurement(self, batch, model):
        return self.compute_train_loss(batch, model)


def _feature_batches(n_examples: int, n_features: int, n_classes: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(n_examples, n_features, generator=generator)
    labels = torch.randint(0, n_classes, (n_examples,), generator=generator)
    return [
        {"features": features[:5], "labels": labels[:5]},
        {"features": features[5:], "labels": labels[5:]},
    ]


def test_exact_matches_softmax_closed_form():
    """For z = W x + b, G = mean_n J_n^T (diag p - p p^T) J_n with J_n = dz/d(W, b)."""
    n_features, n_classes, damping = 4, 3, 1e-2
    torch.manual_seed(0)
    model = torch.nn.Linear(n_features, n_classes).double()
    train = _feature_batches(12, n_features, n_classes, seed=1)
    queries = _feature_batches(7, n_features, n_classes, seed=2)
    for batch in train + queries:
        batch["features"] = batch["features"].double()

    scores = exact_influence(
        model, _FeatureTask(), train, queries, damping, lambda name: True, num_classes=n_classes
    )

    def jacobian_and_probabilities(x):
        # Parameters are ordered as named_parameters: W row-major, then b.
        jacobian = np.hstack([np.kron(np.eye(n_classes), x[None, :]), np.eye(n_classes)])
        logits = model.weight.detach().numpy() @ x + model.bias.detach().numpy()
        probabilities = np.exp(logits - logits.max())
        return jacobian, probabilities / probabilities.sum()

    def loss_gradient(x, y):
        jacobian, probabilities = jacobian_and_probabilities(x)
        return jacobian.T @ (probabilities - np.eye(n_classes)[y])

    train_x = np.vstack([batch["features"].numpy() for batch in train])
    train_y = np.concatenate([batch["labels"].numpy() for batch in train])
    query_x = np.vstack([batch["features"].numpy() for batch in queries])
    query_y = np.concatenate([batch["labels"].numpy() for batch in queries])
    n_parameters = n_classes * (n_features + 1)
    gauss_newton = np.zeros((n_parameters, n_parameters))
    for x in train_x:
        jacobian, probabilities = jacobian_and_probabilities(x)
        output_hessian = np.diag(probabilities) - np.outer(probabilities, probabilities)
        gauss_newton += jacobian.T @ output_hessian @ jacobian / len(train_x)
    train_gradients = np.stack([loss_gradient(x, y) for x, y in zip(train_x, train_y)], axis=1)
    query_gradients = np.stack([loss_gradient(x, y) for x, y in zip(query_x, query_y)])
    expected = query_gradients @ np.linalg.solve(
        gauss_newton + damping * np.eye(n_parameters), train_gradients
    )

    assert scores.shape == (7, 12)
    np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-9)


def test_block_diagonal_sums_module_influences():
    """Without cross-module blocks, G^-1 splits into one inverse per module."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
    train = _feature_batches(10, 5, 3, seed=3)
    queries = _feature_batches(6, 5, 3, seed=4)
    task = _FeatureTask()

    def influence(modules, block_diagonal=False):
        return exact_influence(
            model,
            task,
            train,
            queries,
            1e-2,
            module_parameter_filter(modules),
            num_classes=3,
            block_diagonal=block_diagonal,
        )

    block_diagonal = influence(["0", "2"], block_diagonal=True)
    per_module_sum = influence(["0"]) + influence(["2"])
    full = influence(["0", "2"])

    np.testing.assert_allclose(block_diagonal, per_module_sum, rtol=1e-6, atol=1e-9)
    assert not np.allclose(full, block_diagonal, rtol=1e-3)


def test_exact_restores_requires_grad():
    model = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3))
    model[0].weight.requires_grad_(False)
    model.train()
    exact_influence(
        model,
        _FeatureTask(),
        _feature_batches(10, 5, 3, seed=5),
        _feature_batches(6, 5, 3, seed=6),
        1e-2,
        module_parameter_filter(["2"]),
        num_classes=3,
    )
    assert [parameter.requires_grad for parameter in model.parameters()] == [
        False,
        True,
        True,
        True,
    ]
    assert model.training


def test_exact_rejects_invalid_input():
    model = torch.nn.Linear(5, 3)
    train = _feature_batches(10, 5, 3, seed=7)
    queries = _feature_batches(6, 5, 3, seed=8)
    everything = lambda name: True  # noqa: E731

    with pytest.raises(ValueError, match="sum to"):
        exact_influence(
            model, _FeatureTask(loss_scale=2.0), train, queries, 1e-2, everything, num_classes=3
        )
    with pytest.raises(ValueError, match="selects no parameter"):
        exact_influence(
            model, _FeatureTask(), train, queries, 1e-2, lambda name: False, num_classes=3
        )
    with pytest.raises(ValueError, match="max_parameters"):
        exact_influence(
            model,
            _FeatureTask(),
            train,
            queries,
            1e-2,
            everything,
            num_classes=3,
            max_parameters=10,
        )
    with pytest.raises(ValueError, match="damping must be positive"):
        exact_influence(model, _FeatureTask(), train, queries, 0.0, everything, num_classes=3)


def test_parameter_filter_ignores_kronfluence_wrapper():
    select = module_parameter_filter(["classifier"])
    assert select("classifier.weight")
    assert select("classifier.original_module.bias")
    assert not select("bert.pooler.dense.weight")


# -- EK-FAC against the exact reference on a tiny BERT --------------------------------------
@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from benchmark.models.spec import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path("minilm"))


@pytest.fixture(scope="module")
def sst2_examples(tokenizer, shared_data):
    train, test = load_sst2(shared_data)

    def encode(texts, labels):
        examples = []
        for text, label in zip(texts, labels):
            encoded = tokenizer(text, truncation=True, max_length=MAX_LENGTH)
            examples.append(
                {
                    "input_ids": encoded["input_ids"],
                    "attention_mask": encoded["attention_mask"],
                    "labels": int(label),
                }
            )
        return examples

    return (
        encode(train.texts[:N_TRAIN], train.labels[:N_TRAIN]),
        encode(test.texts[:N_QUERY], test.labels[:N_QUERY]),
    )


@pytest.fixture(scope="module")
def classifiers(tokenizer, sst2_examples):
    """Return the tiny BERT after 5 epochs ("brief") and after 10 epochs ("longer")."""
    from transformers import BertConfig, BertForSequenceClassification

    train, _ = sst2_examples
    collator = PaddingCollator(tokenizer.pad_token_id)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    snapshots = {}
    model.train()
    for epoch in range(1, 11):
        for start in range(0, N_TRAIN, 16):
            loss = model(**collator(train[start : start + 16])).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if epoch in (5, 10):
            snapshots["brief" if epoch == 5 else "longer"] = copy.deepcopy(model).eval()
    return snapshots


def _ekfac_scores(model, train, queries, collator, output_dir) -> np.ndarray:
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.utils.dataset import DataLoaderKwargs

    task = ClassificationTask("loss", TRACKED)
    analyzer = Analyzer(
        analysis_name="ekfac",
        model=prepare_model(copy.deepcopy(model), task),
        task=task,
        cpu=True,
        disable_tqdm=True,
        output_dir=str(output_dir),
        log_level=logging.WARNING,
    )
    analyzer.set_dataloader_kwargs(DataLoaderKwargs(collate_fn=collator, num_workers=0))
    torch.manual_seed(0)  # the Fisher uses labels sampled from the model
    analyzer.fit_all_factors(
        factors_name="factors",
        dataset=train,
        per_device_batch_size=16,
        factor_args=FactorArguments(strategy="ekfac"),
        overwrite_output_dir=True,
    )
    analyzer.compute_pairwise_scores(
        scores_name="scores",
        factors_name="factors",
        query_dataset=queries,
        train_dataset=train,
        per_device_query_batch_size=N_QUERY,
        per_device_train_batch_size=16,
        score_args=ScoreArguments(damping_factor=DAMPING),
        overwrite_output_dir=True,
    )
    return analyzer.load_pairwise_scores("scores")["all_modules"].to(torch.float64).numpy()


def _exact_scores(model, train, queries, collator, block_diagonal=False, damping=DAMPING):
    return exact_influence(
        copy.deepcopy(model),
        ClassificationTask("loss", TRACKED),
        [collator(train[start : start + 16]) for start in range(0, N_TRAIN, 16)],
        [collator(queries)],
        damping,
        module_parameter_filter(TRACKED),
        block_diagonal=block_diagonal,
    )


def _spearman(first: np.ndarray, second: np.ndarray) -> tuple[float, list[float]]:
    """Return the Spearman correlation over all pairs and for each query row."""
    overall = spearmanr(first.ravel(), second.ravel()).statistic
    per_query = [spearmanr(first[row], second[row]).statistic for row in range(first.shape[0])]
    return float(overall), [float(value) for value in per_query]


def test_ekfac_matches_exact_after_brief_training(classifiers, tokenizer, sst2_examples, tmp_path):
    train, queries = sst2_examples
    collator = PaddingCollator(tokenizer.pad_token_id)
    model = classifiers["brief"]
    ekfac = _ekfac_scores(model, train, queries, collator, tmp_path)
    exact = _exact_scores(model, train, queries, collator)

    assert ekfac.shape == (N_QUERY, N_TRAIN)
    assert exact.shape == (N_QUERY, N_TRAIN)
    overall, per_query = _spearman(ekfac, exact)
    assert overall >= MIN_SPEARMAN, f"Spearman over all pairs {overall:.4f}"
    assert min(per_query) >= MIN_SPEARMAN, f"Spearman per query {per_query}"


def test_ekfac_matches_block_diagonal_exact(classifiers, tokenizer, sst2_examples, tmp_path):
    """After longer training EK-FAC tracks the exact G without cross-module blocks.

    NOTE: against the full exact G the same scores reach a Spearman correlation of only
    0.66 (measured with this file's model, data and seeds on CPU). kronfluence treats
    modules as independent, so the pooler-classifier blocks of G are missing from EK-FAC
    by design.
    """
    train, queries = sst2_examples
    collator = PaddingCollator(tokenizer.pad_token_id)
    model = classifiers["longer"]
    ekfac = _ekfac_scores(model, train, queries, collator, tmp_path)
    exact = _exact_scores(model, train, queries, collator, block_diagonal=True)

    overall, per_query = _spearman(ekfac, exact)
    assert overall >= MIN_SPEARMAN, f"Spearman over all pairs {overall:.4f}"
    assert min(per_query) >= MIN_SPEARMAN, f"Spearman per query {per_query}"
    # Same damping and the same per-example averaging of G give the same scale.
    ratio = float(np.median(ekfac / exact))
    assert 0.5 < ratio < 2.0, f"median EK-FAC / exact score ratio {ratio:.3f}"

    # The threshold separates preconditioners: plain gradient dot products (G dropped by a
    # damping that dwarfs it) fall below it on this model.
    dot_products = _exact_scores(model, train, queries, collator, damping=1e6)
    assert _spearman(dot_products, exact)[0] < MIN_SPEARMAN
