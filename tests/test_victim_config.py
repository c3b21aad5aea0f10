"""The ``victim`` section of experiment configs: validation, cache keys and a tiny-causal run."""

from __future__ import annotations

from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from benchmark.data import load_sst2
from benchmark.errors import InputError
from benchmark.models import CausalLMClassifier, EncoderClassifier, build_victim
from benchmark.runner.cache import hash_inputs
from benchmark.runner.config import ExperimentConfig, VictimConfig, load_config
from benchmark.runner.experiment import Experiment
from benchmark.runner.pipeline import build_victim as build_configured_victim

N_TRAIN = 40
# A small run of the tiny Llama with the Alpaca template and LoRA: two blind detectors and
# one that reads influence, and one retraining for recovery.
TINY_CAUSAL_CONFIG = """
data:
  n_train: 40
  n_test: 16
attack:
  ratio: 0.1
model: tiny-causal
victim:
  template: alpaca
  lora: true
  lora_rank: 4
training:
  epochs: 1
  batch_size: 8
  learning_rate: 0.005
  max_length: 48
queries:
  n_queries: 4
  transforms: [prefix_negation]
detectors: [loss, random, transform-variance]
recovery_detectors: [loss]
"""


def write_config(tmp_path, text: str, name: str = "config.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def sst2_train(shared_data):
    train, _ = load_sst2(shared_data)
    return train.sample(N_TRAIN, seed=0)


@pytest.fixture(scope="module")
def tiny_causal_run(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("victim-config")
    config = load_config(
        write_config(folder, TINY_CAUSAL_CONFIG), {"data.data_dir": str(shared_data)}
    )
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        experiment = Experiment(config, folder / "cache")
        result = experiment.result()
    finally:
        torch.set_num_threads(previous_threads)
    return config, experiment, result


# -- loading and validation -------------------------------------------------------------------
def test_victim_section_loaded(tmp_path):
    config = load_config(write_config(tmp_path, TINY_CAUSAL_CONFIG))
    assert config.model == "tiny-causal"
    assert config.victim == VictimConfig(template="alpaca", lora=True, lora_rank=4)
    assert config.victim.changed_fields() == ["template", "lora", "lora_rank"]


def test_victim_defaults_without_section(tmp_path):
    config = load_config(write_config(tmp_path, "model: tiny-bert\n"))
    assert config.victim == VictimConfig()
    assert config.victim.changed_fields() == []


def test_victim_lists_and_strings_loaded(tmp_path):
    text = """
victim:
  verbalizers: [" bad", " good"]
  lora: true
  lora_alpha: 16
  lora_target_modules: all-linear
"""
    victim = load_config(write_config(tmp_path, text)).victim
    assert victim.verbalizers == (" bad", " good")
    assert victim.lora_alpha == 16.0
    assert victim.lora_target_modules == "all-linear"

    listed = load_config(
        write_config(tmp_path, "victim: {lora: true, lora_target_modules: [q_proj, v_proj]}\n")
    ).victim
    assert listed.lora_target_modules == ("q_proj", "v_proj")


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("{templat: alpaca}", "unknown key victim.templat"),
        ("{template: chatml}", "template must be one of"),
        ("{template: chatml}", "'chatml'"),
        ("{family: decoder}", "family must be one of"),
        ("{verbalizers: [' yes']}", "verbalizers must list one answer text per label"),
        ("{verbalizers: [' yes', '  ']}", "verbalizers must not be empty"),
        ("{lora: true, lora_rank: 0}", "lora_rank must be at least 1, got 0"),
        ("{lora: true, lora_dropout: 1.5}", "lora_dropout must lie in [0, 1), got 1.5"),
        ("{lora: true, lora_alpha: -2}", "lora_alpha must be positive"),
        ("{lora: true, lora_target_modules: []}", "lora_target_modules must name"),
        ("{lora_rank: 16}", "lora_rank is set but lora is false"),
        ("{lora: yes please}", "key victim.lora must be true or false"),
    ],
)
def test_invalid_victim_section_rejected(tmp_path, section, expected):
    path = write_config(tmp_path, f"model: tiny-causal\nvictim: {section}\n")
    with pytest.raises(InputError) as raised:
        load_config(path)
    message = str(raised.value)
    assert expected in message
    assert str(path) in message
    assert "victim" in message


# -- building the victim ----------------------------------------------------------------------
def test_encoder_rejects_lora(sst2_train):
    config = ExperimentConfig(model="tiny-bert", victim=VictimConfig(lora=True))
    with pytest.raises(InputError) as raised:
        build_configured_victim(config, sst2_train)
    message = str(raised.value)
    assert "victim.lora=True" in message
    assert "is an encoder victim, which takes no options, but got lora=True" in message


