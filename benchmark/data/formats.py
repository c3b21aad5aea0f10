"""Streaming readers for user fine-tuning files, with format detection and bad-row handling.

Four layouts are read line by line, so a large file is never held in memory as raw text:

* ``tsv``: GLUE style, a header naming the columns ``sentence`` and ``label``.
* ``csv``: a header naming the columns ``sentence`` and ``label``.
* ``ni-jsonl``: Natural-Instructions, ``{"Definition", "Instance": {"input", "output"}}``.
* ``alpaca-jsonl``: ``{"instruction", "input", "output"}``.

Labels are the distinct values of the label column (TSV, CSV) or of the outputs (JSONL). A
malformed row either raises :class:`InputError` naming the file and line, or, with
``skip_bad_rows``, is skipped, logged and returned in :attr:`LoadedData.bad_rows`.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm.auto import tqdm

from benchmark.data.dataset import Example, TextDataset
from benchmark.errors import InputError

logger = logging.getLogger(__name__)

FORMATS = ("tsv", "csv", "ni-jsonl", "alpaca-jsonl")
AUTO = "auto"
TEXT_COLUMN = "sentence"
LABEL_COLUMN = "label"
DEFAULT_DEFINITION = "Classify the following text."
"""Instruction placed before every input of TSV and CSV files, which carry none."""

MAX_LABELS = 100
"""Maximum number of distinct labels. More distinct outputs mean generative data, which the
classifier victim cannot model."""

MAX_LOGGED_BAD_ROWS = 20
PROGRESS_MIN_BYTES = 1 << 20
"""Files smaller than this (1 MiB) load without a progress bar."""

_EXTENSIONS = {".tsv": "tsv", ".csv": "csv"}
_JSON_EXTENSIONS = (".jsonl", ".json", ".ndjson")


@dataclass(frozen=True)
class BadRow:
    """A malformed row: the file, its 1-based line number and what is wrong with it."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass(frozen=True)
class _Row:
    line: int
    text: str
    label: str
    instruction: str
    source_id: str


@dataclass(frozen=True)
class LoadedData:
    """A file read into a data set, with where each example came from.

    ``lines[i]`` and ``source_ids[i]`` belong to ``dataset.examples[i]``; a source id is the
    record's ``id`` field (Natural-Instructions) and empty otherwise. ``n_rows`` counts the
    non-blank data rows read, including the malformed ones in ``bad_rows``.
    """

    dataset: TextDataset
    format: str
    path: str
    lines: tuple[int, ...]
    source_ids: tuple[str, ...]
    bad_rows: tuple[BadRow, ...]
    n_rows: int


def detect_format(path: str | Path) -> str:
    """Return the format of ``path`` from its extension, or from its first non-blank line.

    ``.tsv`` and ``.csv`` decide by extension. JSON lines (``.jsonl``, ``.json``, ``.ndjson``
    or content starting with ``{``) are Natural-Instructions when the first record has an
    ``Instance`` key and Alpaca when it has ``instruction`` and ``output``.
    """
    path = Path(path)
    _check_file(path)
    suffix = path.suffix.lower()
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]

    first_line = _first_non_blank_line(path)
    if suffix in _JSON_EXTENSIONS or first_line.lstrip().startswith("{"):
        try:
            record = json.loads(first_line)
        except json.JSONDecodeError as error:
            raise InputError(
                f"{path}: cannot detect the format: the first line is not valid JSON "
                f"({error.msg}); JSON files must contain one object a line (JSON Lines)"
            ) from None
        if not isinstance(record, dict):
            raise InputError(
                f"{path}: cannot detect the format: the first line is a JSON "
                f"{type(record).__name__}, not an object; JSON files must contain one object "
                "a line (JSON Lines)"
            )
        if "Instance" in record:
            return "ni-jsonl"
        if {"instruction", "output"} <= set(record):
            return "alpaca-jsonl"
        keys = sorted(record)
        raise InputError(
            f"{path}: cannot detect the JSONL layout from the first record's keys {keys}; "
            'expected "Instance" (Natural-Instructions) or "instruction" and "output" (Alpaca)'
        )
    header = first_line.rstrip("\r\n")
    if {TEXT_COLUMN, LABEL_COLUMN} <= set(header.split("\t")):
        return "tsv"
    if {TEXT_COLUMN, LABEL_COLUMN} <= set(next(csv.reader([header]), [])):
        return "csv"
    raise InputError(
        f"{path}: cannot detect the format from the extension {suffix or '(none)'} or the "
        f"first line; pass --format with one of {', '.join(FORMATS)}"
    )


