"""The in-memory data model: labelled text examples with an instruction."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Example:
    """One labelled text example.

    ``uid`` is unique within its data set and survives poisoning and subsampling, so
    results can always be traced back to a line of the source file.
    """

    uid: str
    text: str
    label: int


@dataclass(frozen=True)
class TextDataset:
    """A classification data set in instruction form.

    ``definition`` is the task instruction placed before every input (the
    Natural-Instructions "Definition" field); ``label_names[i]`` is the verbalizer of label i.
    """

    name: str
    examples: tuple[Example, ...]
    label_names: tuple[str, ...]
    definition: str
    source: str = ""
    metadata: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        n_labels = len(self.label_names)
        for example in self.examples:
            if not 0 <= example.label < n_labels:
                raise ValueError(
                    f"example {example.uid} of {self.name} has label {example.label}, "
                    f"outside 0..{n_labels - 1}"
                )

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    @property
    def texts(self) -> list[str]:
        return [example.text for example in self.examples]

    @property
    def labels(self) -> list[int]:
        return [example.label for example in self.examples]

    def with_examples(self, examples: Sequence[Example]) -> TextDataset:
        return replace(self, examples=tuple(examples))

    def sample(self, n: int, seed: int) -> TextDataset:
        """Return ``n`` examples drawn without replacement, in a seed-determined order."""
        if n >= len(self.examples):
            return self
        rng = random.Random(seed)
        indices = sorted(rng.sample(range(len(self.examples)), n))
        return self.with_examples([self.examples[i] for i in indices])

    def fingerprint(self) -> str:
        """Return a SHA-256 hex digest of the examples, the labels and the definition."""
        digest = hashlib.sha256()
        digest.update(self.definition.encode())
        digest.update("\x1f".join(self.label_names).encode())
        for example in self.examples:
            digest.update(f"{example.uid}\x1f{example.label}\x1f{example.text}\x1e".encode())
        return digest.hexdigest()
