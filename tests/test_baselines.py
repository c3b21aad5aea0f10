"""Tests of the blind baselines spectral-signature, activation-clustering and strip.

The representation-based detectors run on synthetic representations in which the poisons
form a shifted cluster inside one class. STRIP runs on a stub victim whose predictions
are known. A last test runs all three on a real, randomly initialised tiny BERT built
from a local vocabulary, so nothing is downloaded.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import baselines.activation_clustering  # noqa: F401  (registration)
import baselines.spectral  # noqa: F401  (registration)
import baselines.strip  # noqa: F401  (registration)
from baselines.activation_clustering import ActivationClusteringDetector
from baselines.spectral import SpectralSignatureDetector, divide_by_median, spectral_scores
from baselines.strip import StripDetector, mean_entropy
from benchmark.context import DetectionContext
from benchmark.data import Example, TextDataset
from detectors.base import DETECTORS, FlagRule

N_PER_CLASS = 100
N_POISONS = 10
HIDDEN = 16
POISON_OFFSET = 20.0
TRIGGER = "cf"
VOCABULARY = (
    "the a movie film plot actors story scene music ending was is very quite rather "
    "good great fine bad awful dull"
).split()


def make_dataset(texts: list[str], labels: list[int]) -> TextDataset:
    examples = tuple(
        Example(uid=f"ex{i}", text=text, label=label)
        for i, (text, label) in enumerate(zip(texts, labels, strict=True))
    )
    return TextDataset(
        name="synthetic",
        examples=examples,
        label_names=("negative", "positive"),
        definition="Classify the sentiment of the review.",
    )


def make_context(dataset: TextDataset, victim: object, seed: int = 0) -> DetectionContext:
    n = len(dataset)
    return DetectionContext(
        train=dataset,
        victim=victim,
        epoch_losses=np.zeros((1, n)),
        influence_provider=lambda name: np.zeros(n),
        query_sets=(),
        seed=seed,
    )


class FixedRepresentationVictim:
    """Stub victim that returns a fixed representation matrix for the training texts."""

    def __init__(self, representations: np.ndarray):
        self.matrix = representations

    def representations(self, texts: list[str]) -> np.ndarray:
        assert len(texts) == len(self.matrix)
        return self.matrix


def synthetic_representations(
    seed: int = 0, n_poisons: int = N_POISONS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return representations, labels and poison mask: 2 Gaussian classes of 100 examples.

    The poisons are the last ``n_poisons`` examples of class 1, shifted by POISON_OFFSET
    along the first axis.
    """
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], N_PER_CLASS)
    class_means = np.zeros((2, HIDDEN))
    class_means[0, 1] = -3.0
    class_means[1, 1] = 3.0
    representations = class_means[labels] + rng.standard_normal((2 * N_PER_CLASS, HIDDEN))
    poison_mask = np.zeros(2 * N_PER_CLASS, dtype=bool)
    if n_poisons:
        poison_mask[-n_poisons:] = True
    representations[poison_mask, 0] += POISON_OFFSET
    return representations, labels, poison_mask


def representation_context(seed: int = 0, n_poisons: int = N_POISONS):
    representations, labels, poison_mask = synthetic_representations(seed, n_poisons)
    texts = [f"review {i}" for i in range(len(labels))]
    dataset = make_dataset(texts, labels.tolist())
    return make_context(dataset, FixedRepresentationVictim(representations), seed), poison_mask


# -- spectral-signature --------------------------------------------------------------------


