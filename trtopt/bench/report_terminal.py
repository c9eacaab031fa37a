"""Plain-text tables for the terminal (fixed-width columns, no colour: logs and CI stay readable)."""
from __future__ import annotations

from typing import Any

from trtopt.bench.summary import Table, accuracy_table, comparison_table, environment_lines, performance_table


def render_table(table: Table) -> str:
    header, rows = table
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line("-" * w for w in widths), *(line(r) for r in rows)])


def render(report: dict[str, Any]) -> str:
    parts = [*environment_lines(report), "", render_table(performance_table(report))]
    if report.get("baseline"):
        parts += ["", render_table(accuracy_table(report))]
    comparison = comparison_table(report)
    if comparison is not None:
        info = report["comparison"]
        parts += [
            "",
            f"compared with run {info['against_run_id']}: {info['regressions']} regression(s), "
            f"{info['improvements']} improvement(s) (threshold {100 * info['threshold']:.0f}% and "
            f"{info['spread_k']:g}x spread)",
        ]
        if comparison[1]:
            parts.append(render_table(comparison))
        parts += [f"warning: {w}" for w in info["warnings"]]
    notes = [f"{t['name']}: {n}" for t in report["targets"] for n in t.get("notes", [])]
    parts += [f"note: {n}" for n in notes]
    return "\n".join(parts)
