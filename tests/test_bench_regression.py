"""History and regression detection: a target made slower for real exits 3; identical re-runs do not."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from test_bench_helpers import FAST, make_conv_stack, read_report, trtopt_cli
from trtopt.bench.compare import Metric, _judge

# This machine is shared: identical runs can differ by tens of percent. The slow model below is
# >10x slower, so a 100% threshold still catches it with a wide margin and keeps re-runs quiet.
SHARED_MACHINE = ["--threshold", "1.0", "--scenarios", "single-stream,offline", "--batch-sizes", "4"]


def test_slower_target_under_the_same_name_exits_3_and_reruns_do_not(tmp_path: Path) -> None:
    fast = make_conv_stack(tmp_path / "fast.onnx", width=8, depth=1)
    slow = make_conv_stack(tmp_path / "slow.onnx", width=64, depth=6)
    history = str(tmp_path / "h.sqlite")
    current = tmp_path / "net.onnx"

    shutil.copy(fast, current)
    # the first scheduled run: `--compare-to last` on an empty history stores the run, no error
    first = trtopt_cli("bench", f"net={current}", *FAST, *SHARED_MACHINE, "--history", history, "--compare-to", "last")
    assert first.returncode == 0, first.stderr
    assert "no earlier run" in first.stderr and "stored as the first" in first.stderr

    shutil.copy(slow, current)  # same name, same inputs, much more work
    slower = trtopt_cli("bench", f"net={current}", *FAST, *SHARED_MACHINE, "--history", history,
                        "--compare-to", "last", "--json", str(tmp_path / "slow.json"))
    assert slower.returncode == 3, slower.stderr
    assert "regressed against run 1: " in slower.stderr and "net/single_stream/" in slower.stderr
    report = read_report(tmp_path / "slow.json")  # reports are written before exit 3
    statuses = {r["key"]: r["status"] for r in report["comparison"]["metrics"]}
    assert statuses["net/single_stream/best_window_median_ms"] == "regressed"
    assert statuses["net/offline@4/best_window_throughput_sps"] == "regressed"
    assert report["run_id"] == 2

    again = trtopt_cli("bench", f"net={current}", *FAST, *SHARED_MACHINE, "--history", history, "--compare-to", "2",
                       "--json", str(tmp_path / "again.json"))
    assert again.returncode == 0, again.stderr + again.stdout
    comparison = read_report(tmp_path / "again.json")["comparison"]
    assert comparison["against_run_id"] == 2 and comparison["regressions"] == 0 and comparison["metrics"]


@pytest.mark.parametrize(
    ("old", "new", "spread", "expected"),
    [
        (1.0, 1.30, 0.01, "regressed"),  # 30% slower, steady windows
        (1.0, 1.30, 0.20, "unchanged"),  # 30% slower but the windows wandered more than that
        (1.0, 1.05, 0.0, "unchanged"),  # below the relative threshold
        (1.0, 0.70, 0.01, "improved"),
    ],
)
def test_timing_threshold_needs_relative_change_and_spread(
    old: float, new: float, spread: float, expected: str
) -> None:
    assert (
        _judge(
            "best_window_median_ms",
            Metric(old, spread, False, "timing"),
            Metric(new, spread, False, "timing"),
            0.15,
            3.0,
        )
        == expected
    )


def test_accuracy_drop_beyond_one_point_regresses() -> None:
    before = Metric(0.97, 0.0, True, "accuracy")
    assert _judge("top1_agreement", before, Metric(0.95, 0.0, True, "accuracy"), 0.15, 3.0) == "regressed"
    assert _judge("top1_agreement", before, Metric(0.965, 0.0, True, "accuracy"), 0.15, 3.0) == "unchanged"
