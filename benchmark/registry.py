"""Name-to-class registries filled by decorators and by Python entry points.

Third-party packages add components by declaring an entry point in one of the groups
``poisonbench.attacks``, ``poisonbench.detectors`` or ``poisonbench.transforms``; the entry
point must resolve to a class that the registry can instantiate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of component classes of one kind (attacks, detectors, ...)."""

    def __init__(self, kind: str, entry_point_group: str) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._classes: dict[str, type[T]] = {}
        self._entry_points_loaded = False

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Return a class decorator that registers the class under ``name``."""

        def decorator(cls: type[T]) -> type[T]:
            if name in self._classes and self._classes[name] is not cls:
                raise ValueError(f"{self.kind} name {name!r} is already registered")
            self._classes[name] = cls
            return cls

        return decorator

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for entry_point in entry_points(group=self.entry_point_group):
            if entry_point.name in self._classes:
                logger.warning(
                    "Ignoring entry point %s in group %s: the name is already registered",
                    entry_point.name,
                    self.entry_point_group,
                )
                continue
            try:
                self._classes[entry_point.name] = entry_point.load()
            except Exception as error:  # a broken plug-in must not break the whole suite
                logger.error("Failed to load %s %r: %s", self.kind, entry_point.name, error)

    def get(self, name: str) -> type[T]:
        """Return the class registered under ``name``; raise ``KeyError`` listing the names."""
        self._load_entry_points()
        try:
            return self._classes[name]
        except KeyError:
            known = ", ".join(sorted(self._classes))
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._classes)

    def __contains__(self, name: str) -> bool:
        self._load_entry_points()
        return name in self._classes

    def __iter__(self) -> Iterator[tuple[str, type[T]]]:
        self._load_entry_points()
        return iter(sorted(self._classes.items()))
