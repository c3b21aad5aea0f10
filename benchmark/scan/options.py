"""Options of a scan; importing this module loads neither torch nor transformers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_SCAN_DETECTORS = (
    "loss",
    "loss-epochs",
    "spectral-signature",
    "activation-clustering",
    "strip",
    "transform-variance",
    "transform-voting",
    "transform-voting-majority",
)
"""Every blind detector except the random floor, and the transform-ensemble detectors."""


@dataclass(frozen=True)
class ScanOptions:
    """Settings of one scan; the flags of ``poisonbench scan`` map onto these fields.

    ``n_queries`` None draws 10% of the file (at most 100) as queries, or uses every
    example of ``queries_file``. ``tracked_modules`` empty computes influence on every
    ``nn.Linear`` of the victim. The training defaults are those of ``TrainingConfig``.
    """

    data_file: Path
    data_format: str = "auto"
    model: str = "minilm"
    detectors: tuple[str, ...] = DEFAULT_SCAN_DETECTORS
    queries_file: Path | None = None
    n_queries: int | None = None
    skip_bad_rows: bool = False
    seed: int = 0
    epochs: int = 3
    max_length: int = 64
    learning_rate: float = 1e-4
    tracked_modules: tuple[str, ...] = ()
    cache_dir: Path = Path(".")
