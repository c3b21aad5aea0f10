"""Stage outputs of an experiment and their encodings for the stage cache.

Each ``encode_*`` function turns a stage output into what a :class:`~benchmark.runner.cache.Codec`
writes (JSON values, or a dict of tensors and plain values for ``torch.save``), and each
``decode_*`` function rebuilds the output from what the codec read.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attacks.base import PoisonedDataset, PoisonRecord
from benchmark.context import QuerySetInfo
from benchmark.data import TextDataset
from benchmark.data.dataset import Example
from benchmark.data.sources import resolve_data_dir
from benchmark.influence import QuerySet
from benchmark.models import TrainingHistory
from detectors.base import DetectionResult


@dataclass(frozen=True)
class PoisonStage:
    """Output of the data and attack stages.

    ``test`` is the (sampled) test split; ``triggered_texts`` are its inputs whose label is
    not the target, carrying the trigger, for the attack success rate.
    """

    poisoned: PoisonedDataset
    test: TextDataset
    triggered_texts: tuple[str, ...]
    n_train: int


@dataclass
class TrainedModel:
    """Output of the fine-tuning stage: the training history, and the model or its weights.

    ``victim`` is set when this process trained the model. ``state_dict`` is set instead when
    the weights came from the cache, until the victim is rebuilt from them.
    """

    history: TrainingHistory
    victim: Any = None
    state_dict: dict[str, Any] | None = None


@dataclass(frozen=True)
class StoredQuerySet:
    """One query set with its category info; ``info`` is None for the triggered set.

    ``n_changed`` counts the queries that a transform changed (None for untransformed sets).
    """

    query_set: QuerySet
    info: QuerySetInfo | None
    n_changed: int | None


def data_fingerprint(data_dir: str | Path | None) -> str:
    """Return a SHA-256 digest of ``sst2/train.tsv`` and ``sst2/test.tsv`` in the data folder.

    Without a folder the data come from the Hugging Face hub, whose content this cannot
    check, so the digest is a fixed marker. A missing file hashes as missing; the data
    stage then fails with the loader's own error.
    """
    folder = resolve_data_dir(data_dir)
    if folder is None:
        return "hub:stanfordnlp/sst2"
    digest = hashlib.sha256()
    for name in ("train.tsv", "test.tsv"):
        path = folder / "sst2" / name
        digest.update(name.encode())
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
    return digest.hexdigest()


def mask_digest(mask: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(mask, dtype=bool).tobytes()).hexdigest()


# -- data sets ----------------------------------------------------------------------------
def encode_dataset(dataset: TextDataset) -> dict[str, Any]:
    return {
        "name": dataset.name,
        "examples": [[e.uid, e.text, e.label] for e in dataset.examples],
        "label_names": list(dataset.label_names),
        "definition": dataset.definition,
        "source": dataset.source,
        "metadata": dict(dataset.metadata),
    }


def decode_dataset(raw: dict[str, Any]) -> TextDataset:
    return TextDataset(
        name=raw["name"],
        examples=tuple(Example(uid, text, label) for uid, text, label in raw["examples"]),
        label_names=tuple(raw["label_names"]),
        definition=raw["definition"],
        source=raw["source"],
        metadata=dict(raw["metadata"]),
    )


def encode_poison_stage(stage: PoisonStage) -> dict[str, Any]:
    poisoned = stage.poisoned
    return {
        "train": encode_dataset(poisoned.dataset),
        "poison_mask": poisoned.poison_mask.astype(bool).tolist(),
        "records": [asdict(record) for record in poisoned.records],
        "attack": poisoned.attack,
        "trigger": poisoned.trigger,
        "target_label": poisoned.target_label,
        "test": encode_dataset(stage.test),
        "triggered_texts": list(stage.triggered_texts),
        "n_train": stage.n_train,
    }


def decode_poison_stage(raw: dict[str, Any]) -> PoisonStage:
    poisoned = PoisonedDataset(
        dataset=decode_dataset(raw["train"]),
        poison_mask=np.array(raw["poison_mask"], dtype=bool),
        records=tuple(PoisonRecord(**record) for record in raw["records"]),
        attack=raw["attack"],
        trigger=raw["trigger"],
        target_label=raw["target_label"],
    )
    return PoisonStage(
        poisoned, decode_dataset(raw["test"]), tuple(raw["triggered_texts"]), raw["n_train"]
    )


# -- fine-tuned model ---------------------------------------------------------------------
def encode_trained_model(trained: TrainedModel) -> dict[str, Any]:
    import torch

    state = trained.state_dict if trained.victim is None else trained.victim.state_dict()
    history = trained.history
    return {
        "state_dict": state,
        "epoch_losses": torch.from_numpy(np.ascontiguousarray(history.epoch_losses)),
        "seconds": float(history.seconds),
        "mean_loss_per_epoch": [float(loss) for loss in history.mean_loss_per_epoch],
    }


def decode_trained_model(raw: dict[str, Any]) -> TrainedModel:
    history = TrainingHistory(
        epoch_losses=raw["epoch_losses"].numpy(),
        seconds=float(raw["seconds"]),
        mean_loss_per_epoch=list(raw["mean_loss_per_epoch"]),
    )
    return TrainedModel(history=history, state_dict=raw["state_dict"])


# -- query sets ---------------------------------------------------------------------------
def encode_query_set(stored: StoredQuerySet) -> dict[str, Any]:
    info = stored.info
    return {
        "name": stored.query_set.name,
        "texts": list(stored.query_set.texts),
        "labels": list(stored.query_set.labels),
        "info": None if info is None else [info.name, info.category, info.transform],
        "n_changed": stored.n_changed,
    }


def decode_query_set(raw: dict[str, Any]) -> StoredQuerySet:
    info = None if raw["info"] is None else QuerySetInfo(*raw["info"])
    query_set = QuerySet(raw["name"], tuple(raw["texts"]), tuple(raw["labels"]))
    return StoredQuerySet(query_set, info, raw["n_changed"])


# -- detector outputs ---------------------------------------------------------------------
def encode_detection(result: DetectionResult) -> dict[str, Any]:
    import torch

    return {
        "detector": result.detector,
        "track": result.track,
        "scores": torch.from_numpy(np.asarray(result.scores, dtype=np.float64).copy()),
        "flagged": torch.from_numpy(np.asarray(result.flagged, dtype=bool).copy()),
        "seconds": float(result.seconds),
    }


def decode_detection(raw: dict[str, Any]) -> DetectionResult:
    return DetectionResult(
        detector=raw["detector"],
        track=raw["track"],
        scores=raw["scores"].numpy(),
        flagged=raw["flagged"].numpy().astype(bool),
        seconds=float(raw["seconds"]),
    )
