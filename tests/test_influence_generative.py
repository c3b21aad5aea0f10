"""kronfluence tasks for a tiny Llama and a tiny T5 tuned on real SST-2 instruction examples.

Both models are built locally from configs and use the WordPiece tokenizer of the packaged
MiniLM, so nothing is downloaded.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch

from benchmark.data import load_sst2
from benchmark.influence.generative import (
    IGNORE_INDEX,
    CausalLMTask,
    PaddingCollator,
    Seq2SeqTask,
    build_causal_lm_example,
    build_seq2seq_example,
    linear_module_names,
)

INSTRUCTION = "Classify the sentiment of the following text as positive or negative.\n\n"
ANSWERS = {0: " negative", 1: " positive"}
MAX_LENGTH = 64
N_TRAIN = 16
N_QUERY = 4


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


def _prompt(text: str) -> str:
    return INSTRUCTION + text + "\nAnswer:"


def _load_tokenizer():
    from transformers import AutoTokenizer

    from benchmark.models.spec import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path("minilm"))


@pytest.fixture(scope="module")
def tokenizer():
    return _load_tokenizer()


@pytest.fixture(scope="module")
def sst2_rows(shared_data):
    train, _ = load_sst2(shared_data)
    return list(zip(train.texts[:N_TRAIN], train.labels[:N_TRAIN]))


@pytest.fixture(scope="module")
def verbalizer_ids(tokenizer):
    ids = [tokenizer(ANSWERS[label], add_special_tokens=False)["input_ids"] for label in (0, 1)]
    assert all(len(token_ids) == 1 for token_ids in ids), ids
    return [token_ids[0] for token_ids in ids]


@pytest.fixture(scope="module")
def causal_examples(tokenizer, sst2_rows):
    return [
        build_causal_lm_example(tokenizer, _prompt(text), ANSWERS[label], MAX_LENGTH)
        for text, label in sst2_rows
    ]


@pytest.fixture(scope="module")
def seq2seq_examples(tokenizer, sst2_rows):
    return [
        build_seq2seq_example(tokenizer, _prompt(text), ANSWERS[label], MAX_LENGTH)
        for text, label in sst2_rows
    ]


def _train(model, examples, collator, steps: int = 6, batch_size: int = 4) -> None:
    """Tune the model on the answer tokens with a few AdamW steps."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    for step in range(steps):
        start = (step * batch_size) % len(examples)
        batch = collator(examples[start : start + batch_size])
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


@pytest.fixture(scope="module")
def llama(tokenizer, causal_examples):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    _train(model, causal_examples, PaddingCollator(tokenizer.pad_token_id))
    return model


@pytest.fixture(scope="module")
def t5(tokenizer, seq2seq_examples):
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=tokenizer.vocab_size,
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_heads=2,
        decoder_start_token_id=tokenizer.pad_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config)
    _train(model, seq2seq_examples, PaddingCollator(tokenizer.pad_token_id))
    return model


def _analyzer(model, task, collator, output_dir):
    """Return a CPU kronfluence analyzer. ``prepare_model`` wraps the model's modules in place."""
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.utils.dataset import DataLoaderKwargs

    analyzer = Analyzer(
        analysis_name="analysis",
        model=prepare_model(model, task),
        task=task,
        cpu=True,
        disable_tqdm=True,
        output_dir=str(output_dir),
        log_level=logging.WARNING,
    )
    analyzer.set_dataloader_kwargs(DataLoaderKwargs(collate_fn=collator, num_workers=0))
    return analyzer


def _fit_factors(analyzer, train) -> None:
    """Fit EK-FAC factors named "ekfac".

    Factors do not depend on the measurement, so analyzers with the same output folder and
    other tasks that track the same modules can score with them.
    """
    from kronfluence.arguments import FactorArguments

    analyzer.fit_all_factors(
        factors_name="ekfac",
        dataset=train,
        per_device_batch_size=4,
        factor_args=FactorArguments(strategy="ekfac"),
        overwrite_output_dir=True,
    )


def _pairwise_scores(analyzer, train, queries, name) -> np.ndarray:
    """Return kronfluence's (n_query, n_train) scores with the factors of :func:`_fit_factors`."""
    from kronfluence.arguments import ScoreArguments

    analyzer.compute_pairwise_scores(
        scores_name=name,
        factors_name="ekfac",
        query_dataset=queries,
        train_dataset=train,
        per_device_query_batch_size=len(queries),
        per_device_train_batch_size=8,
        score_args=ScoreArguments(damping_factor=1e-3),
        overwrite_output_dir=True,
    )
    return analyzer.load_pairwise_scores(name)["all_modules"].to(torch.float64).numpy()


