"""The HTML report renders in headless Chromium with its plots visible (scripts/check_html_report.py)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_residual_convnet
from test_bench_helpers import REPO
from trtopt.bench import benchmark, report_html

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed (Debian: apt-get install chromium)")
def test_html_report_renders_with_plots(tmp_path: Path) -> None:
    base = make_residual_convnet(tmp_path / "base.onnx", seed=0)
    other = make_residual_convnet(tmp_path / "other.onnx", seed=1)
    report = benchmark(
        [str(other)], str(base), batch_sizes=(1, 4), threads=1, max_time_s=0.3, warmup_s=0.05, samples=16
    )
    page = tmp_path / "report.html"
    page.write_text(report_html.render(report))
    shot = tmp_path / "report.png"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "check_html_report.py"),
            str(page),
            "--screenshot",
            str(shot),
            "--chromium",
            CHROMIUM,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert shot.stat().st_size > 10_000


def test_check_script_fails_on_a_page_without_plots(tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    page = tmp_path / "empty.html"
    page.write_text("<!DOCTYPE html><html><body><h1>no plots here</h1></body></html>")
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "check_html_report.py"),
            str(page),
            "--screenshot",
            str(tmp_path / "empty.png"),
            "--chromium",
            CHROMIUM,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 1 and "plots not visible" in result.stderr
