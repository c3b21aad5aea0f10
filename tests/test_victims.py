"""Generative victims (tiny Llama, tiny T5) and the victim factory, on real SST-2 examples.

The tiny presets are built locally from configs with the packaged MiniLM tokenizer, so
nothing is downloaded. That tokenizer lowercases and has no BOS or EOS of its own, so the
presets use ``[CLS]`` as BOS and ``[SEP]`` as EOS.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from benchmark.data import load_sst2
from benchmark.influence import IGNORE_INDEX, InfluenceConfig, InfluenceEngine, QuerySet
from benchmark.models import (
    CausalLMClassifier,
    EncoderClassifier,
    Seq2SeqClassifier,
    TrainingConfig,
    build_victim,
    detect_family,
    family_from_config,
    format_prompt,
)
from benchmark.models.tiny import tiny_model_dir

N_TRAIN = 48
N_TEST = 8
MAX_LENGTH = 48
EPOCHS = 3
TRAINING = TrainingConfig(
    epochs=EPOCHS, batch_size=16, learning_rate=5e-3, max_length=MAX_LENGTH, seed=0
)
DEFINITION = "Classify the sentiment of the following text as positive or negative."


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    """Run these tiny models on one intra-op thread, restoring the setting afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def sst2(shared_data):
    train, test = load_sst2(shared_data)
    return train.sample(N_TRAIN, seed=0), test.sample(N_TEST, seed=1)


def _victim(spec: str, train, **options):
    return build_victim(
        spec, 2, train.definition, train.label_names, max_length=MAX_LENGTH, **options
    )


def _fitted(spec: str, train):
    victim = _victim(spec, train)
    before = victim.example_losses(train.texts, train.labels)
    history = victim.fit(train.texts, train.labels, TRAINING)
    return victim, history, before


@pytest.fixture(scope="module")
def causal(sst2):
    return _fitted("tiny-causal", sst2[0])


@pytest.fixture(scope="module")
def seq2seq(sst2):
    return _fitted("tiny-t5", sst2[0])


@pytest.fixture(params=["causal", "seq2seq"])
def fitted(request):
    """Each trained generative victim in turn: (victim, history, losses before fit)."""
    return request.getfixturevalue(request.param)


# -- prompts --------------------------------------------------------------------------------
def test_natural_instructions_prompt_layout():
    prompt = format_prompt("natural-instructions", "Classify it.", "a great film")
    assert prompt == "Definition: Classify it.\n\nInput: a great film\nOutput:"
    assert format_prompt("natural-instructions", "", "a great film") == (
        "Input: a great film\nOutput:"
    )


def test_alpaca_prompt_layout():
    prompt = format_prompt("alpaca", "Classify it.", "a great film")
    assert prompt == "### Instruction:\nClassify it.\n\n### Input:\na great film\n\n### Response:"
    assert format_prompt("alpaca", "", "a great film") == (
        "### Input:\na great film\n\n### Response:"
    )


def test_unknown_template_rejected(sst2):
    with pytest.raises(ValueError, match="unknown prompt template 'chatml'"):
        _victim("tiny-causal", sst2[0], template="chatml")


def test_victim_prompt_uses_template(sst2):
    victim = _victim("tiny-causal", sst2[0], template="alpaca")
    assert victim.prompt("a great film") == format_prompt("alpaca", DEFINITION, "a great film")


@pytest.mark.parametrize("spec", ["tiny-causal", "tiny-t5"])
def test_long_input_cut_keeps_template(spec, sst2):
    victim = _victim(spec, sst2[0])
    text = " ".join(["remarkably"] * 200)
    prompt = victim.prompt(text)
    assert prompt.startswith(f"Definition: {DEFINITION}\n\nInput: remarkably")
    assert prompt.endswith("\nOutput:")
    for label in (0, 1):
        example = victim.make_dataset([text], [label])[0]
        assert len(example["input_ids"]) <= MAX_LENGTH


def test_definition_too_long_rejected(sst2):
    train = sst2[0]
    with pytest.raises(ValueError, match="raise max_length or shorten the definition"):
        build_victim("tiny-causal", 2, "word " * 60, train.label_names, max_length=MAX_LENGTH)


