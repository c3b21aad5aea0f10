"""Files of a scan: scan.csv (every example), report.md and a self-contained report.html."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.atomic import write_atomic, write_text_atomic
from benchmark.scan.estimate import format_duration
from benchmark.scan.phrases import (
    MAX_ADJUSTED_P,
    MIN_SUSPECT_COUNT,
    Phrase,
    example_ngrams,
    stop_word_set,
)
from benchmark.scan.runner import ScanResult

N_TOP_SUSPECTS = 20
N_PHRASES_SHOWN = 10
MAX_TEXT_CHARS = 300
MAX_BAD_ROWS_LISTED = 1000
NO_STRONG_PHRASE = "No strongly over-represented phrase"

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1, h2 { font-weight: 600; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
tr.strong td { background: #fde8e8; }
code { background: #f4f4f4; padding: 0 0.2em; }
"""


@dataclass(frozen=True)
class _Table:
    headers: list[str]
    rows: list[list[str]]
    numeric: tuple[int, ...] = ()
    highlighted: tuple[int, ...] = ()


@dataclass(frozen=True)
class _Section:
    """A report section. Paragraphs are plain text in which `backticks` mark code."""

    title: str
    paragraphs: list[str]
    tables: list[_Table]
    as_list: bool = False


def write_scan_outputs(result: ScanResult, output_dir: str | Path) -> list[Path]:
    """Write scan.csv, report.md and report.html into ``output_dir``, each atomically."""
    output_dir = Path(output_dir)
    csv_path = output_dir / "scan.csv"
    frame = scan_frame(result)
    write_atomic(csv_path, lambda temporary: frame.to_csv(temporary, index=False))
    sections = _sections(result)
    markdown_path = output_dir / "report.md"
    write_text_atomic(markdown_path, _markdown(result, sections))
    html_path = output_dir / "report.html"
    write_text_atomic(html_path, _html(result, sections))
    return [csv_path, markdown_path, html_path]


def scan_frame(result: ScanResult) -> pd.DataFrame:
    """Return one row per training example, in file order, with every detector's columns."""
    dataset = result.data.dataset
    columns: dict[str, object] = {
        "uid": [example.uid for example in dataset.examples],
        "line": list(result.data.lines),
        "source_id": list(result.data.source_ids),
        "text": dataset.texts,
        "label": [dataset.label_names[label] for label in dataset.labels],
        "consensus_score": result.consensus.score,
        "consensus_rank": result.consensus.rank,
        "suspect": result.suspects.astype(int),
    }
    for name, detection in result.detections.items():
        columns[f"{name}_score"] = detection.scores
        columns[f"{name}_rank"] = result.consensus.ranks[name]
        columns[f"{name}_flagged"] = detection.flagged.astype(int)
    return pd.DataFrame(columns)


def top_suspect_order(result: ScanResult) -> np.ndarray:
    """Return example indices by the number of flagging detectors, then consensus rank."""
    n_flags = np.sum([d.flagged for d in result.detections.values()], axis=0)
    return np.lexsort((result.consensus.rank, -n_flags))


# -- sections shared by both formats ----------------------------------------------------------


def _sections(result: ScanResult) -> list[_Section]:
    bad_rows = _bad_row_lines(result)
    return [
        _Section("Data", _data_paragraphs(result), [_label_table(result)]),
        _Section("Victim and run time", _run_paragraphs(result), [_detector_table(result)]),
        _Section("Top suspects", _suspect_paragraphs(result), [_suspect_table(result)]),
        _Section("Candidate trigger phrases", _phrase_paragraphs(result), _phrase_tables(result)),
        _Section("Malformed rows skipped", bad_rows or ["None."], [], as_list=bool(bad_rows)),
        _Section("Method", _method_paragraphs(), []),
    ]


def _data_paragraphs(result: ScanResult) -> list[str]:
    data = result.data
    dataset = data.dataset
    paragraphs = [
        f"File `{data.path}`, read as {data.format}: {data.n_rows} data rows, "
        f"{len(dataset)} examples scanned, {len(data.bad_rows)} malformed rows skipped.",
        f"Instruction placed before every input: "
        f"{_quote(dataset.definition) if dataset.definition else '(none)'}.",
        f"Queries: {result.queries.description}.",
    ]
    if result.queries.bad_rows:
        paragraphs.append(
            f"{len(result.queries.bad_rows)} malformed rows of the queries file were skipped."
        )
    return paragraphs


def _label_table(result: ScanResult) -> _Table:
    rows = [[label, str(count)] for label, count in result.label_counts().items()]
    return _Table(["label", "examples"], rows, numeric=(1,))


def _run_paragraphs(result: ScanResult) -> list[str]:
    options = result.options
    losses = ", ".join(f"{loss:.4f}" for loss in result.mean_loss_per_epoch)
    stages = ", ".join(
        f"{name} {format_duration(seconds)}" for name, seconds in result.stage_seconds.items()
    )
    return [
        f"Victim `{options.model}` ({result.victim_family} family) fine-tuned for "
        f"{options.epochs} epochs (max length "
        f"{options.max_length} tokens, learning rate {options.learning_rate:g}, seed "
        f"{options.seed}); mean training loss per epoch: {losses}.",
        f"Run time {format_duration(result.total_seconds)} ({stages}). Before fine-tuning, "
        f"the estimate was {format_duration(result.estimate.total_seconds)}, from "
        f"{result.estimate.seconds_per_example * 1000:.0f} ms per example of one timed "
        "training step.",
    ]


