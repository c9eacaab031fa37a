"""Importing a user's Python function from ``path/to/file.py:function``.

This runs the user's code (the file is imported): data loaders and user accuracy metrics come in
this way, and their help texts say so (:data:`CODE_WARNING`). Import failures, ``sys.exit``
included, are reported as the user's file's failure.

On the command line the path the user typed is their consent. A benchmark suite file may come from
someone else, so loaders named in it (:func:`runs_code`) run only with ``bench --allow-code``.
Kept free of numpy so that CLI help, which shows the warning, stays fast.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Appended to the help of every flag that takes a data source.
CODE_WARNING = "file.py[:fn] imports and runs that Python file: name only code you trust"


def runs_code(spec: object) -> bool:
    """Whether opening data source `spec` would import and run a Python file (``file.py[:function]``)."""
    text = str(spec)
    return ".py:" in text or text.endswith(".py")


def split_spec(spec: str, default_function: str) -> tuple[Path, str]:
    """``"dir/file.py:fn"`` -> (Path("dir/file.py"), "fn"); a bare ``file.py`` names ``default_function``."""
    path, separator, name = spec.partition(".py:")
    return (Path(path + ".py"), name or default_function) if separator else (Path(spec), default_function)


def load_function(path: Path, name: str, what: str) -> Callable[..., Any]:
    """Import ``path`` and return its callable ``name``; UsageError naming ``what`` and the file otherwise."""
    from trtopt.errors import UsageError

    if not path.is_file():
        raise UsageError(f"{what} script not found: {path}")
    module_name = f"_trtopt_user_{abs(hash(path.resolve()))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {what} script {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # the user's code: report it as their file's failure
        del sys.modules[module_name]
        raise UsageError(f"{what} script {path} failed to import: {type(exc).__name__}: {exc}") from exc
    function = getattr(module, name, None)
    if not callable(function):
        raise UsageError(f"{what} script {path} has no function {name!r}")
    return function
