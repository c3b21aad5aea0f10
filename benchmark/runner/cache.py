"""An on-disk cache of stage outputs, keyed by a hash of each stage's inputs.

Every entry is one file, ``ROOT/STAGE/KEY.SUFFIX``. It is written to a temporary file in the
same folder and renamed into place (:func:`benchmark.atomic.write_atomic`), so a killed
process leaves at most a ``.KEY.SUFFIX.*.tmp`` file, which lookups never read. Entries are
read with ``torch.load(weights_only=True)``, ``numpy.load(allow_pickle=False)`` or
``json.loads``, which load only tensors, arrays and plain values, never arbitrary pickled
objects.

NOTE: keys cover the configuration and the upstream keys, not the code. After changing a
stage's code, raise :data:`CACHE_FORMAT` or delete the cache folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.atomic import write_atomic

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
"""Version of the entry layouts; part of every key, so a new layout never reads an old one."""

TEMPORARY_SUFFIX = ".tmp"


@dataclass(frozen=True)
class Codec:
    """Writer and reader of one kind of entry, stored in files ending in ``suffix``."""

    suffix: str
    save: Callable[[Path, Any], None]
    load: Callable[[Path], Any]


def _save_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, allow_nan=True), encoding="utf-8")


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _save_numpy(path: Path, value: np.ndarray) -> None:
    # An open handle keeps numpy from appending ".npy" to the temporary name.
    with path.open("wb") as handle:
        np.save(handle, np.asarray(value), allow_pickle=False)


def _load_numpy(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def _save_torch(path: Path, value: Any) -> None:
    import torch

    torch.save(value, path)


def _load_torch(path: Path) -> Any:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


JSON = Codec(".json", _save_json, _load_json)
NUMPY = Codec(".npy", _save_numpy, _load_numpy)
TORCH = Codec(".pt", _save_torch, _load_torch)
"""A dict of tensors, numbers, strings and lists of them (what ``weights_only`` accepts)."""


class CacheMissError(LookupError):
    """A read-only cache has no entry for the requested stage and key."""


@dataclass
class StageCounts:
    """Cache hits and computed entries of each stage, by stage name."""

    hits: dict[str, int] = field(default_factory=dict)
    computed: dict[str, int] = field(default_factory=dict)

    def add(self, other: StageCounts) -> None:
        for stage, count in other.hits.items():
            self.hits[stage] = self.hits.get(stage, 0) + count
        for stage, count in other.computed.items():
            self.computed[stage] = self.computed.get(stage, 0) + count

    @property
    def total_hits(self) -> int:
        return sum(self.hits.values())

    @property
    def total_computed(self) -> int:
        return sum(self.computed.values())


def hash_inputs(stage: str, inputs: dict[str, Any]) -> str:
    """Return the 20-hex-digit key of a stage's inputs (JSON-serialisable values)."""
    payload = json.dumps(
        {"format": CACHE_FORMAT, "stage": stage, "inputs": inputs}, sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


class StageCache:
    """Stage outputs under ``root``; counts hits and computed entries per stage.

    With ``read_only`` a missing entry raises :class:`CacheMissError` instead of being
    computed, and nothing is written.
    """

    def __init__(self, root: str | Path, read_only: bool = False):
        self.root = Path(root)
        self.read_only = read_only
        self.counts = StageCounts()

    def path(self, stage: str, key: str, codec: Codec) -> Path:
        return self.root / stage / f"{key}{codec.suffix}"

    def fetch(
        self,
        stage: str,
        key: str,
        codec: Codec,
        decode: Callable[[Any], Any] = lambda raw: raw,
    ) -> Any | None:
        """Return the decoded entry, or None when it is missing or unreadable.

        An unreadable entry (a file damaged outside this cache's writes) is logged and
        reported as missing, so the caller computes and overwrites it.
        """
        path = self.path(stage, key, codec)
        if not path.is_file():
            return None
        try:
            value = decode(codec.load(path))
        except Exception as error:  # any damage means "recompute", never "trust"
            logger.warning(
                "Cache entry %s is unreadable (%s: %s); recomputing it",
                path,
                type(error).__name__,
                error,
            )
            return None
        self.counts.hits[stage] = self.counts.hits.get(stage, 0) + 1
        logger.info("cache hit: stage %s, key %s", stage, key)
        return value

    def store(
        self,
        stage: str,
        key: str,
        codec: Codec,
        value: Any,
        encode: Callable[[Any], Any] = lambda value: value,
    ) -> None:
        """Write an entry atomically and count it as computed."""
        self.counts.computed[stage] = self.counts.computed.get(stage, 0) + 1
        if self.read_only:
            return
        path = self.path(stage, key, codec)
        encoded = encode(value)
        write_atomic(path, lambda temporary: codec.save(temporary, encoded))
        logger.info("cache store: stage %s, key %s", stage, key)

    def fetch_or_compute(
        self,
        stage: str,
        key: str,
        codec: Codec,
        compute: Callable[[], Any],
        encode: Callable[[Any], Any] = lambda value: value,
        decode: Callable[[Any], Any] = lambda raw: raw,
    ) -> Any:
        """Return the cached entry, or compute, store and return it."""
        value = self.fetch(stage, key, codec, decode)
        if value is not None:
            return value
        if self.read_only:
            raise CacheMissError(f"no cache entry for stage {stage}, key {key} in {self.root}")
        logger.info("cache miss: stage %s, key %s; computing", stage, key)
        value = compute()
        self.store(stage, key, codec, value, encode)
        return value

    def remove_stale_temporaries(self, max_age_seconds: float) -> int:
        """Delete temporary files older than ``max_age_seconds``; return how many.

        A younger temporary file may belong to a process that is still writing it (another
        job of the same sweep), so it is left alone.
        """
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - max_age_seconds
        removed = 0
        for path in self.root.glob(f"*/.*{TEMPORARY_SUFFIX}"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue  # its writer renamed or removed it meanwhile
        if removed:
            logger.info("Removed %d stale temporary files from %s", removed, self.root)
        return removed