# -- examples and masking -------------------------------------------------------------------
def test_causal_labels_only_on_answer(sst2):
    train = sst2[0]
    victim = _victim("tiny-causal", train)
    tokenizer = victim.tokenizer
    texts, labels = train.texts[:4], train.labels[:4]
    dataset = victim.make_dataset(texts, labels)

    for text, label, example in zip(texts, labels, dataset):
        answer = victim.verbalizer_token_ids[label] + [tokenizer.eos_token_id]
        prompt_ids = tokenizer(victim.prompt(text), add_special_tokens=False)["input_ids"]
        n_prompt = 1 + len(prompt_ids)  # BOS and the prompt
        assert example["input_ids"] == [tokenizer.bos_token_id] + prompt_ids + answer
        assert example["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
        assert example["labels"][n_prompt:] == answer

    batch = victim.collator()(list(dataset))
    lengths = [len(example["input_ids"]) for example in dataset]
    assert len(set(lengths)) > 1, "pick texts of different lengths to test padding"
    for row, length in enumerate(lengths):
        assert (batch["labels"][row, length:] == IGNORE_INDEX).all()
        assert (batch["input_ids"][row, length:] == tokenizer.pad_token_id).all()
        assert (batch["attention_mask"][row, length:] == 0).all()
        assert (batch["attention_mask"][row, :length] == 1).all()


def test_seq2seq_labels_are_verbalizer(sst2):
    train = sst2[0]
    victim = _victim("tiny-t5", train, verbalizers=[" dreadful", " very good"])
    tokenizer = victim.tokenizer
    texts, labels = train.texts[:2], [0, 1]
    dataset = victim.make_dataset(texts, labels)

    for text, label, example in zip(texts, labels, dataset):
        answer = victim.verbalizer_token_ids[label] + [tokenizer.eos_token_id]
        assert example["labels"] == answer
        assert example["input_ids"] == tokenizer(victim.prompt(text))["input_ids"]

    batch = victim.collator()(list(dataset))
    short = len(dataset[0]["labels"])
    assert short < len(dataset[1]["labels"])
    assert (batch["labels"][0, short:] == IGNORE_INDEX).all()
    assert (batch["decoder_attention_mask"][0, short:] == 0).all()


def test_verbalizers_must_differ(sst2):
    with pytest.raises(ValueError, match="tokenize to the same tokens"):
        _victim("tiny-causal", sst2[0], verbalizers=[" Good", " good"])


# -- prediction -----------------------------------------------------------------------------
def _causal_hand_log_likelihood(victim, text: str, label: int) -> float:
    """Sum log p(answer token) over the verbalizer and EOS, from one unpadded forward pass."""
    tokenizer = victim.tokenizer
    prompt = [tokenizer.bos_token_id] + tokenizer(victim.prompt(text), add_special_tokens=False)[
        "input_ids"
    ]
    answer = victim.verbalizer_token_ids[label] + [tokenizer.eos_token_id]
    input_ids = torch.tensor([prompt + answer])
    with torch.no_grad():
        log_probs = torch.log_softmax(victim.model(input_ids=input_ids).logits[0], dim=-1)
    return sum(float(log_probs[len(prompt) - 1 + i, token]) for i, token in enumerate(answer))


def _seq2seq_hand_log_likelihood(victim, text: str, label: int) -> float:
    tokenizer = victim.tokenizer
    input_ids = torch.tensor([tokenizer(victim.prompt(text))["input_ids"]])
    answer = victim.verbalizer_token_ids[label] + [tokenizer.eos_token_id]
    start = victim.model.config.decoder_start_token_id
    decoder_input_ids = torch.tensor([[start] + answer[:-1]])
    with torch.no_grad():
        logits = victim.model(input_ids=input_ids, decoder_input_ids=decoder_input_ids).logits
    log_probs = torch.log_softmax(logits[0], dim=-1)
    return sum(float(log_probs[i, token]) for i, token in enumerate(answer))


@pytest.mark.parametrize(
    ("spec", "verbalizers", "hand_log_likelihood"),
    [
        ("tiny-causal", None, _causal_hand_log_likelihood),
        ("tiny-causal", [" dreadful", " very good"], _causal_hand_log_likelihood),
        ("tiny-t5", None, _seq2seq_hand_log_likelihood),
        ("tiny-t5", [" dreadful", " very good"], _seq2seq_hand_log_likelihood),
    ],
)
def test_predict_proba_matches_hand_scores(spec, verbalizers, hand_log_likelihood, sst2):
    train, test = sst2
    victim = _victim(spec, train, verbalizers=verbalizers, seed=3)
    texts = test.texts[:4]
    probabilities = victim.predict_proba(texts, batch_size=3)

    assert probabilities.shape == (4, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    hand = np.array(
        [[hand_log_likelihood(victim, text, label) for label in (0, 1)] for text in texts]
    )
    expected = np.exp(hand - np.logaddexp(hand[:, :1], hand[:, 1:]))
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)
    np.testing.assert_array_equal(victim.predict(texts), hand.argmax(axis=1))


def test_predict_proba_empty_input(sst2):
    victim = _victim("tiny-causal", sst2[0])
    assert victim.predict_proba([]).shape == (0, 2)


# -- training -------------------------------------------------------------------------------
def test_fit_records_and_lowers_loss(fitted, sst2):
    victim, history, before = fitted
    train = sst2[0]
    assert history.epoch_losses.shape == (EPOCHS, N_TRAIN)
    assert np.isfinite(history.epoch_losses).all()
    assert history.mean_loss_per_epoch[-1] < history.mean_loss_per_epoch[0]
    after = victim.example_losses(train.texts, train.labels)
    assert after.mean() < before.mean()


def test_example_losses_and_representations(fitted, sst2):
    victim, _, _ = fitted
    test = sst2[1]
    losses = victim.example_losses(test.texts, test.labels, batch_size=3)
    assert losses.shape == (N_TEST,)
    assert (losses > 0).all()
    # The loss of the labelled answer is minus its log-likelihood.
    log_likelihoods = victim.verbalizer_log_likelihoods(test.texts)
    labelled = log_likelihoods[np.arange(N_TEST), test.labels]
    np.testing.assert_allclose(losses, -labelled, rtol=1e-4)

    representations = victim.representations(test.texts, batch_size=3)
    assert representations.shape == (N_TEST, 32)
    assert np.isfinite(representations).all()


def test_state_dict_round_trip(fitted, sst2):
    victim, _, _ = fitted
    train, test = sst2
    fresh = build_victim(
        victim.model_spec, 2, train.definition, train.label_names, max_length=MAX_LENGTH, seed=5
    )
    fresh.load_state_dict(victim.state_dict())
    np.testing.assert_allclose(
        fresh.predict_proba(test.texts), victim.predict_proba(test.texts), atol=1e-6
    )


@pytest.mark.parametrize("spec", ["tiny-causal", "tiny-t5"])
def test_lora_trains_adapters_only(spec, sst2):
    train = sst2[0]
    victim = _victim(spec, train, lora=True, lora_rank=4)
    before = {name: tensor.clone() for name, tensor in victim.state_dict().items()}
    trainable = [name for name, p in victim.model.named_parameters() if p.requires_grad]
    assert trainable
    assert all(".lora_A." in name or ".lora_B." in name for name in trainable)

    config = TrainingConfig(epochs=1, batch_size=8, learning_rate=5e-3, max_length=MAX_LENGTH)
    victim.fit(train.texts[:16], train.labels[:16], config)
    after = victim.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    adapters = {name for name in before if ".lora_A." in name or ".lora_B." in name}
    assert changed
    assert changed <= adapters

    # A victim rebuilt with the same options loads the cached weights, as the runner does.
    fresh = _victim(spec, train, lora=True, lora_rank=4, seed=7)
    fresh.load_state_dict(after)
    texts = sst2[1].texts
    np.testing.assert_allclose(fresh.predict_proba(texts), victim.predict_proba(texts), atol=1e-6)


# -- factory --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "victim_class", "family"),
    [
        ("tiny-bert", EncoderClassifier, "encoder"),
        ("tiny-causal", CausalLMClassifier, "causal"),
        ("tiny-t5", Seq2SeqClassifier, "seq2seq"),
    ],
)
def test_factory_family_presets_and_folders(spec, victim_class, family, sst2, tmp_path):
    train = sst2[0]
    folder = tmp_path / f"saved-{family}"
    shutil.copytree(tiny_model_dir(spec), folder)
    assert detect_family(spec) == family
    assert detect_family(str(folder)) == family
    for model_spec in (spec, str(folder)):
        victim = build_victim(model_spec, 2, train.definition, train.label_names, max_length=32)
        assert isinstance(victim, victim_class)
        assert victim.family == family