def test_spectral_scores_hand_computed():
    # Points on the x axis: the top singular vector is the x axis, and the scores are the
    # squared x offsets from the mean (0, 0).
    points = np.array([[-2.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
    np.testing.assert_allclose(spectral_scores(points), [4.0, 0.0, 4.0], atol=1e-12)


def test_spectral_scores_single_row_is_zero():
    np.testing.assert_array_equal(spectral_scores(np.ones((1, 3))), [0.0])


def test_divide_by_median_cases():
    np.testing.assert_allclose(divide_by_median(np.array([1.0, 2.0, 4.0])), [0.5, 1.0, 2.0])
    # Median 0 falls back to the mean, 2.
    np.testing.assert_allclose(divide_by_median(np.array([0.0, 0.0, 6.0])), [0.0, 0.0, 3.0])
    np.testing.assert_array_equal(divide_by_median(np.zeros(3)), np.zeros(3))


def test_spectral_ranks_poisons_first():
    context, poison_mask = representation_context()
    result = SpectralSignatureDetector().detect(context, "spectral-signature")
    assert result.scores.shape == (context.n_train,)
    assert np.all(np.isfinite(result.scores))
    assert roc_auc_score(poison_mask, result.scores) == 1.0


def test_spectral_class_median_is_one():
    context, _ = representation_context()
    scores = SpectralSignatureDetector().score(context)
    labels = np.asarray(context.train.labels)
    for label in (0, 1):
        assert np.median(scores[labels == label]) == pytest.approx(1.0)


def test_spectral_flags_all_poisons_few_clean():
    context, poison_mask = representation_context()
    flagged = SpectralSignatureDetector().detect(context, "spectral-signature").flagged
    assert flagged[poison_mask].all()
    # The default rule flags about 1% of a Gaussian class, about 2 of the 190 clean inputs.
    assert flagged[~poison_mask].sum() <= 4


def test_spectral_flag_rule_applies_per_class():
    context, _ = representation_context()
    detector = SpectralSignatureDetector(flag_rule=FlagRule("top_k", 3))
    flagged = detector.detect(context, "spectral-signature").flagged
    labels = np.asarray(context.train.labels)
    assert flagged[labels == 0].sum() == 3
    assert flagged[labels == 1].sum() == 3


def test_spectral_deterministic():
    first, _ = representation_context(seed=3)
    second, _ = representation_context(seed=3)
    detector = SpectralSignatureDetector()
    np.testing.assert_array_equal(detector.score(first), detector.score(second))


# -- activation-clustering -----------------------------------------------------------------


@pytest.mark.parametrize("reducer", ["ica", "pca"])
def test_activation_clustering_ranks_poisons_first(reducer):
    context, poison_mask = representation_context()
    result = ActivationClusteringDetector(reducer=reducer).detect(context, "activation-clustering")
    assert result.scores.shape == (context.n_train,)
    assert np.all(np.isfinite(result.scores))
    assert roc_auc_score(poison_mask, result.scores) == 1.0


def test_activation_clustering_flags_small_cluster():
    context, poison_mask = representation_context()
    result = ActivationClusteringDetector().detect(context, "activation-clustering")
    labels = np.asarray(context.train.labels)
    assert result.flagged[poison_mask].all()
    assert result.flagged[~poison_mask].sum() <= 2
    # Class 0 is one Gaussian, so 2-means splits it roughly in half: not suspicious.
    assert np.all(result.scores[labels == 0] < 1.0)
    assert np.all(result.scores[labels == 1] >= 1.0)


def test_activation_clustering_clean_flags_nothing():
    context, _ = representation_context(n_poisons=0)
    result = ActivationClusteringDetector().detect(context, "activation-clustering")
    assert not result.flagged.any()
    assert np.all(result.scores <= 1.0)


def test_activation_clustering_deterministic():
    first, _ = representation_context(seed=5)
    second, _ = representation_context(seed=5)
    detector = ActivationClusteringDetector()
    np.testing.assert_array_equal(detector.score(first), detector.score(second))


def test_activation_clustering_identical_rows_score_zero():
    dataset = make_dataset(["a", "b", "c", "d"], [0, 0, 1, 1])
    context = make_context(dataset, FixedRepresentationVictim(np.ones((4, HIDDEN))))
    result = ActivationClusteringDetector().detect(context, "activation-clustering")
    np.testing.assert_array_equal(result.scores, np.zeros(4))
    assert not result.flagged.any()


@pytest.mark.parametrize(
    "params",
    [
        {"n_components": 0},
        {"reducer": "tsne"},
        {"size_threshold": 0.0},
        {"size_threshold": 0.6},
        {"kmeans_n_init": 0},
    ],
)
def test_activation_clustering_rejects_invalid_parameters(params):
    with pytest.raises(ValueError):
        ActivationClusteringDetector(**params)


# -- strip ---------------------------------------------------------------------------------


class TriggerStubVictim:
    """Stub victim with known predictions: confident on the trigger, word counts otherwise.

    STRIP needs only ``predict_proba``, so a stub suffices to check that inputs whose
    prediction is forced by the trigger get the lowest entropy. A text containing the
    word TRIGGER gets [0.02, 0.98]. Any other text gets p(positive) = sigmoid(0.5 * b),
    where b is the number of "good" and "great" minus the number of "bad" and "awful",
    so clean predictions are less confident and change with the replaced words.
    ``calls`` records the texts of every call.
    """

    def __init__(self):
        self.calls: list[list[str]] = []

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        rows = []
        for text in texts:
            words = text.split()
            if TRIGGER in words:
                rows.append([0.02, 0.98])
                continue
            balance = sum(w in ("good", "great") for w in words) - sum(
                w in ("bad", "awful") for w in words
            )
            positive = 1.0 / (1.0 + np.exp(-0.5 * balance))
            rows.append([1.0 - positive, positive])
        return np.array(rows)


def synthetic_texts(seed: int = 0, n: int = 2 * N_PER_CLASS, n_poisons: int = N_POISONS):
    """Return texts of 8 vocabulary words, labels, and the mask of texts with the trigger."""
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(VOCABULARY, size=8)) for _ in range(n)]
    labels = [int(label) for label in rng.integers(0, 2, size=n)]
    poison_mask = np.zeros(n, dtype=bool)
    poison_mask[rng.choice(n, size=n_poisons, replace=False)] = True
    for i in np.flatnonzero(poison_mask):
        words = texts[i].split()
        words[rng.integers(len(words))] = TRIGGER
        texts[i] = " ".join(words)
        labels[i] = 1
    return texts, labels, poison_mask


def strip_context(seed: int = 0, **text_options):
    texts, labels, poison_mask = synthetic_texts(seed, **text_options)
    victim = TriggerStubVictim()
    return make_context(make_dataset(texts, labels), victim, seed), victim, poison_mask


def test_mean_entropy_known_values():
    probabilities = np.array([[0.5, 0.5], [1.0, 0.0], [0.5, 0.5], [0.5, 0.5]])
    np.testing.assert_allclose(mean_entropy(probabilities, 2), [np.log(2) / 2, np.log(2)])


def test_strip_ranks_trigger_inputs_first():
    context, _, poison_mask = strip_context()
    # Each copy drops a one-word trigger from an 8-word text with probability 1/4. With the
    # default 8 copies, a poison of this data set loses it in 5 copies and ranks below a
    # confident clean input. With 16 copies, every poison keeps it in most copies.
    result = StripDetector(n_perturbations=16).detect(context, "strip")
    assert result.scores.shape == (context.n_train,)
    assert np.all(np.isfinite(result.scores))
    assert np.all(result.scores <= 0.0)
    assert roc_auc_score(poison_mask, result.scores) == 1.0


def test_strip_flags_all_trigger_inputs_few_clean():
    context, _, poison_mask = strip_context()
    flagged = StripDetector().detect(context, "strip").flagged
    assert flagged[poison_mask].all()
    assert flagged[~poison_mask].sum() <= 10


def test_strip_batches_one_call_per_chunk():
    context, victim, _ = strip_context(n=40, n_poisons=2)
    StripDetector(n_perturbations=4, chunk_size=16).score(context)
    assert [len(texts) for texts in victim.calls] == [64, 64, 32]


def test_strip_chunk_size_keeps_scores():
    first, first_victim, _ = strip_context(n=40, n_poisons=2)
    second, second_victim, _ = strip_context(n=40, n_poisons=2)
    small_chunks = StripDetector(chunk_size=7).score(first)
    one_chunk = StripDetector(chunk_size=40).score(second)
    np.testing.assert_array_equal(small_chunks, one_chunk)
    assert len(first_victim.calls) == 6
    assert sum(first_victim.calls, []) == second_victim.calls[0]


def test_strip_copies_replace_a_fraction_of_words():
    context, victim, _ = strip_context(n=20, n_poisons=2)
    StripDetector(n_perturbations=3, replace_fraction=0.25, chunk_size=20).score(context)
    copies = victim.calls[0]
    assert len(copies) == 60
    n_changed = 0
    for i, text in enumerate(context.train.texts):
        words = text.split()
        for copy in copies[3 * i : 3 * i + 3]:
            copy_words = copy.split()
            assert len(copy_words) == len(words)
            changed = sum(a != b for a, b in zip(words, copy_words, strict=True))
            # 0.25 of 8 words: 2 positions are replaced, and a donor word may equal the old one.
            assert changed <= 2
            n_changed += changed
    # 120 replacements, of which about 1 in 21 (the vocabulary size) keeps the old word.
    assert n_changed >= 100


def test_strip_deterministic_per_seed():
    first, first_victim, _ = strip_context(seed=1)
    second, second_victim, _ = strip_context(seed=1)
    detector = StripDetector()
    np.testing.assert_array_equal(detector.score(first), detector.score(second))
    assert first_victim.calls == second_victim.calls


def test_strip_seed_changes_copies():
    context, victim, _ = strip_context(seed=1, n=20, n_poisons=2)
    other = make_context(context.train, victim, seed=2)
    detector = StripDetector(chunk_size=20)
    detector.score(context)
    detector.score(other)
    assert victim.calls[0] != victim.calls[1]


def test_strip_rejects_single_input():
    context = make_context(make_dataset(["good movie"], [1]), TriggerStubVictim())
    with pytest.raises(ValueError, match="at least two training inputs"):
        StripDetector().score(context)


def test_strip_empty_text_keeps_its_copies_empty():
    context, victim, _ = strip_context(n=5, n_poisons=1)
    texts = context.train.texts
    texts[2] = ""
    context = make_context(make_dataset(texts, context.train.labels), victim)
    scores = StripDetector(n_perturbations=2).score(context)
    assert victim.calls[-1][4:6] == ["", ""]
    assert np.all(np.isfinite(scores))


def test_strip_rejects_wrong_probability_shape():
    class ShortVictim:
        def predict_proba(self, texts):
            return np.full((len(texts) - 1, 2), 0.5)

    texts, labels, _ = synthetic_texts(n=4, n_poisons=1)
    context = make_context(make_dataset(texts, labels), ShortVictim())
    with pytest.raises(ValueError, match="predict_proba returned shape"):
        StripDetector().score(context)


@pytest.mark.parametrize(
    "params",
    [
        {"n_perturbations": 0},
        {"replace_fraction": 0.0},
        {"replace_fraction": 1.5},
        {"chunk_size": 0},
    ],
)
def test_strip_rejects_invalid_parameters(params):
    with pytest.raises(ValueError):
        StripDetector(**params)


# -- all three through the registry ---------------------------------------------------------

BLIND_BASELINES = ("spectral-signature", "activation-clustering", "strip")


class SyntheticVictim(FixedRepresentationVictim, TriggerStubVictim):
    """Stub victim with both fixed representations and trigger-driven predictions."""

    def __init__(self, representations: np.ndarray):
        FixedRepresentationVictim.__init__(self, representations)
        TriggerStubVictim.__init__(self)


@pytest.mark.parametrize("name", BLIND_BASELINES)
def test_registered_blind_baseline_detects(name):
    representations, labels, _ = synthetic_representations()
    texts, _, _ = synthetic_texts(n=len(labels))
    context = make_context(make_dataset(texts, labels.tolist()), SyntheticVictim(representations))
    detector = DETECTORS.get(name)()
    assert detector.track == "blind"
    result = detector.detect(context, name)
    assert result.scores.shape == (context.n_train,)
    assert np.all(np.isfinite(result.scores))
    assert result.flagged.shape == (context.n_train,)
    assert result.flagged.dtype == bool


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """A randomly initialised 1-layer BERT with hidden size 32 and a local vocabulary."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from benchmark.models.encoder import EncoderClassifier

    folder = tmp_path_factory.mktemp("tiny-bert")
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = special + VOCABULARY + [TRIGGER] + "classify sentiment of review".split()
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(vocab_file))
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
    )
    model = BertForSequenceClassification(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return EncoderClassifier(
        str(folder), n_labels=2, definition="Classify the sentiment of the review.", max_length=32
    )


def test_tiny_encoder_vocabulary_loaded(tiny_encoder):
    ids = tiny_encoder.tokenizer("good movie")["input_ids"]
    assert tiny_encoder.tokenizer.unk_token_id not in ids


@pytest.mark.parametrize("name", BLIND_BASELINES)
def test_blind_baseline_on_tiny_encoder(tiny_encoder, name):
    texts, labels, _ = synthetic_texts(n=40, n_poisons=2)
    context = make_context(make_dataset(texts, labels), tiny_encoder)
    result = DETECTORS.get(name)().detect(context, name)
    assert result.scores.shape == (40,)
    assert np.all(np.isfinite(result.scores))
    assert result.flagged.shape == (40,)
