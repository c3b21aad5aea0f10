"""EK-FAC influence of training examples on query sets, computed with kronfluence."""

from benchmark.influence.engine import InfluenceConfig, InfluenceEngine, QuerySet
from benchmark.influence.task import ClassificationTask

__all__ = ["ClassificationTask", "InfluenceConfig", "InfluenceEngine", "QuerySet"]
