"""scripts/gpu_checks.sh refuses clearly, with exit 2 and nothing run, on a machine without an NVIDIA GPU."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_checks.sh"


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has nvidia-smi: the script would run")
def test_gpu_checks_refuses_without_a_gpu():
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})
    assert proc.returncode == 2
    assert "nothing was run" in proc.stdout + proc.stderr
