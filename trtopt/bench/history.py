"""Every benchmark run, kept in a local SQLite database.

One row per run holds the full JSON report (so any old run can be re-rendered or compared), plus
the columns needed to find runs: time, label (suite name), git revision and host. SQLite commits
are atomic, so an interrupted run never leaves half a record. The default location is
``$TRTOPT_BENCH_HISTORY``, else ``$XDG_CACHE_HOME/trtopt/bench-history.sqlite`` (``~/.cache`` when
unset).
"""
from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from trtopt.bench.report_json import dumps
from trtopt.errors import UsageError
from trtopt.fileio import ensure_writable_dir

_SCHEMA_VERSION = 1
_CREATE = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    label TEXT,
    git_revision TEXT,
    hostname TEXT,
    regressions INTEGER NOT NULL DEFAULT 0,
    report TEXT NOT NULL
)
"""


def default_history_path() -> Path:
    explicit = os.environ.get("TRTOPT_BENCH_HISTORY")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "trtopt" / "bench-history.sqlite"


class History:
    """The run database at `path` (created on first use). Use as a context manager or close()."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_history_path()
        if self.path.exists() and not self.path.is_file():
            raise UsageError(f"--history {self.path} is not a file")
        ensure_writable_dir(self.path.parent, "history folder")
        try:
            self._db = sqlite3.connect(self.path)
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > _SCHEMA_VERSION:
                raise UsageError(
                    f"--history {self.path} was written by a newer trtopt (history schema {version}); upgrade trtopt "
                    "or use another file"
                )
            with self._db:
                self._db.execute(_CREATE)
                self._db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise UsageError(f"--history {self.path} is not a trtopt history database: {exc}") from exc

    def store(self, report: dict[str, Any]) -> int:
        """Insert the run and return its id (also written into report["run_id"])."""
        comparison = report.get("comparison") or {}
        with self._db:
            cursor = self._db.execute(
                "INSERT INTO runs (created_at, label, git_revision, hostname, regressions, report) VALUES (?, ?, ?, "
                "?, ?, ?)",
                (report["created_at"], report.get("label"), report["environment"].get("git_revision"),
                 report["environment"].get("hostname"), int(comparison.get("regressions", 0)), "{}"))
            run_id = int(cursor.lastrowid or 0)
            report["run_id"] = run_id
            self._db.execute("UPDATE runs SET report = ? WHERE id = ?", (dumps(report), run_id))
        return run_id

    def get(self, run_id: int) -> dict[str, Any]:
        row = self._db.execute("SELECT id, report FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise UsageError(f"--compare-to {run_id}: no such run in {self.path}")
        return self._report(row)

    def last(self, label: str | None = None) -> dict[str, Any] | None:
        """The most recent run (with `label` when given), or None for an empty history."""
        if label is None:
            row = self._db.execute("SELECT id, report FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        else:
            row = self._db.execute(
                "SELECT id, report FROM runs WHERE label = ? ORDER BY id DESC LIMIT 1", (label,)
            ).fetchone()
        return self._report(row) if row else None

    def _report(self, row: tuple[int, Any]) -> dict[str, Any]:
        """A stored report; a row edited or damaged outside trtopt is a usage error naming the file and run."""
        run_id, text = row
        try:
            report = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"--history {self.path}: run {run_id} holds no readable report ({exc}); "
                             "use another --compare-to run or another --history file") from exc
        shape_ok = isinstance(report, dict) and isinstance(report.get("targets"), list) and all(
            isinstance(t, dict) and "name" in t for t in report["targets"]) and all(
            isinstance(report.get(key), dict) for key in ("config", "environment"))
        if not shape_ok:
            raise UsageError(f"--history {self.path}: run {run_id} is not a trtopt benchmark report; "
                             "use another --compare-to run or another --history file")
        return report

    def resolve(self, ref: str, label: str | None = None) -> dict[str, Any]:
        """``last`` or a run id, as given to --compare-to."""
        if ref == "last":
            found = self.last(label)
            if found is None:
                where = f" with label {label!r}" if label else ""
                raise UsageError(f"--compare-to last: no earlier run{where} in {self.path}")
            return found
        if not ref.isdigit():
            raise UsageError(f"--compare-to expects 'last' or a run id (integer), got {ref!r}")
        return self.get(int(ref))

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT id, created_at, label, git_revision, hostname, regressions FROM runs ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        keys = ("run_id", "created_at", "label", "git_revision", "hostname", "regressions")
        return [dict(zip(keys, row)) for row in rows]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "History":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
