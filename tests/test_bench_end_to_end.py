"""Two real ONNX Runtime targets through the CLI: every scenario, every report, schema-valid JSON."""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import jsonschema
import pytest

from conftest import make_residual_convnet
from test_bench_helpers import FAST, read_report, trtopt_cli
from trtopt.bench.report_json import load_schema


@pytest.fixture(scope="module")
def two_targets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bench_e2e")
    reference = make_residual_convnet(root / "fp32.onnx", seed=0)
    twin = root / "twin.onnx"
    shutil.copy(reference, twin)  # same weights: must agree exactly with the baseline
    other = make_residual_convnet(root / "other.onnx", seed=1)  # different weights: must not
    out = root / "out"
    result = trtopt_cli("bench", str(twin), f"other={other}", "--baseline", str(reference), *FAST,
                        "--batch-sizes", "1,4", "--qps", "40", "--duration", "1", "--concurrency", "2",
                        "--json", str(out / "r.json"), "--markdown", str(out / "r.md"), "--html", str(out / "r.html"),
                        "--history", str(root / "h.sqlite"))
    assert result.returncode == 0, result.stderr
    assert "top-1 agreement" in result.stdout and "other" in result.stdout  # the terminal tables
    return {
        "root": root,
        "json": out / "r.json",
        "md": out / "r.md",
        "html": out / "r.html",
        "history": root / "h.sqlite",
    }


def test_json_report_validates_against_its_schema(two_targets: dict[str, Path]) -> None:
    report = read_report(two_targets["json"])
    jsonschema.Draft202012Validator.check_schema(load_schema())
    jsonschema.validate(report, load_schema(), cls=jsonschema.Draft202012Validator)
    assert report["schema_version"] == 1 and report["run_id"] == 1


def test_report_has_every_scenario_and_number(two_targets: dict[str, Path]) -> None:
    report = read_report(two_targets["json"])
    assert [t["name"] for t in report["targets"]] == ["fp32", "twin", "other"]  # baseline runs first
    for target in report["targets"]:
        found = target["scenarios"]
        assert set(found) == {"single_stream", "offline", "server", "concurrency"}
        lat = found["single_stream"]["latency_ms"]
        assert 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert [b["batch_size"] for b in found["offline"]["batches"]] == [1, 4]
        assert found["concurrency"]["callers"] == 2
        assert found["server"]["completed"] == found["server"]["issued"] == 40
        stability = found["single_stream"]["stability"]
        assert stability["stop_reason"] in ("stable", "time_bound")
        # the time bound holds (one window of slack: the bound is checked between windows)
        assert stability["measured_s"] <= 0.4 + 0.1
        assert target["memory"]["host_peak_rss_bytes"] > 0 and target["engine_size_bytes"] > 0
    env = report["environment"]
    assert env["threads"] == 1 and env["libraries"]["onnxruntime"] and env["cpu"]


def test_accuracy_against_the_baseline(two_targets: dict[str, Path]) -> None:
    targets = {t["name"]: t for t in read_report(two_targets["json"])["targets"]}
    assert targets["fp32"]["accuracy"] is None
    twin = targets["twin"]["accuracy"]
    assert twin["top1_agreement"] == 1.0 and twin["max_abs_error"] == 0.0 and twin["snr_db"] is None
    other = targets["other"]["accuracy"]
    assert other["max_abs_error"] > 0.01 and other["cosine_similarity"] < 0.999
    assert other["samples"] == 32


def test_markdown_html_and_history_written(two_targets: dict[str, Path]) -> None:
    markdown = two_targets["md"].read_text()
    assert "| target |" in markdown and "twin" in markdown and "## Accuracy vs fp32" in markdown
    page = two_targets["html"].read_text()
    assert page.count("data:image/png;base64,") == 3 and "<script" not in page and "http" not in page.split("<body>")[1]
    with sqlite3.connect(two_targets["history"]) as db:
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
