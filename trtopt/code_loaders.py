"""Data specs that run the user's Python code: how to recognise them and what the help says.

A ``file.py[:function]`` data source (``--calib-data``, ``--val-data``, ``bench --data``, a suite
file's ``data``/``calib_data``) imports that file, which runs whatever it contains with the user's
rights. That is the point of a loader, so it stays allowed on the command line, where the user
typed the path; the help of each such flag says so. A suite file is different: it may come from
someone else, so its loaders run only with ``--allow-code``. Kept free of numpy so CLI help stays fast.
"""
from __future__ import annotations

# Appended to the help of every flag that takes a data source.
CODE_WARNING = "file.py[:fn] imports and runs that Python file: name only code you trust"


def runs_code(spec: object) -> bool:
    """Whether opening `spec` would import and run a Python file (a ``file.py[:function]`` loader)."""
    text = str(spec)
    return ".py:" in text or text.endswith(".py")
