"""Build the victim that fits a model spec: encoder classifier, causal LM or seq2seq LM.

In a plain process every victim trains in PyTorch on one device (CUDA when available for
the generative victims). Under ``accelerate launch`` with several processes they train with
DDP through accelerate; see :mod:`benchmark.models.training`.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from benchmark.models.encoder import EncoderClassifier
from benchmark.models.generative import (
    CausalLMClassifier,
    Seq2SeqClassifier,
    _GenerativeClassifier,
)
from benchmark.models.spec import resolve_model_path

FAMILIES = ("encoder", "causal", "seq2seq")

PRESET_FAMILIES = {
    "minilm": "encoder",
    "tiny-bert": "encoder",
    "tiny-causal": "causal",
    "tiny-t5": "seq2seq",
}

# Decoder-only model types whose checkpoints may list an architecture that does not end in
# "ForCausalLM" (GPT-2's is "GPT2LMHeadModel"), or no architecture at all.
DECODER_MODEL_TYPES = frozenset(
    {
        "bloom",
        "falcon",
        "gemma",
        "gemma2",
        "gpt2",
        "gpt_bigcode",
        "gpt_neo",
        "gpt_neox",
        "gptj",
        "llama",
        "mistral",
        "mixtral",
        "olmo",
        "olmo2",
        "opt",
        "phi",
        "phi3",
        "qwen2",
        "qwen3",
        "smollm3",
        "stablelm",
    }
)


def family_from_config(config) -> str:
    """Return the victim family that a transformers ``PretrainedConfig`` describes.

    ``is_encoder_decoder`` means "seq2seq"; an architecture ending in ``ForCausalLM`` or a
    model type in ``DECODER_MODEL_TYPES`` means "causal"; anything else is "encoder".
    """
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    architectures = getattr(config, "architectures", None) or []
    if any(name.endswith("ForCausalLM") for name in architectures):
        return "causal"
    if getattr(config, "model_type", None) in DECODER_MODEL_TYPES:
        return "causal"
    return "encoder"


def detect_family(spec: str) -> str:
    """Return the victim family of a preset name, a local model folder or a hub id.

    Presets have a fixed family. For anything else the model's ``config.json`` is read,
    which downloads it for a hub id that is not cached yet.
    """
    if spec in PRESET_FAMILIES:
        return PRESET_FAMILIES[spec]
    from transformers import AutoConfig

    return family_from_config(AutoConfig.from_pretrained(resolve_model_path(spec)))


def changed_generative_options(options: dict[str, Any]) -> dict[str, Any]:
    """Return the ``options`` that differ from the generative victims' defaults.

    Names that the generative victims do not take count as changed.
    """
    parameters = inspect.signature(_GenerativeClassifier.__init__).parameters
    return {
        name: value
        for name, value in options.items()
        if name not in parameters
        or parameters[name].kind is not inspect.Parameter.KEYWORD_ONLY
        or parameters[name].default is inspect.Parameter.empty
        or value != parameters[name].default
    }


def build_victim(
    spec: str,
    n_labels: int,
    definition: str,
    label_names: Sequence[str],
    max_length: int = 64,
    seed: int = 0,
    family: str | None = None,
    **options,
):
    """Build an untrained victim for ``spec``, of ``family`` or the family it detects.

    ``spec`` is a preset ("minilm", "tiny-bert", "tiny-causal", "tiny-t5"), a local model
    folder or a hub id: ``google/t5-small-lm-adapt`` and any causal-LM id work, but need
    network access the first time. ``options`` go to the generative victims (``template``,
    ``verbalizers``, ``lora``, ``lora_rank``, ``lora_alpha``, ``lora_dropout``,
    ``lora_target_modules``). Encoder victims take none, but accept options that equal the
    generative victims' defaults, so one set of options serves every family.

    Returns an :class:`EncoderClassifier`, :class:`CausalLMClassifier` or
    :class:`Seq2SeqClassifier`.

    Raises:
        ValueError: on an unknown family, a label-name count other than ``n_labels``, or
            options other than the defaults passed to an encoder victim.
    """
    if len(label_names) != n_labels:
        raise ValueError(
            f"{len(label_names)} label names {list(label_names)} for {n_labels} labels"
        )
    if family is None:
        family = detect_family(spec)
    if family not in FAMILIES:
        raise ValueError(f"unknown victim family {family!r}; choose one of {FAMILIES}")

    if family == "encoder":
        changed = changed_generative_options(options)
        if changed:
            listed = ", ".join(f"{name}={value!r}" for name, value in changed.items())
            raise ValueError(
                f"model {spec!r} is an encoder victim, which takes no options, but got "
                f"{listed}; remove them or choose a causal or seq2seq model"
            )
        return EncoderClassifier(spec, n_labels, definition, max_length=max_length, seed=seed)

    victim_class = CausalLMClassifier if family == "causal" else Seq2SeqClassifier
    return victim_class(
        spec,
        n_labels,
        definition,
        max_length=max_length,
        seed=seed,
        label_names=label_names,
        **options,
    )