def load_examples(
    path: str | Path,
    data_format: str = AUTO,
    skip_bad_rows: bool = False,
    label_names: tuple[str, ...] | None = None,
    progress: bool = True,
) -> LoadedData:
    """Read a fine-tuning file in any of :data:`FORMATS` into a :class:`TextDataset`.

    ``label_names`` fixes the label set (as for queries that must use the training labels),
    and a row with another label is malformed. Without it, the labels are the distinct
    values found, sorted numerically when every value is an integer. When every row has
    the same instruction (JSONL) it becomes the data set's definition. When instructions
    differ, each text becomes its instruction, a blank line and its input, and the
    definition is empty. Raises :class:`InputError` on the first malformed row unless
    ``skip_bad_rows`` is set, and when no example is left.
    """
    path = Path(path)
    _check_file(path)
    if data_format == AUTO:
        data_format = detect_format(path)
    if data_format not in FORMATS:
        raise InputError(f"unknown format {data_format!r}; use one of {AUTO}, {', '.join(FORMATS)}")
    readers = {
        "tsv": _read_tsv,
        "csv": _read_csv,
        "ni-jsonl": _read_ni_jsonl,
        "alpaca-jsonl": _read_alpaca_jsonl,
    }
    collector = _BadRowCollector(path, skip_bad_rows)
    labels = _LabelChecker(path, data_format, label_names)
    rows: list[_Row] = []
    n_rows = 0
    with _ProgressLines(path, progress) as lines:
        for item in readers[data_format](path, lines):
            n_rows += 1
            if not isinstance(item, BadRow):
                item = labels.check(item)
            if isinstance(item, BadRow):
                collector.add(item)
            else:
                rows.append(item)
    collector.finish()
    if not rows:
        raise InputError(f"{path}: no valid examples found")
    return _build(path, data_format, rows, collector.rows, n_rows, label_names)


# -- reading ------------------------------------------------------------------------------


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise InputError(f"{path}: file not found")


def _first_non_blank_line(path: Path) -> str:
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.strip():
                return line
    raise InputError(f"{path}: the file is empty")


class _ProgressLines:
    """Iterate over (line number, decoded line) of a file, with a byte progress bar.

    Lines that are not valid UTF-8 are yielded as None, so the reader can report them as
    malformed rows.
    """

    def __init__(self, path: Path, progress: bool):
        self.path = path
        size = path.stat().st_size
        self.bar = tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            desc=f"reading {path.name}",
            leave=False,
            disable=not progress or size < PROGRESS_MIN_BYTES or not sys.stderr.isatty(),
        )
        self.handle = None

    def __enter__(self) -> Iterator[tuple[int, str | None]]:
        self.handle = self.path.open("rb")
        return self._lines()

    def _lines(self) -> Iterator[tuple[int, str | None]]:
        for line_number, raw in enumerate(self.handle, start=1):
            self.bar.update(len(raw))
            try:
                yield line_number, raw.decode("utf-8")
            except UnicodeDecodeError:
                yield line_number, None

    def __exit__(self, *exc_info) -> None:
        self.bar.close()
        if self.handle is not None:
            self.handle.close()


def _invalid_utf8(path: Path, line_number: int) -> BadRow:
    return BadRow(str(path), line_number, "the line is not valid UTF-8")


def _header_columns(path: Path, columns: list[str], separator: str) -> tuple[int, int]:
    missing = [name for name in (TEXT_COLUMN, LABEL_COLUMN) if name not in columns]
    if missing:
        raise InputError(
            f"{path}:1: the header lacks the column(s) {', '.join(missing)}; expected a "
            f"header naming '{TEXT_COLUMN}' and '{LABEL_COLUMN}' separated by {separator}, "
            f"found {columns!r}"
        )
    return columns.index(TEXT_COLUMN), columns.index(LABEL_COLUMN)


def _text_label_row(path: Path, line_number: int, text: str, label: str) -> _Row | BadRow:
    if not text.strip():
        return BadRow(str(path), line_number, f"empty {TEXT_COLUMN}")
    if not label.strip():
        return BadRow(str(path), line_number, f"empty {LABEL_COLUMN}")
    return _Row(line_number, text, label.strip(), "", "")


