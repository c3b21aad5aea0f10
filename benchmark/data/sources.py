"""Data set sources: a local folder first, the Hugging Face hub second."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from benchmark.data.dataset import Example, TextDataset
from benchmark.data.loaders import SENTIMENT_DEFINITION, SENTIMENT_LABELS, load_glue_tsv
from benchmark.errors import DataNotFoundError

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "POISONBENCH_DATA_DIR"
SST2_HUB_ID = "stanfordnlp/sst2"


def resolve_data_dir(data_dir: str | Path | None) -> Path | None:
    """Return ``data_dir``, else ``$POISONBENCH_DATA_DIR``, else None."""
    if data_dir is not None:
        return Path(data_dir)
    from_env = os.environ.get(DATA_DIR_ENV)
    return Path(from_env) if from_env else None


def load_sst2(data_dir: str | Path | None) -> tuple[TextDataset, TextDataset]:
    """Load SST-2 (train, test) from ``DATA_DIR/sst2/{train,test}.tsv`` or from the hub.

    The local folder wins when given. Without one, the hub data set ``stanfordnlp/sst2`` is
    tried through ``datasets``; its labelled validation split stands in for the test split,
    whose labels the hub does not publish.
    """
    folder = resolve_data_dir(data_dir)
    if folder is not None:
        train_path = folder / "sst2" / "train.tsv"
        test_path = folder / "sst2" / "test.tsv"
        missing = [str(p) for p in (train_path, test_path) if not p.is_file()]
        if missing:
            raise DataNotFoundError(
                f"SST-2 not found: missing {', '.join(missing)}. Pass --data-dir DIR "
                f"(or set {DATA_DIR_ENV}) with sst2/train.tsv and sst2/test.tsv in the GLUE "
                "layout, or omit it to download stanfordnlp/sst2 from the Hugging Face hub."
            )
        logger.info("Loading SST-2 from %s", folder / "sst2")
        return load_glue_tsv(train_path, "sst2-train"), load_glue_tsv(test_path, "sst2-test")
    return _load_sst2_from_hub()


def _load_sst2_from_hub() -> tuple[TextDataset, TextDataset]:
    hint = (
        f"SST-2 not found: no data folder was given (--data-dir DIR or {DATA_DIR_ENV} with "
        f"sst2/train.tsv and sst2/test.tsv) and the Hugging Face hub data set {SST2_HUB_ID} "
        "could not be loaded"
    )
    try:
        import datasets
    except ImportError:
        raise DataNotFoundError(f"{hint}: the 'datasets' package is not installed.") from None
    try:
        loaded = datasets.load_dataset(SST2_HUB_ID)
    except Exception as error:  # offline, hub down or no such data set: all the same to a user
        raise DataNotFoundError(f"{hint} ({type(error).__name__}: {error}).") from None

    def convert(split: str, name: str) -> TextDataset:
        examples = tuple(
            Example(uid=f"{name}:{row['idx']}", text=row["sentence"].strip(), label=row["label"])
            for row in loaded[split]
        )
        return TextDataset(
            name, examples, SENTIMENT_LABELS, SENTIMENT_DEFINITION, source=SST2_HUB_ID
        )

    return convert("train", "sst2-train"), convert("validation", "sst2-test")