def test_encoder_rejects_template(sst2_train):
    config = ExperimentConfig(model="tiny-bert", victim=VictimConfig(template="alpaca"))
    with pytest.raises(InputError, match="template='alpaca'"):
        build_configured_victim(config, sst2_train)


def test_encoder_accepts_default_options(sst2_train):
    victim = build_configured_victim(ExperimentConfig(model="tiny-bert"), sst2_train)
    assert isinstance(victim, EncoderClassifier)
    # The factory takes the generative defaults as no options at all.
    direct = build_victim(
        "tiny-bert",
        2,
        sst2_train.definition,
        sst2_train.label_names,
        template="natural-instructions",
        verbalizers=None,
        lora=False,
        lora_rank=8,
        lora_alpha=None,
        lora_dropout=0.0,
        lora_target_modules=None,
    )
    assert isinstance(direct, EncoderClassifier)


def test_verbalizer_count_checked_at_build(sst2_train):
    config = ExperimentConfig(
        model="tiny-causal", victim=VictimConfig(verbalizers=(" a", " b", " c"))
    )
    with pytest.raises(InputError) as raised:
        build_configured_victim(config, sst2_train)
    message = str(raised.value)
    assert "victim.verbalizers=(' a', ' b', ' c')" in message
    assert "3 verbalizers" in message


def test_family_override_builds_causal(sst2_train):
    config = ExperimentConfig(
        model="tiny-causal",
        victim=VictimConfig(family="causal", verbalizers=(" bad", " good")),
        training=replace(ExperimentConfig().training, max_length=48),
    )
    victim = build_configured_victim(config, sst2_train)
    assert isinstance(victim, CausalLMClassifier)
    assert victim.verbalizers == [" bad", " good"]
    assert victim.template == "natural-instructions"


# -- cache keys -------------------------------------------------------------------------------
def test_model_key_follows_victim_options(tmp_path):
    base = ExperimentConfig(model="tiny-causal")
    variants = [
        base,
        replace(base, victim=VictimConfig(template="alpaca")),
        replace(base, victim=VictimConfig(lora=True)),
        replace(base, victim=VictimConfig(lora=True, lora_rank=4)),
    ]
    experiments = [Experiment(config, tmp_path) for config in variants]
    model_keys = [experiment.model_key for experiment in experiments]
    assert len(set(model_keys)) == len(variants)

    flagged = np.zeros(N_TRAIN, dtype=bool)
    flagged[:3] = True
    recovery_keys = [experiment.recovery_key(flagged) for experiment in experiments]
    assert len(set(recovery_keys)) == len(variants)


def test_default_victim_keeps_old_model_key(tmp_path):
    # Models cached before the victim section existed were keyed without it.
    config = ExperimentConfig(model="tiny-bert")
    experiment = Experiment(config, tmp_path)
    old_key = hash_inputs(
        "model",
        {
            "poisoned": experiment.poisoned_key,
            "model": config.model,
            "training": asdict(config.training),
        },
    )
    assert experiment.model_key == old_key


# -- a whole run ------------------------------------------------------------------------------
@pytest.mark.slow
def test_tiny_causal_alpaca_lora_run(tiny_causal_run):
    config, experiment, result = tiny_causal_run
    victim = experiment.victim()
    assert isinstance(victim, CausalLMClassifier)
    assert victim.template == "alpaca"
    assert victim.lora
    assert victim.prompt("a fine film").startswith("### Instruction:\n")
    assert victim.prompt("a fine film").endswith("### Input:\na fine film\n\n### Response:")
    lora_ranks = {
        module.weight.shape[0]
        for name, module in victim.model.named_modules()
        if name.endswith("lora_A.default")
    }
    assert lora_ranks == {4}

    assert result.config["victim"]["template"] == "alpaca"
    assert result.config["victim"]["lora"] is True
    assert result.poisoning["n_poisons"] == 4
    assert 0.0 <= result.poisoned_model.clean_accuracy <= 1.0
    assert result.poisoned_model.n_test == 16

    history = experiment.trained_model().history
    assert history.epoch_losses.shape == (1, N_TRAIN)
    assert np.all(np.isfinite(history.epoch_losses))
    assert np.all(history.epoch_losses > 0)

    rows = {row["detector"]: row for row in result.detectors}
    assert set(rows) == {"loss", "random", "transform-variance"}
    for name, row in rows.items():
        assert 0.0 <= row["auroc"] <= 1.0, name
    for name in rows:
        scores = experiment.detect(name).scores
        assert scores.shape == (N_TRAIN,)
        assert np.all(np.isfinite(scores))
    assert [row["detector"] for row in result.recovery] == ["loss"]
