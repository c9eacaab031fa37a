"""Structured access log: one JSON object per answered request on the ``trtopt.serve.access`` logger."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

LOGGER = logging.getLogger("trtopt.serve.access")


def log_access(**fields: Any) -> None:
    if LOGGER.isEnabledFor(logging.INFO):
        LOGGER.info(json.dumps({"ts": round(time.time(), 3), **fields}, separators=(",", ":")))


def configure_access_log(enabled: bool) -> None:
    """Send the access log to stderr as bare JSON lines (one handler, however often called), or silence it."""
    LOGGER.propagate = False
    if not enabled:
        LOGGER.setLevel(logging.CRITICAL)
        return
    if not LOGGER.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        LOGGER.addHandler(handler)
    LOGGER.setLevel(logging.INFO)
