"""Markdown report: the same tables as the terminal, ready to paste into an issue or a wiki."""
from __future__ import annotations

from typing import Any

from trtopt.bench.summary import (
    Table,
    accuracy_table,
    comparison_table,
    environment_lines,
    latency_table,
    performance_table,
)


def markdown_table(table: Table) -> str:
    header, rows = table
    escape = lambda cell: str(cell).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(escape, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(escape, row)) + " |" for row in rows]
    return "\n".join(lines)


def render(report: dict[str, Any]) -> str:
    title = report.get("label") or "trtopt benchmark"
    parts = [f"# {title}", "", *(f"- {line}" for line in environment_lines(report)), "",
             "## Summary", "", markdown_table(performance_table(report)), ""]
    if report.get("baseline"):
        parts += [f"## Accuracy vs {report['baseline']}", "", markdown_table(accuracy_table(report)), ""]
    parts += ["## Latency (ms)", "", markdown_table(latency_table(report)), ""]
    comparison = comparison_table(report, only_moved=False)
    if comparison is not None:
        info = report["comparison"]
        parts += [
            f"## Compared with run {info['against_run_id']}",
            "",
            f"{info['regressions']} regression(s), {info['improvements']} improvement(s); a timing metric is flagged "
            "beyond "
            f"{100 * info['threshold']:.0f}% and {info['spread_k']:g}x the measured spread.",
            "",
            markdown_table(comparison),
            "",
        ]
    return "\n".join(parts)