def test_family_from_config_cases():
    from transformers import BertConfig, GPT2Config, PretrainedConfig, T5Config

    assert family_from_config(T5Config()) == "seq2seq"
    assert family_from_config(GPT2Config()) == "causal"
    assert family_from_config(PretrainedConfig(architectures=["FooForCausalLM"])) == "causal"
    assert family_from_config(BertConfig()) == "encoder"


def test_factory_rejects_bad_arguments(sst2):
    train = sst2[0]
    with pytest.raises(ValueError, match="takes no options, but got lora=True"):
        build_victim("tiny-bert", 2, train.definition, train.label_names, lora=True)
    with pytest.raises(ValueError, match="unknown victim family 'rnn'"):
        build_victim("tiny-bert", 2, train.definition, train.label_names, family="rnn")
    with pytest.raises(ValueError, match="3 label names"):
        build_victim("tiny-causal", 2, train.definition, ("a", "b", "c"))


# -- influence ------------------------------------------------------------------------------
def test_margin_needs_single_token_verbalizers(sst2):
    victim = _victim("tiny-causal", sst2[0], verbalizers=[" dreadful", " very good"])
    with pytest.raises(ValueError, match="single-token verbalizers"):
        victim.influence_task("margin")
    assert victim.influence_task("loss").verbalizer_token_ids is None


