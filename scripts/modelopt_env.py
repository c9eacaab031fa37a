"""NVIDIA ModelOpt in a virtual environment of its own, for the benchmarks that compare against it.

ModelOpt pins its own onnx and onnxruntime, so it cannot share trtopt's environment: the benchmarks
run it with the interpreter of a virtual environment created on first use with the CPU torch the
project uses and a pinned ModelOpt. Standard library only: benchmark worker processes import this
module under ModelOpt's interpreter too.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MODELOPT_REQUIREMENTS = ("torch==2.13.0", "nvidia-modelopt[onnx]==0.47.0")
_CHECK = "import modelopt.onnx.quantization, torch; print(torch.__version__)"


def _last_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
    return lines[-1][-300:] if lines else f"exit {done.returncode}"


def modelopt_python(venv: Path) -> tuple[Path | None, str]:
    """ModelOpt's interpreter in `venv` and a note saying which; (None, why) when it cannot be had.

    The environment is created, or completed when ModelOpt does not import in it (an interrupted
    install), before the interpreter is returned.
    """
    python = venv / "bin" / "python"
    if not python.exists():
        created = subprocess.run([sys.executable, "-m", "venv", os.fspath(venv)], capture_output=True, text=True)
        if created.returncode != 0:
            return None, f"cannot create ModelOpt's virtual environment in {venv}: {_last_line(created)}"
    done = subprocess.run([os.fspath(python), "-c", _CHECK], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"installing ModelOpt into {venv} ({' '.join(MODELOPT_REQUIREMENTS)}) ...", flush=True)
        install = subprocess.run([os.fspath(python), "-m", "pip", "install", "--quiet", *MODELOPT_REQUIREMENTS],
                                 capture_output=True, text=True)
        if install.returncode != 0:
            return None, f"cannot install ModelOpt: {_last_line(install)}"
        done = subprocess.run([os.fspath(python), "-c", _CHECK], capture_output=True, text=True)
        if done.returncode != 0:
            return None, f"ModelOpt does not import: {_last_line(done)}"
    return python, f"ModelOpt from {venv} (torch {done.stdout.strip()})"
