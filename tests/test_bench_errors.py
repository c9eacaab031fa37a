"""Bad input to `trtopt bench` fails with one clear line and exit status 2."""
from __future__ import annotations

from pathlib import Path

from conftest import make_residual_convnet
from test_bench_helpers import FAST, trtopt_cli


def _error_line(result) -> str:  # noqa: ANN001 - CompletedProcess
    lines = [line for line in result.stderr.splitlines() if line.startswith("trtopt bench: error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_unknown_target(tmp_path: Path) -> None:
    result = trtopt_cli("bench", str(tmp_path / "missing.onnx"), "--no-history")
    assert result.returncode == 2
    assert "unknown target" in _error_line(result) and "missing.onnx" in result.stderr


def test_baseline_with_different_inputs(tmp_path: Path) -> None:
    rgb = make_residual_convnet(tmp_path / "rgb.onnx", channels=3)
    gray = make_residual_convnet(tmp_path / "gray.onnx", channels=1)
    result = trtopt_cli("bench", str(gray), "--baseline", str(rgb), *FAST, "--no-history")
    assert result.returncode == 2
    line = _error_line(result)
    assert "'gray'" in line and "baseline 'rgb'" in line and "dimension 1 is 1 vs 3" in line


def test_broken_suite_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[suite\nname = 'x'\n")
    result = trtopt_cli("bench", "--suite", str(broken), "--no-history")
    assert result.returncode == 2 and "not valid TOML" in _error_line(result)
    typo = tmp_path / "typo.toml"
    typo.write_text("[[models]]\nname = 'm'\nonnx = 'm.onnx'\nprecision = ['fp16']\n")
    result = trtopt_cli("bench", "--suite", str(typo), "--no-history")
    assert result.returncode == 2 and "unknown key(s) ['precision'] in [models[0]]" in _error_line(result)


def test_server_without_qps_and_unknown_compare_run(tmp_path: Path) -> None:
    model = make_residual_convnet(tmp_path / "m.onnx")
    result = trtopt_cli("bench", str(model), "--scenarios", "server", "--no-history")
    assert result.returncode == 2 and "--qps" in _error_line(result)
    result = trtopt_cli(
        "bench",
        str(model),
        *FAST,
        "--scenarios",
        "single-stream",
        "--history",
        str(tmp_path / "h.sqlite"),
        "--compare-to",
        "42",
    )
    assert result.returncode == 2 and "--compare-to 42: no such run" in _error_line(result)
