"""EK-FAC influence of training examples on query sets, computed with kronfluence."""

from benchmark.influence.engine import InfluenceConfig, InfluenceEngine, QuerySet
from benchmark.influence.exact import exact_influence, module_parameter_filter
from benchmark.influence.generative import (
    IGNORE_INDEX,
    CausalLMTask,
    PaddingCollator,
    Seq2SeqTask,
    build_causal_lm_example,
    build_seq2seq_example,
    linear_module_names,
)
from benchmark.influence.task import ClassificationTask

__all__ = [
    "IGNORE_INDEX",
    "CausalLMTask",
    "ClassificationTask",
    "InfluenceConfig",
    "InfluenceEngine",
    "PaddingCollator",
    "QuerySet",
    "Seq2SeqTask",
    "build_causal_lm_example",
    "build_seq2seq_example",
    "exact_influence",
    "linear_module_names",
    "module_parameter_filter",
]
