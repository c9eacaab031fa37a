"""Progress bars that stay quiet when output is not a terminal or the user asked for -q."""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

_QUIET = False


def set_quiet(quiet: bool) -> None:
    """Called by the CLI for -q; library users may call it too."""
    global _QUIET
    _QUIET = quiet


def progress_enabled() -> bool:
    if _QUIET or os.environ.get("TRTOPT_NO_PROGRESS"):
        return False
    return sys.stderr.isatty()


def progress(iterable: Iterable[T] | None = None, **kwargs: Any) -> "tqdm[T]":
    """A tqdm bar on stderr, disabled when not interactive (logs and CI stay clean)."""
    kwargs.setdefault("disable", not progress_enabled())
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, file=sys.stderr, **kwargs)