@pytest.fixture(scope="module")
def causal_factors_dir(llama, tokenizer, causal_examples, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("causal")
    task = CausalLMTask(tracked_modules=linear_module_names(llama))
    collator = PaddingCollator(tokenizer.pad_token_id)
    _fit_factors(_analyzer(copy.deepcopy(llama), task, collator, output_dir), causal_examples)
    return output_dir


# -- examples and batches -------------------------------------------------------------------
def test_causal_example_masks_prompt(tokenizer, sst2_rows, causal_examples):
    for (text, label), example in zip(sst2_rows, causal_examples):
        prompt_ids = tokenizer(_prompt(text), add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(ANSWERS[label], add_special_tokens=False)["input_ids"]
        n_prompt = len(prompt_ids)

        assert example["input_ids"] == prompt_ids + answer_ids
        assert example["attention_mask"] == [1] * len(example["input_ids"])
        assert example["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
        assert example["labels"][n_prompt:] == answer_ids


def test_causal_example_truncates_prompt_only(tokenizer, sst2_rows):
    text, label = sst2_rows[0]
    example = build_causal_lm_example(tokenizer, _prompt(text), ANSWERS[label], max_length=10)
    answer_ids = tokenizer(ANSWERS[label], add_special_tokens=False)["input_ids"]

    assert len(example["input_ids"]) == 10
    assert example["input_ids"][-len(answer_ids) :] == answer_ids
    assert example["labels"] == [IGNORE_INDEX] * (10 - len(answer_ids)) + answer_ids


def test_answer_longer_than_max_length_rejected(tokenizer):
    with pytest.raises(ValueError, match="raise max_length"):
        build_causal_lm_example(tokenizer, "prompt", " a very long answer", max_length=2)
    with pytest.raises(ValueError, match="raise max_length"):
        build_seq2seq_example(tokenizer, "prompt", " a very long answer", max_length=2)


def test_examples_end_answer_with_eos(sst2_rows):
    tokenizer = _load_tokenizer()
    tokenizer.eos_token = tokenizer.sep_token
    text, label = sst2_rows[0]
    answer_ids = tokenizer(ANSWERS[label], add_special_tokens=False)["input_ids"]

    causal = build_causal_lm_example(tokenizer, _prompt(text), ANSWERS[label], MAX_LENGTH)
    assert causal["input_ids"][-1] == tokenizer.eos_token_id
    labelled = [token for token in causal["labels"] if token != IGNORE_INDEX]
    assert labelled == answer_ids + [tokenizer.eos_token_id]

    seq2seq = build_seq2seq_example(tokenizer, _prompt(text), ANSWERS[label], MAX_LENGTH)
    assert seq2seq["labels"] == answer_ids + [tokenizer.eos_token_id]


def test_seq2seq_example_fields(tokenizer, sst2_rows, seq2seq_examples):
    for (text, label), example in zip(sst2_rows, seq2seq_examples):
        expected_input = tokenizer(_prompt(text), truncation=True, max_length=MAX_LENGTH)
        answer_ids = tokenizer(ANSWERS[label], add_special_tokens=False)["input_ids"]

        assert example["input_ids"] == expected_input["input_ids"]
        assert example["labels"] == answer_ids
        assert example["decoder_attention_mask"] == [1] * len(answer_ids)


def test_collator_pads_with_ignore_index(tokenizer, sst2_rows):
    collator = PaddingCollator(tokenizer.pad_token_id)
    (short_text, _), (long_text, _) = sorted(sst2_rows[:2], key=lambda row: len(row[0]))
    short = build_causal_lm_example(tokenizer, _prompt(short_text), " positive", MAX_LENGTH)
    long = build_causal_lm_example(tokenizer, _prompt(long_text), " positive", MAX_LENGTH)
    batch = collator([short, long])
    n_short = len(short["input_ids"])

    assert batch["input_ids"].shape == (2, len(long["input_ids"]))
    assert (batch["input_ids"][0, n_short:] == tokenizer.pad_token_id).all()
    assert (batch["attention_mask"][0, n_short:] == 0).all()
    assert (batch["labels"][0, n_short:] == IGNORE_INDEX).all()
    assert batch["labels"][0, :n_short].tolist() == short["labels"]

    decoder_short = build_seq2seq_example(tokenizer, _prompt(short_text), " positive", MAX_LENGTH)
    decoder_long = build_seq2seq_example(
        tokenizer, _prompt(short_text), " mostly positive", MAX_LENGTH
    )
    batch = collator([decoder_short, decoder_long])
    assert batch["labels"][0].tolist() == decoder_short["labels"] + [IGNORE_INDEX]
    assert batch["decoder_attention_mask"][0].tolist() == [1, 0]

    scalars = collator([{"labels": 1}, {"labels": 0}])
    assert scalars["labels"].tolist() == [1, 0]


def test_linear_module_names_skip_lm_head(llama):
    names = linear_module_names(llama)
    assert "lm_head" not in names
    assert "model.layers.0.self_attn.q_proj" in names
    assert "lm_head" in linear_module_names(llama, include_output_embeddings=True)


# -- losses and measurements ----------------------------------------------------------------
def test_causal_loss_sums_answer_tokens(llama, tokenizer, causal_examples):
    batch = PaddingCollator(tokenizer.pad_token_id)(causal_examples[:4])
    task = CausalLMTask()
    n_answer_tokens = int((batch["labels"] != IGNORE_INDEX).sum())
    with torch.no_grad():
        summed = task.compute_train_loss(batch, llama)
        mean = llama(**batch).loss  # the model shifts the labels itself

    torch.testing.assert_close(summed, mean * n_answer_tokens, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(task.compute_measurement(batch, llama), summed)


def test_sampled_loss_has_gradient(llama, tokenizer, causal_examples):
    batch = PaddingCollator(tokenizer.pad_token_id)(causal_examples[:4])
    torch.manual_seed(0)
    loss = CausalLMTask().compute_train_loss(batch, llama, sample=True)
    loss.backward()
    gradient = llama.model.layers[0].mlp.down_proj.weight.grad
    llama.zero_grad(set_to_none=True)

    assert torch.isfinite(loss)
    assert gradient is not None
    assert gradient.abs().sum() > 0


def test_seq2seq_loss_sums_answer_tokens(t5, tokenizer, seq2seq_examples):
    batch = PaddingCollator(tokenizer.pad_token_id)(seq2seq_examples[:4])
    task = Seq2SeqTask(t5)
    n_answer_tokens = int((batch["labels"] != IGNORE_INDEX).sum())
    with torch.no_grad():
        summed = task.compute_train_loss(batch, t5)
        mean = t5(**batch).loss

    torch.testing.assert_close(summed, mean * n_answer_tokens, rtol=1e-5, atol=1e-5)


def test_causal_margin_matches_logits(llama, tokenizer, sst2_rows, verbalizer_ids):
    negative_id, positive_id = verbalizer_ids
    text, _ = sst2_rows[0]
    collator = PaddingCollator(tokenizer.pad_token_id)
    task = CausalLMTask(measurement="margin", verbalizer_token_ids=verbalizer_ids)
    positive = collator(
        [build_causal_lm_example(tokenizer, _prompt(text), " positive", MAX_LENGTH)]
    )
    negative = collator(
        [build_causal_lm_example(tokenizer, _prompt(text), " negative", MAX_LENGTH)]
    )

    with torch.no_grad():
        logits = llama(input_ids=positive["input_ids"]).logits[0, -2]  # predicts the answer
        expected = -(logits[positive_id] - logits[negative_id])
        measured = task.compute_measurement(positive, llama)
        flipped = task.compute_measurement(negative, llama)

    torch.testing.assert_close(measured, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(flipped, -measured, rtol=1e-5, atol=1e-5)


def test_margin_needs_verbalizer_tokens(llama, tokenizer, causal_examples):
    with pytest.raises(ValueError, match="verbalizer_token_ids"):
        CausalLMTask(measurement="margin")
    task = CausalLMTask(measurement="margin", verbalizer_token_ids=[1, 2])
    batch = PaddingCollator(tokenizer.pad_token_id)(causal_examples[:2])
    with pytest.raises(ValueError, match="not in verbalizer_token_ids"):
        task.compute_measurement(batch, llama)


def test_seq2seq_mask_per_module(t5, tokenizer, seq2seq_examples):
    """Each tracked module gets the mask of the sequence that it actually processes."""
    batch = PaddingCollator(tokenizer.pad_token_id)(seq2seq_examples[:4])
    encoder_length = batch["input_ids"].shape[1]
    decoder_length = batch["labels"].shape[1]
    assert encoder_length != decoder_length

    task = Seq2SeqTask(t5)
    masks = task.get_attention_mask(batch)
    linear_names = {
        name for name, module in t5.named_modules() if isinstance(module, torch.nn.Linear)
    }
    assert set(masks) == linear_names
    assert any(name.startswith("encoder.") for name in masks)
    assert any(name.startswith("decoder.") for name in masks)
    assert masks["decoder.block.0.layer.1.EncDecAttention.k"] is batch["attention_mask"]
    assert masks["decoder.block.0.layer.1.EncDecAttention.q"].shape == (4, decoder_length)

    input_lengths = {}

    def record_input_length(name):
        def hook(module, inputs, output):
            input_lengths[name] = inputs[0].shape[1]

        return hook

    handles = [
        module.register_forward_hook(record_input_length(name))
        for name, module in t5.named_modules()
        if name in linear_names
    ]
    try:
        with torch.no_grad():
            task.compute_train_loss(batch, t5)
    finally:
        for handle in handles:
            handle.remove()
    mismatched = {
        name: (input_lengths[name], masks[name].shape[1])
        for name in linear_names
        if input_lengths[name] != masks[name].shape[1]
    }
    assert not mismatched


# -- kronfluence scores ---------------------------------------------------------------------
def test_causal_pairwise_scores(llama, tokenizer, causal_examples, causal_factors_dir):
    collator = PaddingCollator(tokenizer.pad_token_id)
    task = CausalLMTask(tracked_modules=linear_module_names(llama))
    analyzer = _analyzer(copy.deepcopy(llama), task, collator, causal_factors_dir)
    scores = _pairwise_scores(analyzer, causal_examples, causal_examples[:N_QUERY], "loss")

    assert scores.shape == (N_QUERY, N_TRAIN)
    assert np.isfinite(scores).all()
    assert np.abs(scores).max() > 0
    # A query that is itself a training example scores g^T (G + damping I)^-1 g > 0 on it.
    assert (np.diag(scores[:, :N_QUERY]) > 0).all()


def test_causal_margin_pairwise_scores(
    llama, tokenizer, sst2_rows, causal_examples, verbalizer_ids, causal_factors_dir
):
    collator = PaddingCollator(tokenizer.pad_token_id)
    task = CausalLMTask("margin", linear_module_names(llama), verbalizer_ids)
    analyzer = _analyzer(copy.deepcopy(llama), task, collator, causal_factors_dir)
    flipped_queries = [
        build_causal_lm_example(tokenizer, _prompt(text), ANSWERS[1 - label], MAX_LENGTH)
        for text, label in sst2_rows[:N_QUERY]
    ]
    scores = _pairwise_scores(analyzer, causal_examples, causal_examples[:N_QUERY], "margin")
    flipped = _pairwise_scores(analyzer, causal_examples, flipped_queries, "margin_flipped")

    assert scores.shape == (N_QUERY, N_TRAIN)
    assert np.isfinite(scores).all()
    assert np.abs(scores).max() > 0
    # With two verbalizer tokens, the opposite answer negates the margin and its gradient.
    np.testing.assert_allclose(flipped, -scores, rtol=1e-3, atol=1e-4 * np.abs(scores).max())


def test_seq2seq_pairwise_scores(t5, tokenizer, seq2seq_examples, tmp_path):
    collator = PaddingCollator(tokenizer.pad_token_id)
    tracked = linear_module_names(t5)
    model = copy.deepcopy(t5)
    task = Seq2SeqTask(model, tracked_modules=tracked)
    queries = seq2seq_examples[:N_QUERY]

    analyzer = _analyzer(model, task, collator, tmp_path)
    _fit_factors(analyzer, seq2seq_examples)
    scores = _pairwise_scores(analyzer, seq2seq_examples, queries, "loss")
    assert scores.shape == (N_QUERY, N_TRAIN)
    assert np.isfinite(scores).all()
    assert np.abs(scores).max() > 0
    assert (np.diag(scores[:, :N_QUERY]) > 0).all()
    # The names were read from the wrapped model, where TrackedModule replaces nn.Linear.
    masks = task.get_attention_mask(collator(queries))
    assert set(tracked) <= set(masks)
    assert not any(name.endswith("original_module") for name in masks)
