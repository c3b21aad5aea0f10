"""Readers for the file layouts of public text-classification data.

Every reader validates row by row and raises :class:`InputError` naming the file and the
line number of the first bad row.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from benchmark.data.dataset import Example, TextDataset
from benchmark.errors import InputError

SENTIMENT_LABELS = ("negative", "positive")
SENTIMENT_DEFINITION = "Classify the sentiment of the following text as positive or negative."


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise InputError(f"{path}: file not found")


def load_glue_tsv(
    path: str | Path,
    name: str = "sst2",
    label_names: tuple[str, ...] = SENTIMENT_LABELS,
    definition: str = SENTIMENT_DEFINITION,
) -> TextDataset:
    """Read a GLUE-style TSV file with the header ``sentence<TAB>label``.

    Labels are integers ``0 .. len(label_names) - 1``.
    """
    path = Path(path)
    _check_file(path)
    examples = []
    with path.open(encoding="utf-8", newline="") as handle:
        header = handle.readline().rstrip("\r\n").split("\t")
        if header[:2] != ["sentence", "label"]:
            raise InputError(
                f"{path}:1: expected the header 'sentence<TAB>label', found {header!r}"
            )
        for line_number, line in enumerate(handle, start=2):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            if "\t" not in line:
                raise InputError(
                    f"{path}:{line_number}: missing tab between sentence and label; "
                    "each row must be 'sentence<TAB>label'"
                )
            text, label_field = line.rsplit("\t", 1)
            label = _parse_label(label_field, len(label_names), path, line_number)
            examples.append(Example(uid=f"{name}:{line_number}", text=text, label=label))
    if not examples:
        raise InputError(f"{path}: no examples after the header")
    return TextDataset(name, tuple(examples), label_names, definition, source=str(path))


def load_label_text(
    path: str | Path,
    name: str,
    label_names: tuple[str, ...],
    definition: str,
) -> TextDataset:
    """Read one example a line in the form ``LABEL TEXT`` (MR, CR, MPQA, Subj, TREC files)."""
    path = Path(path)
    _check_file(path)
    examples = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line_number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line:
                continue
            label_field, _, text = line.partition(" ")
            if not text.strip():
                raise InputError(f"{path}:{line_number}: expected 'LABEL TEXT', found {line!r}")
            label = _parse_label(label_field, len(label_names), path, line_number)
            examples.append(Example(uid=f"{name}:{line_number}", text=text.strip(), label=label))
    if not examples:
        raise InputError(f"{path}: no examples found")
    return TextDataset(name, tuple(examples), label_names, definition, source=str(path))


def load_natural_instructions(
    path: str | Path,
    name: str | None = None,
    label_names: tuple[str, ...] | None = None,
) -> TextDataset:
    """Read Natural-Instructions JSONL: ``{"id", "Definition", "Instance": {"input", "output"}}``.

    ``Definition`` may be a string or a list of strings (Super-NaturalInstructions). Outputs
    are mapped to labels through ``label_names``; when it is not given, the sorted set of
    distinct outputs is used.
    """
    path = Path(path)
    _check_file(path)
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                instance = record["Instance"]
                text = instance["input"]
                output = instance["output"]
            except json.JSONDecodeError as error:
                raise InputError(f"{path}:{line_number}: invalid JSON ({error.msg})") from None
            except (KeyError, TypeError) as error:
                raise InputError(
                    f"{path}:{line_number}: missing key {error} (expected "
                    '{"Definition": ..., "Instance": {"input": ..., "output": ...}})'
                ) from None
            if isinstance(output, list):
                output = output[0] if output else ""
            definition = record.get("Definition", "")
            if isinstance(definition, list):
                definition = " ".join(definition)
            uid = str(record.get("id", f"line{line_number}"))
            rows.append((line_number, uid, str(text), str(output).strip(), str(definition)))
    if not rows:
        raise InputError(f"{path}: no examples found")

    if label_names is None:
        label_names = tuple(sorted({row[3] for row in rows}))
    label_index = {label: i for i, label in enumerate(label_names)}
    examples = []
    for line_number, uid, text, output, _ in rows:
        if output not in label_index:
            raise InputError(
                f"{path}:{line_number}: output {output!r} is not one of {list(label_names)}"
            )
        examples.append(Example(uid=uid, text=text, label=label_index[output]))
    return TextDataset(
        name or path.stem, tuple(examples), label_names, rows[0][4], source=str(path)
    )


def load_csv(
    path: str | Path,
    name: str,
    label_names: tuple[str, ...],
    definition: str,
    text_column: str = "sentence",
    label_column: str = "label",
) -> TextDataset:
    """Read a CSV file with a header naming a text column and an integer label column."""
    path = Path(path)
    _check_file(path)
    examples = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {text_column, label_column} - set(reader.fieldnames or [])
        if missing:
            raise InputError(f"{path}:1: missing column(s) {sorted(missing)} in the header")
        for line_number, row in enumerate(reader, start=2):
            label = _parse_label(row[label_column], len(label_names), path, line_number)
            examples.append(
                Example(uid=f"{name}:{line_number}", text=row[text_column], label=label)
            )
    return TextDataset(name, tuple(examples), label_names, definition, source=str(path))


def _parse_label(field: str, n_labels: int, path: Path, line_number: int) -> int:
    field = field.strip()
    try:
        label = int(field)
    except ValueError:
        label = -1
    if not 0 <= label < n_labels:
        allowed = ", ".join(str(i) for i in range(n_labels))
        raise InputError(
            f"{path}:{line_number}: invalid label {field!r}; expected one of {allowed}"
        )
    return label