def _read_tsv(path: Path, lines: Iterator[tuple[int, str | None]]) -> Iterator[_Row | BadRow]:
    header = next(lines, None)
    if header is None or header[1] is None:
        raise InputError(f"{path}:1: missing or unreadable header; expected 'sentence<TAB>label'")
    columns = header[1].rstrip("\r\n").split("\t")
    text_index, label_index = _header_columns(path, columns, "tabs")
    for line_number, line in lines:
        if line is None:
            yield _invalid_utf8(path, line_number)
            continue
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if len(columns) == 2:
            # Two columns, as in GLUE: a tab inside the sentence stays part of it.
            if "\t" not in line:
                yield BadRow(str(path), line_number, "missing tab between sentence and label")
                continue
            fields = line.rsplit("\t", 1)
            if text_index == 1:
                fields = line.split("\t", 1)
        else:
            fields = line.split("\t")
            if len(fields) != len(columns):
                yield BadRow(
                    str(path),
                    line_number,
                    f"expected {len(columns)} tab-separated fields, found {len(fields)}",
                )
                continue
        yield _text_label_row(path, line_number, fields[text_index], fields[label_index])


def _read_csv(path: Path, lines: Iterator[tuple[int, str | None]]) -> Iterator[_Row | BadRow]:
    # The csv module needs the text of every line, so undecodable lines are replaced by
    # empty ones here and reported after the record that contains them.
    undecodable: list[int] = []

    def decoded() -> Iterator[str]:
        for line_number, line in lines:
            if line is None:
                undecodable.append(line_number)
                yield "\n"
            else:
                yield line

    reader = csv.reader(decoded())
    try:
        columns = next(reader)
    except StopIteration:
        raise InputError(f"{path}:1: missing header; expected 'sentence,label'") from None
    text_index, label_index = _header_columns(path, columns, "commas")
    while True:
        start_line = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            if reader.line_num < start_line:
                # The reader consumed nothing, so asking again would fail the same way.
                raise InputError(f"{path}:{start_line}: invalid CSV ({error})") from None
            yield BadRow(str(path), reader.line_num, f"invalid CSV ({error})")
            continue
        if undecodable:
            for line_number in undecodable:
                yield _invalid_utf8(path, line_number)
            undecodable.clear()
            continue
        if not fields or all(not field.strip() for field in fields):
            continue
        if len(fields) != len(columns):
            yield BadRow(
                str(path),
                start_line,
                f"expected {len(columns)} comma-separated fields, found {len(fields)}",
            )
            continue
        yield _text_label_row(path, start_line, fields[text_index], fields[label_index])


def _json_records(
    path: Path, lines: Iterator[tuple[int, str | None]]
) -> Iterator[tuple[int, dict] | BadRow]:
    for line_number, line in lines:
        if line is None:
            yield _invalid_utf8(path, line_number)
            continue
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            yield BadRow(str(path), line_number, f"invalid JSON ({error.msg})")
            continue
        if not isinstance(record, dict):
            yield BadRow(
                str(path), line_number, f"expected a JSON object, found {type(record).__name__}"
            )
            continue
        yield line_number, record


def _read_ni_jsonl(path: Path, lines: Iterator[tuple[int, str | None]]) -> Iterator[_Row | BadRow]:
    for item in _json_records(path, lines):
        if isinstance(item, BadRow):
            yield item
            continue
        line_number, record = item
        instance = record.get("Instance")
        if not isinstance(instance, dict) or "input" not in instance or "output" not in instance:
            yield BadRow(
                str(path),
                line_number,
                'missing "Instance" with "input" and "output" (expected '
                '{"Definition": ..., "Instance": {"input": ..., "output": ...}})',
            )
            continue
        output = instance["output"]
        if isinstance(output, list):
            # Super-NaturalInstructions lists the accepted outputs; the first is the label.
            output = output[0] if output else ""
        definition = record.get("Definition", "")
        if isinstance(definition, list):
            definition = " ".join(str(part) for part in definition)
        text, label = instance["input"], output
        if not isinstance(text, str) or not isinstance(label, str):
            yield BadRow(str(path), line_number, '"input" and "output" must be strings')
            continue
        if not text.strip():
            yield BadRow(str(path), line_number, 'empty "input"')
            continue
        if not label.strip():
            yield BadRow(str(path), line_number, 'empty "output"')
            continue
        source_id = str(record.get("id", ""))
        yield _Row(line_number, text, label.strip(), str(definition), source_id)


