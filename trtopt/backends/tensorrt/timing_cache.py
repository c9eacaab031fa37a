"""Where the timing cache lives, and reading/writing it atomically.

Tactic timing dominates build time; TensorRT can reuse timings from a cache, but a cache is only
valid for one GPU model and TensorRT version. Keying the file name on both lets one folder serve
every machine and version without a build ever loading a foreign cache. ``--timing-cache PATH``
(trtexec spelling) names a file used as-is, or a folder holding keyed files.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trtopt.fileio import atomic_write_bytes


def cache_file_name(trt_version: str, device: Mapping[str, Any]) -> str:
    """``timing-nvidia-a100-sxm4-40gb-sm80-trt10.9.0.34.cache``."""
    gpu = re.sub(r"[^a-z0-9]+", "-", str(device.get("name", "gpu")).lower()).strip("-") or "gpu"
    sm = str(device.get("compute_capability", "0.0")).replace(".", "")
    version = re.sub(r"[^0-9A-Za-z.]+", "-", trt_version)
    return f"timing-{gpu}-sm{sm}-trt{version}.cache"


def default_cache_dir() -> Path:
    """``$TRTOPT_CACHE_DIR/timing`` or ``$XDG_CACHE_HOME/trtopt/timing`` (``~/.cache`` by default)."""
    root = os.environ.get("TRTOPT_CACHE_DIR")
    if root:
        return Path(root) / "timing"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trtopt" / "timing"


def resolve_cache_path(option: Path | str | None, trt_version: str, device: Mapping[str, Any]) -> Path:
    """The cache file for this build: an explicit file, a keyed file in an explicit or default folder."""
    if option is not None:
        path = Path(option)
        if path.is_dir() or str(option).endswith(os.sep):
            return path / cache_file_name(trt_version, device)
        return path
    return default_cache_dir() / cache_file_name(trt_version, device)


def load_cache_bytes(path: Path) -> bytes:
    """Previous cache contents, or b"" when there is none yet."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        return b""


def save_cache_bytes(path: Path, data: bytes) -> Path:
    """Write atomically, so a build killed mid-write never leaves a truncated cache for the next one."""
    return atomic_write_bytes(path, data)
