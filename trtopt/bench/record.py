"""After a run: compare with the history, store the run, write the reports, flag regressions.

Shared by ``trtopt bench`` and suite runs so both order things the same way: the comparison is
made before storing (so ``last`` means the previous run, not this one), every report is written
even when the run regressed, and only then is RegressionDetected (exit 3) raised.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtopt.bench import report_html, report_json, report_markdown
from trtopt.bench.compare import DEFAULT_SPREAD_K, DEFAULT_THRESHOLD, compare_reports, regression_summary
from trtopt.bench.history import History
from trtopt.errors import RegressionDetected, UsageError
from trtopt.fileio import atomic_write_text, ensure_file_target

log = logging.getLogger("trtopt.bench")


@dataclass
class RecordOptions:
    history: str | os.PathLike[str] | None = None  # None: the default location
    store: bool = True
    compare_to: str | None = None  # "last" or a run id
    threshold: float = DEFAULT_THRESHOLD
    spread_k: float = DEFAULT_SPREAD_K
    json_path: Path | None = None
    markdown_path: Path | None = None
    html_path: Path | None = None

    def __post_init__(self) -> None:  # refuse before the benchmark runs, not after
        for flag, path in (("--json", self.json_path), ("--markdown", self.markdown_path), ("--html", self.html_path)):
            if path is not None:
                ensure_file_target(path, flag)


def record(report: dict[str, Any], options: RecordOptions) -> dict[str, Any]:
    """Compare/store/write as `options` say; raises RegressionDetected after all outputs exist."""
    if options.store or options.compare_to:
        with History(options.history) as history:
            # `last` on an empty history (the first scheduled run) is not an error: this run becomes the reference
            first_run = options.compare_to == "last" and history.last(report.get("label")) is None
            if first_run:
                log.warning(
                    "--compare-to last: no earlier run in %s yet; this run is stored as the first", history.path
                )
            elif options.compare_to:
                previous = history.resolve(options.compare_to, report.get("label"))
                try:
                    report["comparison"] = compare_reports(previous, report, options.threshold, options.spread_k)
                except (KeyError, TypeError, ValueError) as exc:  # our report is complete: the stored one is damaged
                    raise UsageError(f"--history {history.path}: run {previous.get('run_id')} is damaged "
                                     f"({type(exc).__name__}: {exc}); compare to another run") from exc
            if options.store:
                history.store(report)
    writers = [(options.json_path, report_json.dumps), (options.markdown_path, report_markdown.render),
               (options.html_path, report_html.render)]
    for path, render in writers:
        if path is not None:
            atomic_write_text(path, render(report))
    comparison = report.get("comparison")
    if comparison and comparison["regressions"]:
        raise RegressionDetected(regression_summary(comparison))
    return report
