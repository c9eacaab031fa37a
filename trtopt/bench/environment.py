"""Where a benchmark ran: machine, backends, library versions, threads, trtopt version, git revision.

Recorded with every result so two runs are only compared knowingly. Library versions are read
from package metadata, never by importing the library (importing torch to learn its version would
cost seconds and break the torch-free serving path).
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import trtopt
from trtopt.hostinfo import cpu_model

_LIBRARIES = ("numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt", "torch", "cuda-python")
_PACKAGE_DIR = Path(trtopt.__file__).resolve().parent


def gpu_models() -> list[str]:
    """GPU names from nvidia-smi when present; empty on machines without an NVIDIA driver."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def library_versions() -> dict[str, str]:
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_revision() -> str | None:
    """Commit of the trtopt checkout (with "-dirty" when it has local changes); None when installed."""
    if shutil.which("git") is None:
        return None
    try:
        rev = subprocess.run(["git", "-C", str(_PACKAGE_DIR), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(_PACKAGE_DIR), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}-dirty" if dirty else rev


def collect(threads: int | None) -> dict[str, Any]:
    return {
        "hostname": platform.node(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpus": gpu_models(),
        "threads": threads,
        "libraries": library_versions(),
        "trtopt_version": trtopt.__version__,
        "git_revision": git_revision(),
    }