def _detector_table(result: ScanResult) -> _Table:
    rows = [
        [name, d.track, str(int(d.flagged.sum())), f"{d.seconds:.1f}"]
        for name, d in result.detections.items()
    ]
    return _Table(["detector", "track", "flagged", "seconds"], rows, numeric=(2, 3))


def _suspect_paragraphs(result: ScanResult) -> list[str]:
    n = len(result.data.dataset)
    return [
        f"The {min(N_TOP_SUSPECTS, n)} examples flagged by the most detectors, ties broken by "
        f"consensus rank (1 = most suspicious of {n}). All examples, with every detector's "
        "score, rank and flag, are in scan.csv."
    ]


def _suspect_table(result: ScanResult) -> _Table:
    return _example_table(result, top_suspect_order(result)[:N_TOP_SUSPECTS])


def _example_table(result: ScanResult, indices: np.ndarray) -> _Table:
    dataset = result.data.dataset
    names = list(result.detections)
    phrases = strong_phrases_by_example(result)
    rows = []
    for index in indices:
        flagging = [name for name in names if result.detections[name].flagged[index]]
        best = min(names, key=lambda name: result.consensus.ranks[name][index])
        flagged_by = f"{len(flagging)} of {len(names)}"
        if flagging:
            flagged_by += ": " + ", ".join(flagging)
        rows.append(
            [
                str(result.data.lines[index]),
                dataset.label_names[dataset.labels[index]],
                flagged_by,
                str(result.consensus.rank[index]),
                f"{result.consensus.ranks[best][index]} ({best})",
                ", ".join(phrases[index]),
                _shorten(dataset.examples[index].text),
            ]
        )
    headers = [
        "line",
        "label",
        "flagged by",
        "consensus rank",
        "best detector rank",
        "strong phrases",
        "text",
    ]
    return _Table(headers, rows, numeric=(0, 3))


def strong_phrases_by_example(result: ScanResult) -> list[list[str]]:
    """Return, for each example, the strongly over-represented phrases that it contains."""
    strong = [phrase.text for phrase in result.strong_phrases]
    if not strong:
        return [[] for _ in result.data.dataset.examples]
    stop_words = stop_word_set()
    matches = []
    for text in result.data.dataset.texts:
        grams = example_ngrams(text, stop_words)
        matches.append([phrase for phrase in strong if phrase in grams])
    return matches


def _phrase_paragraphs(result: ScanResult) -> list[str]:
    strong = result.strong_phrases
    paragraphs = [
        f"Suspects: {result.suspect_rule}. Word n-grams (n = 1 to 3) found in at least "
        f"{MIN_SUSPECT_COUNT} suspects are tested against the other examples; "
        f"{len(result.phrases)} were tested. A phrase is strongly over-represented when its "
        f"Bonferroni-adjusted one-sided Fisher p-value is below {MAX_ADJUSTED_P:g}.",
    ]
    if strong:
        listed = ", ".join(_quote(phrase.text) for phrase in strong[:N_PHRASES_SHOWN])
        n_with = sum(1 for found in strong_phrases_by_example(result) if found)
        paragraphs.append(
            f"Strongly over-represented: {listed}. {n_with} examples contain at least one of "
            f"them; the second table lists up to {N_TOP_SUSPECTS} of them by consensus rank."
        )
    else:
        paragraphs.append(
            f"{NO_STRONG_PHRASE}: no tested n-gram passed the threshold."
            if result.phrases
            else f"{NO_STRONG_PHRASE}: no n-gram occurs in {MIN_SUSPECT_COUNT} or more suspects."
        )
    return paragraphs


def _phrase_tables(result: ScanResult) -> list[_Table]:
    shown = result.phrases[:N_PHRASES_SHOWN]
    if not shown:
        return []
    tables = [_phrase_table(shown)]
    if result.strong_phrases:
        with_phrase = [i for i, found in enumerate(strong_phrases_by_example(result)) if found]
        by_rank = sorted(with_phrase, key=lambda i: result.consensus.rank[i])
        tables.append(_example_table(result, np.array(by_rank[:N_TOP_SUSPECTS], dtype=int)))
    return tables


def _phrase_table(shown: list[Phrase]) -> _Table:
    rows = [
        [
            phrase.text,
            f"{phrase.n_suspects_with} of {phrase.n_suspects}",
            f"{phrase.n_rest_with} of {phrase.n_rest}",
            f"{phrase.z:.2f}",
            _format_p(phrase.fisher_p),
            _format_p(phrase.adjusted_p),
            "yes" if phrase.strong else "no",
        ]
        for phrase in shown
    ]
    highlighted = tuple(i for i, phrase in enumerate(shown) if phrase.strong)
    return _Table(
        ["phrase", "in suspects", "in the rest", "z", "Fisher p", "adjusted p", "strong"],
        rows,
        numeric=(3, 4, 5),
        highlighted=highlighted,
    )


