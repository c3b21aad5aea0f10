"""Write a leaderboard as Markdown, CSV and one self-contained HTML page.

The HTML page has no external assets: its style sheet and the few lines of JavaScript
that sort a table when a column header is clicked are inline.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from benchmark.atomic import write_text_atomic
from benchmark.runner.aggregate import format_mean_std
from leaderboard.ranking import METRICS, ORACLE_GROUP, RANKED_GROUP, Leaderboard

MARKDOWN_FILE = "LEADERBOARD.md"
CSV_FILE = "leaderboard.csv"
SCENARIOS_CSV_FILE = "leaderboard_scenarios.csv"
HTML_FILE = "leaderboard.html"

TRACK_NOTE = (
    "Tracks: *blind* detectors see the training set and the model; *clean-queries* "
    "detectors also see clean held-out queries and their transforms; *oracle* detectors "
    "know the trigger. Oracle detectors are upper bounds, ranked apart."
)

HEADERS = ["rank (F1)", "rank (AUROC)", "detector", "track", "source", "F1", "AUROC"]
HEADERS += ["precision", "recall", "scenarios"]


def _cells(row: pd.Series) -> list[str]:
    return [
        str(row["rank_f1"]),
        str(row["rank_auroc"]),
        row["detector"],
        row["track"],
        row["source"],
        format_mean_std(row["mean_f1"], row["std_f1"]),
        format_mean_std(row["mean_auroc"], row["std_auroc"]),
        format_mean_std(row["mean_precision"], row["std_precision"]),
        format_mean_std(row["mean_recall"], row["std_recall"]),
        str(row["n_scenarios"]),
    ]


def _group_title(group: str) -> str:
    if group == RANKED_GROUP:
        return "Ranking (blind and clean-queries detectors)"
    return "Oracle detectors (know the trigger; upper bounds, not ranked with the others)"


def markdown(board: Leaderboard, header_lines: list[str]) -> str:
    """Return the leaderboard as Markdown: rankings, then F1 and AUROC per scenario."""
    lines = [f"# Leaderboard: {board.suite}", "", *header_lines, "", TRACK_NOTE, ""]
    for group in (RANKED_GROUP, ORACLE_GROUP):
        rows = board.ranking[board.ranking["group"] == group]
        if rows.empty:
            continue
        lines += [f"## {_group_title(group)}", ""]
        body = [_cells(row) for _, row in rows.iterrows()]
        lines += [tabulate(body, headers=HEADERS, tablefmt="github", disable_numparse=True), ""]
    lines.append("Values are mean ± standard deviation over scenarios.")
    for metric, title in (("f1", "F1"), ("auroc", "AUROC")):
        table = board.breakdown(metric)
        lines += ["", f"## {title} per scenario", ""]
        body = [
            [detector] + ["n/a" if math.isnan(value) else f"{value:.3f}" for value in row]
            for detector, row in table.iterrows()
        ]
        headers = ["detector", *table.columns]
        lines.append(tabulate(body, headers=headers, tablefmt="github", disable_numparse=True))
    return "\n".join(lines) + "\n"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f0f0f0; cursor: pointer; }
td.text, th.text { text-align: left; }
th.sorted-down::after { content: " \\25BC"; }
th.sorted-up::after { content: " \\25B2"; }
"""

_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (header, column) {
    header.addEventListener("click", function () {
      var up = !header.classList.contains("sorted-up");
      table.querySelectorAll("th").forEach(function (h) {
        h.classList.remove("sorted-up", "sorted-down");
      });
      header.classList.add(up ? "sorted-up" : "sorted-down");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[column].dataset.value, y = b.cells[column].dataset.value;
        var nx = parseFloat(x), ny = parseFloat(y);
        var order = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
        return up ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def _td(text: str, value: object, numeric: bool) -> str:
    css = "" if numeric else ' class="text"'
    return f'<td{css} data-value="{html.escape(str(value))}">{html.escape(text)}</td>'


def _sort_value(value: float) -> str:
    return "" if value is None or math.isnan(value) else repr(float(value))


def _ranking_table(rows: pd.DataFrame, table_id: str) -> str:
    text_headers = ("detector", "track", "source")
    head = "".join(
        f'<th class="text">{h}</th>' if h in text_headers else f"<th>{html.escape(h)}</th>"
        for h in HEADERS
    )
    body = []
    for _, row in rows.iterrows():
        cells = _cells(row)
        values = [
            row["rank_f1"],
            row["rank_auroc"],
            row["detector"],
            row["track"],
            row["source"],
            *(_sort_value(row[f"mean_{metric}"]) for metric in ("f1", "auroc")),
            *(_sort_value(row[f"mean_{metric}"]) for metric in ("precision", "recall")),
            row["n_scenarios"],
        ]
        numeric = [True, True, False, False, False, True, True, True, True, True]
        body.append("<tr>" + "".join(map(_td, cells, values, numeric)) + "</tr>")
    return (
        f'<table class="sortable" id="{table_id}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _breakdown_table(board: Leaderboard, metric: str) -> str:
    table = board.breakdown(metric)
    head = '<th class="text">detector</th>' + "".join(
        f"<th>{html.escape(str(column))}</th>" for column in table.columns
    )
    body = []
    for detector, row in table.iterrows():
        cells = [_td(detector, detector, False)]
        for value in row:
            text = "n/a" if math.isnan(value) else f"{value:.3f}"
            cells.append(_td(text, _sort_value(value), True))
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<table class="sortable" id="scenarios-{metric}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def html_page(board: Leaderboard, header_lines: list[str]) -> str:
    """Return one HTML page with sortable ranking and per-scenario tables."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Leaderboard: {html.escape(board.suite)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Leaderboard: {html.escape(board.suite)}</h1>",
    ]
    parts += [f"<p>{html.escape(line)}</p>" for line in header_lines if line]
    parts.append(f"<p>{html.escape(TRACK_NOTE.replace('*', ''))} Click a header to sort.</p>")
    for group in (RANKED_GROUP, ORACLE_GROUP):
        rows = board.ranking[board.ranking["group"] == group]
        if not rows.empty:
            parts.append(f"<h2>{html.escape(_group_title(group))}</h2>")
            parts.append(_ranking_table(rows, f"ranking-{group}"))
    parts.append("<p>Values are mean ± standard deviation over scenarios.</p>")
    for metric, title in (("f1", "F1"), ("auroc", "AUROC")):
        parts.append(f"<h2>{title} per scenario</h2>")
        parts.append(_breakdown_table(board, metric))
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"


def write_leaderboard(
    board: Leaderboard, output_dir: str | Path, header_lines: list[str]
) -> list[Path]:
    """Write the Markdown page, the ranking CSV, the per-scenario CSV and the HTML page.

    Every file is written to a temporary name and renamed, so a reader never sees half of
    one. Returns the paths written.
    """
    output_dir = Path(output_dir)
    paths = [
        output_dir / MARKDOWN_FILE,
        output_dir / CSV_FILE,
        output_dir / SCENARIOS_CSV_FILE,
        output_dir / HTML_FILE,
    ]
    scenarios = board.scenarios.sort_values(["scenario", "detector"], kind="stable")
    texts = [
        markdown(board, header_lines),
        board.ranking.to_csv(index=False),
        scenarios.loc[:, ["scenario", "detector", "track", "source", *METRICS]].to_csv(index=False),
        html_page(board, header_lines),
    ]
    for path, text in zip(paths, texts):
        write_text_atomic(path, text)
    return paths