def test_lora_cross_attention_encoder_mask(sst2):
    train = sst2[0]
    victim = _victim("tiny-t5", train, lora=True, lora_rank=4)
    tracked = victim.default_tracked_modules()
    assert tracked
    assert all(".lora_A." in name or ".lora_B." in name for name in tracked)

    task = victim.influence_task("loss")
    batch = victim.collator()(list(victim.make_dataset(train.texts[:2], train.labels[:2])))
    masks = task.get_attention_mask(batch)
    cross = [name for name in tracked if ".EncDecAttention.v." in name]
    assert cross
    for name in cross:
        assert masks[name] is batch["attention_mask"]
    decoder_self = [name for name in tracked if "decoder" in name and ".SelfAttention." in name]
    assert decoder_self
    for name in decoder_self:
        assert masks[name].shape == batch["labels"].shape


@pytest.mark.parametrize(
    ("spec", "options"),
    [
        ("tiny-causal", {}),
        ("tiny-t5", {}),
        ("tiny-causal", {"lora": True, "lora_rank": 4}),
        ("tiny-t5", {"lora": True, "lora_rank": 4}),
    ],
)
def test_influence_scores_finite(spec, options, request, sst2, tmp_path):
    train, test = sst2
    if options:
        victim = _victim(spec, train, **options)
        config = TrainingConfig(epochs=1, batch_size=8, learning_rate=5e-3, max_length=MAX_LENGTH)
        victim.fit(train.texts, train.labels, config)
    else:
        victim = request.getfixturevalue("causal" if spec == "tiny-causal" else "seq2seq")[0]

    config = InfluenceConfig(factor_batch_size=8, train_batch_size=8, damping_factor=1e-3)
    engine = InfluenceEngine(victim, train.texts, train.labels, config, tmp_path)
    scores = engine.score(QuerySet("test", tuple(test.texts[:4]), tuple(test.labels[:4])))
    assert scores.shape == (N_TRAIN,)
    assert np.isfinite(scores).all()
    assert np.abs(scores).max() > 0