def _read_alpaca_jsonl(
    path: Path, lines: Iterator[tuple[int, str | None]]
) -> Iterator[_Row | BadRow]:
    for item in _json_records(path, lines):
        if isinstance(item, BadRow):
            yield item
            continue
        line_number, record = item
        missing = [key for key in ("instruction", "output") if key not in record]
        if missing:
            yield BadRow(
                str(path),
                line_number,
                f"missing key(s) {', '.join(missing)} (expected "
                '{"instruction": ..., "input": ..., "output": ...})',
            )
            continue
        instruction = record["instruction"]
        text = record.get("input", "")
        label = record["output"]
        if not all(isinstance(value, str) for value in (instruction, text, label)):
            yield BadRow(
                str(path), line_number, '"instruction", "input" and "output" must be strings'
            )
            continue
        if not label.strip():
            yield BadRow(str(path), line_number, 'empty "output"')
            continue
        if not text.strip() and not instruction.strip():
            yield BadRow(str(path), line_number, 'empty "instruction" and "input"')
            continue
        yield _Row(line_number, text, label.strip(), instruction, "")


# -- checking and building ----------------------------------------------------------------


class _BadRowCollector:
    """Raise on the first bad row, or collect them and log at most the first 20."""

    def __init__(self, path: Path, skip: bool):
        self.path = path
        self.skip = skip
        self.rows: list[BadRow] = []

    def add(self, bad_row: BadRow) -> None:
        if not self.skip:
            raise InputError(
                f"{bad_row}; fix or remove the row, or pass --skip-bad-rows to skip malformed rows"
            )
        self.rows.append(bad_row)
        if len(self.rows) <= MAX_LOGGED_BAD_ROWS:
            logger.warning("Skipping malformed row %s", bad_row)

    def finish(self) -> None:
        hidden = len(self.rows) - MAX_LOGGED_BAD_ROWS
        if hidden > 0:
            logger.warning(
                "Skipped %d more malformed rows of %s without logging each (%d in all)",
                hidden,
                self.path,
                len(self.rows),
            )


def _is_integer(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True


class _LabelChecker:
    """Reject labels that break the file's label type or the fixed label set.

    In TSV and CSV files the first valid row decides whether labels are integers. Integer
    labels are normalised (``"01"`` becomes ``"1"``) so that files agree on label names.
    """

    def __init__(self, path: Path, data_format: str, label_names: tuple[str, ...] | None):
        self.path = path
        self.typed = data_format in ("tsv", "csv")
        self.label_names = label_names
        self.first_label: str | None = None

    def check(self, row: _Row) -> _Row | BadRow:
        label = row.label
        if self.typed:
            if self.first_label is None:
                self.first_label = label
            if _is_integer(self.first_label):
                if not _is_integer(label):
                    return BadRow(
                        str(self.path),
                        row.line,
                        f"invalid label {label!r}; expected an integer like the first row's "
                        f"label {self.first_label!r}",
                    )
                label = str(int(label))
        if self.label_names is not None and label not in self.label_names:
            return BadRow(
                str(self.path),
                row.line,
                f"label {label!r} is not one of the training labels {list(self.label_names)}",
            )
        return replace(row, label=label)


def _sorted_labels(values: set[str]) -> tuple[str, ...]:
    if all(_is_integer(value) for value in values):
        return tuple(sorted(values, key=int))
    return tuple(sorted(values))


def _build(
    path: Path,
    data_format: str,
    rows: list[_Row],
    bad_rows: list[BadRow],
    n_rows: int,
    label_names: tuple[str, ...] | None,
) -> LoadedData:
    if label_names is None:
        label_names = _sorted_labels({row.label for row in rows})
        if len(label_names) > MAX_LABELS:
            raise InputError(
                f"{path}: {len(label_names)} distinct labels (outputs) found, more than "
                f"{MAX_LABELS}; the scan fine-tunes a classifier, so each output must be one "
                "of a small set of labels"
            )
    label_index = {name: i for i, name in enumerate(label_names)}

    instructions = {row.instruction for row in rows}
    if data_format in ("tsv", "csv"):
        definition = DEFAULT_DEFINITION
    elif len(instructions) == 1:
        definition = rows[0].instruction
    else:
        definition = ""

    examples = []
    for row in rows:
        text = row.text
        if len(instructions) > 1:
            text = f"{row.instruction}\n\n{row.text}" if row.text.strip() else row.instruction
        elif not text.strip():
            # An Alpaca row without input under a shared instruction: the instruction is all
            # there is to classify.
            text = row.instruction
        examples.append(Example(f"{path.stem}:{row.line}", text, label_index[row.label]))
    dataset = TextDataset(path.stem, tuple(examples), label_names, definition, source=str(path))
    return LoadedData(
        dataset=dataset,
        format=data_format,
        path=str(path),
        lines=tuple(row.line for row in rows),
        source_ids=tuple(row.source_id for row in rows),
        bad_rows=tuple(bad_rows),
        n_rows=n_rows,
    )
