"""The demo pipeline (`trtopt demo`) as a function: its steps run in order and leave a summary."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)


def test_run_demo_trains_exports_and_summarizes(tmp_path):
    from trtopt.demo import DEMO_STEPS, format_summary, run_demo

    seen = []
    result = run_demo(tmp_path / "demo", epochs=2, nproc=1, on_step=seen.append)
    assert seen == [name for name, _ in DEMO_STEPS][: len(seen)] and seen[:2] == ["train", "export"]
    assert result.checkpoint.is_file() and result.onnx.is_file()
    assert result.summary["export"]["max_abs_diff"] <= 1e-4
    assert result.summary["train"]["test_accuracy"] > 0.8
    recorded = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert recorded["onnx"] == str(result.onnx) and recorded["steps"]["train"]["epochs"] == 2
    text = format_summary(result)
    assert "test accuracy" in text and "max abs diff" in text
