"""`trtopt bench` against a running `trtopt serve`: http:// and grpc:// targets with the usual scenarios."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra is not installed")
from serving import MAX_BATCH, build_engine  # noqa: E402

from trtopt.bench.targets import resolve_target  # noqa: E402
from trtopt.errors import UsageError  # noqa: E402
from trtopt.serve.launcher import ServerProcess  # noqa: E402


def test_served_model_benchmarks_like_a_local_engine(tmp_path):
    engine = build_engine(tmp_path)
    server = ServerProcess.start([engine], "--no-access-log")
    try:
        report_path = tmp_path / "report.json"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "trtopt",
                "bench",
                f"web=http://{server.http}/convnet",
                f"rpc=grpc://{server.grpc}/convnet",
                "--baseline",
                str(engine),
                "--scenarios",
                "single-stream,offline,server",
                "--batch-sizes",
                f"1,4,{MAX_BATCH * 2}",
                "--qps",
                "40",
                "--duration",
                "1",
                "--concurrency",
                "2",
                "--max-time",
                "0.3",
                "--warmUp",
                "50",
                "--samples",
                "16",
                "--json",
                str(report_path),
                "--no-history",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-2000:]
    finally:
        assert server.stop() == 0
    report = json.loads(report_path.read_text())
    from importlib.resources import files

    jsonschema.validate(report, json.loads(files("trtopt.bench").joinpath("report.schema.json").read_text()))
    served = {t["name"]: t for t in report["targets"] if t["kind"] == "server"}
    assert set(served) == {"web", "rpc"}
    for target in served.values():
        assert target["accuracy"]["max_abs_error"] == 0.0, "served outputs must equal the engine's exactly"
        assert [b["batch_size"] for b in target["scenarios"]["offline"]["batches"]] == [1, 4]
        assert any(f"batch sizes [{MAX_BATCH * 2}]" in note for note in target["notes"])
        assert target["scenarios"]["server"]["completed"] == 40
        assert target["scenarios"]["single_stream"]["throughput_sps"] > 0


@pytest.mark.parametrize("spec", ["http://127.0.0.1/convnet", "grpc://127.0.0.1:1/", "http://127.0.0.1:1/a/b"])
def test_malformed_server_targets_are_usage_errors(spec):
    with pytest.raises(UsageError, match="expected http://HOST:PORT/MODEL"):
        resolve_target(spec).open()


def test_unreachable_server_is_a_usage_error():
    target = resolve_target("grpc://127.0.0.1:9/convnet")
    with pytest.raises(UsageError, match="server target grpc://127.0.0.1:9/convnet"):
        target.open()
