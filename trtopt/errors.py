"""Exceptions that the CLI maps to exit statuses.

Library code raises these instead of printing, so the same failure is one clear line on the
command line (exit 1 or 2) and a catchable, typed error for API users.
"""
from __future__ import annotations


class TrtoptError(Exception):
    """A failure the user can act on (bad model, failed build, accuracy budget missed). Exit 1."""

    exit_code = 1


class UsageError(TrtoptError):
    """Bad input: a missing or malformed file, an unknown flag value, a tensor that does not fit. Exit 2."""

    exit_code = 2


class RegressionDetected(TrtoptError):
    """A benchmark moved beyond its threshold against the stored history. Exit 3."""

    exit_code = 3


def first_line(error: BaseException | str, fallback: str | None = None, *, lines: int = 1) -> str:
    """The first line (or first `lines` lines, joined by spaces) of an error message.

    Other libraries (ONNX, ONNX Runtime, torch) put whole paragraphs, tracebacks and advice into
    their messages; trtopt reports a failure as one line, so it quotes only the start. An empty
    message gives `fallback`, by default the exception's type name ("" for a string).
    """
    text = str(error).strip()
    if text:
        return " ".join(line.strip() for line in text.splitlines()[:lines])
    if fallback is not None:
        return fallback
    return type(error).__name__ if isinstance(error, BaseException) else ""
