"""A scheduled suite run: builds what is missing, reports, history, and a cache hit the second time."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jsonschema

from conftest import make_residual_convnet
from test_bench_helpers import REPO, read_report
from trtopt.bench.report_json import load_schema

SUITE = """
[suite]
name = "mini"
history = "history.sqlite"
threshold = 10.0  # sub-0.1 ms latencies vary 2x run to run on a shared machine; this checks the suite, not the detector

[bench]
scenarios = ["single-stream", "offline"]
batch_sizes = [1, 4]
max_time = 0.3
warmup_ms = 50
threads = 1
samples = 16

[[models]]
name = "net"
onnx = "net.onnx"
precisions = ["fp32", "int8"]
calib_data = "random"
"""


def _scheduled(suite: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRTOPT_NO_PROGRESS": "1"}
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "scheduled_bench.py"), str(suite)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )


def test_suite_builds_missing_engines_then_reuses_them(tmp_path: Path) -> None:
    make_residual_convnet(tmp_path / "net.onnx")
    suite = tmp_path / "mini.toml"
    suite.write_text(SUITE)
    first = _scheduled(suite)
    assert first.returncode == 0, first.stderr
    engines = {p.name for p in (tmp_path / "engines").iterdir() if not p.name.startswith(".")}
    assert engines == {"net-fp32-onnxruntime", "net-int8-onnxruntime"}
    manifest = tmp_path / "engines" / "net-int8-onnxruntime" / "manifest.json"
    built_at = manifest.stat().st_mtime_ns
    report = read_report(tmp_path / "bench-reports" / "net.json")
    jsonschema.validate(report, load_schema(), cls=jsonschema.Draft202012Validator)
    assert report["label"] == "mini/net" and report["baseline"] == "net-fp32-onnx"
    assert {t["precision"] for t in report["targets"]} == {"fp32", "int8"}
    assert {p.suffix for p in (tmp_path / "bench-reports").iterdir()} == {".json", ".md", ".html"}

    second = _scheduled(suite)
    assert second.returncode == 0, second.stderr
    assert manifest.stat().st_mtime_ns == built_at  # not rebuilt
    again = read_report(tmp_path / "bench-reports" / "net.json")
    assert again["run_id"] == 2 and again["comparison"]["against_run_id"] == 1
