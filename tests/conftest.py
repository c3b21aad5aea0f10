"""Shared fixtures: the real data folder and small configurations."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """Return the folder with the real data sets (POISONBENCH_DATA_DIR or ../shared/data)."""
    folder = Path(os.environ.get("POISONBENCH_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
    if not (folder / "sst2" / "train.tsv").is_file():
        raise RuntimeError(
            f"real data sets not found under {folder}; set POISONBENCH_DATA_DIR to a folder "
            "holding sst2/train.tsv, sst2/test.tsv and imdb-ni/queries.jsonl"
        )
    return folder


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return data_dir()