def _bad_row_lines(result: ScanResult) -> list[str]:
    bad_rows = list(result.data.bad_rows) + list(result.queries.bad_rows)
    listed = [f"`{bad_row}`" for bad_row in bad_rows[:MAX_BAD_ROWS_LISTED]]
    if len(bad_rows) > MAX_BAD_ROWS_LISTED:
        listed.append(f"... and {len(bad_rows) - MAX_BAD_ROWS_LISTED} more.")
    return listed


def _method_paragraphs() -> list[str]:
    return [
        "Consensus rank: each detector ranks the examples by its suspicion score (rank 1 "
        "is the highest score); its rank fraction is (rank - 1) / (n - 1), with tied scores "
        "sharing their mean rank. The consensus score is the mean rank fraction over the "
        "detectors, and the consensus rank orders examples by it, lowest first.",
        "Candidate phrases: texts are lower-cased and split on whitespace and punctuation. "
        "Each example counts once per n-gram. N-grams made only of stop words (spaCy's "
        "English list) or one-character tokens are dropped, and so is an n-gram that a "
        "longer tested n-gram matches in both counts. z is the log-odds ratio with an "
        'informative Dirichlet prior (Monroe, Colaresi and Quinn, 2008, "Fightin\' Words"), '
        "with the whole file as the prior, divided by its standard deviation.",
        "Flags and phrases are evidence for a manual review, not proof of poisoning: "
        "detectors also flag mislabelled, unusual or hard examples.",
    ]


# -- markdown -----------------------------------------------------------------------------


def _markdown(result: ScanResult, sections: list[_Section]) -> str:
    title = _inline_markdown(f"poisonbench scan of {Path(result.data.path).name}")
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        for paragraph in section.paragraphs:
            text = _inline_markdown(paragraph)
            lines += [f"- {text}"] if section.as_list else [text, ""]
        if section.as_list:
            lines.append("")
        for table in section.tables:
            lines += _markdown_table(table) + [""]
    return "\n".join(lines)


def _inline_markdown(text: str) -> str:
    """Escape HTML outside `code` spans, so user text never renders as markup."""
    pieces = text.split("`")
    if len(pieces) % 2 == 0:
        return html.escape(text, quote=False)
    return "`".join(
        piece if i % 2 else html.escape(piece, quote=False) for i, piece in enumerate(pieces)
    )


def _markdown_table(table: _Table) -> list[str]:
    def cell(value: str) -> str:
        value = html.escape(" ".join(value.split()), quote=False)
        return value.replace("|", "\\|").replace("`", "\\`")

    alignments = ["---:" if i in table.numeric else "---" for i in range(len(table.headers))]
    lines = ["| " + " | ".join(table.headers) + " |", "| " + " | ".join(alignments) + " |"]
    for row in table.rows:
        lines.append("| " + " | ".join(cell(value) for value in row) + " |")
    return lines


# -- html ---------------------------------------------------------------------------------


def _html(result: ScanResult, sections: list[_Section]) -> str:
    title = f"poisonbench scan of {Path(result.data.path).name}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.as_list:
            parts.append("<ul>")
            parts += [f"<li>{_inline_html(paragraph)}</li>" for paragraph in section.paragraphs]
            parts.append("</ul>")
        else:
            parts += [f"<p>{_inline_html(paragraph)}</p>" for paragraph in section.paragraphs]
        for table in section.tables:
            parts.append(_html_table(table))
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _inline_html(text: str) -> str:
    """Escape ``text`` and turn `code` spans into <code> elements."""
    pieces = text.split("`")
    escaped = [html.escape(piece) for piece in pieces]
    if len(pieces) % 2 == 0:
        # An unpaired backtick (in user text) stays a literal backtick.
        return html.escape(text)
    return "".join(f"<code>{piece}</code>" if i % 2 else piece for i, piece in enumerate(escaped))


def _html_table(table: _Table) -> str:
    header = "".join(f"<th>{html.escape(name)}</th>" for name in table.headers)
    lines = ["<table>", f"<tr>{header}</tr>"]
    for index, row in enumerate(table.rows):
        row_class = ' class="strong"' if index in table.highlighted else ""
        cells = "".join(
            f'<td class="number">{html.escape(value)}</td>'
            if i in table.numeric
            else f"<td>{html.escape(value)}</td>"
            for i, value in enumerate(row)
        )
        lines.append(f"<tr{row_class}>{cells}</tr>")
    lines.append("</table>")
    return "\n".join(lines)


# -- formatting ---------------------------------------------------------------------------


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_TEXT_CHARS else text[: MAX_TEXT_CHARS - 1] + "…"


def _quote(text: str) -> str:
    return f'"{_shorten(text)}"'


def _format_p(value: float) -> str:
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    return f"{value:.1e}" if value < 0.01 else f"{value:.3f}"
