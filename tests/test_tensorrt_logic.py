"""CPU tests for the TensorRT backend's decisions: versions, compatibility, dtypes, inspector JSON,
log routing, timing-cache keys and build-option checks. No TensorRT needed."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from trtopt.backends.registry import BuildOptions
from trtopt.backends.tensorrt import compat, timing_cache
from trtopt.backends.tensorrt.builder import (check_options, io_record, missing_profiles, parse_failure_message,
                                              parser_error_line)
from trtopt.backends.tensorrt.dtypes import numpy_dtype, trt_type_name
from trtopt.backends.tensorrt.inspector import parse_engine_information, precision_of
from trtopt.backends.tensorrt.logger import LogRouter
from trtopt.errors import TrtoptError, UsageError
from trtopt.settings import EngineSettings
from trtopt.tensors import ShapeProfile, TensorInfo

A100 = {"name": "NVIDIA A100-SXM4-40GB", "compute_capability": "8.0"}
A30 = {"name": "NVIDIA A30", "compute_capability": "8.0"}
T4 = {"name": "Tesla T4", "compute_capability": "7.5"}
H100 = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


def test_version_parsing_and_strong_typing_rule() -> None:
    assert compat.parse_version("10.9.0.34") == (10, 9, 0, 34)
    assert compat.parse_version("11.4.0") == (11, 4, 0)
    assert compat.parse_version("10.13.0.post1") == (10, 13, 0)
    with pytest.raises(UsageError):
        compat.parse_version("ten")
    assert compat.needs_strongly_typed_flag("10.9.0.34")
    assert not compat.needs_strongly_typed_flag("11.0.0")
    assert compat.inspector_io_key("10.3.0") == "Bindings" and compat.inspector_io_key("11.4.0") == "I/O Tensors"


@pytest.mark.parametrize("built, runtime, portable, ok", [
    ("10.9.0.34", "10.9.0.34", False, True),
    ("10.9.0.34", "10.10.0.31", False, False),
    ("10.9.0.34", "10.10.0.31", True, True),
    ("10.10.0.31", "10.9.0.34", True, False),
    ("10.9.0.34", "11.4.0.1", True, True),  # NVIDIA: version-compatible 10.x engines run on 11.x
    ("10.9.0.34", "11.4.0.1", False, False),
    ("11.4.0.1", "10.16.1", True, False),  # never on an older runtime
    ("11.0.0", "11.1.0", True, True),
    ("8.6.1", "10.3.0", True, True),  # the other documented cross-major pair
    ("8.6.1", "11.0.0", True, False),  # "a TensorRT 8 engine cannot run with a TensorRT 11 runtime"
    ("8.5.3", "8.6.1", True, False),  # version compatibility starts with 8.6
    ("10.9.0", "12.0.0", True, False),  # no documented 10 -> 12 pair
])
def test_version_rules(built: str, runtime: str, portable: bool, ok: bool) -> None:
    assert (compat.version_mismatch(built, runtime, portable) is None) == ok


def test_version_refusals_say_why() -> None:
    assert "newer than this TensorRT 10.16.1" in compat.version_mismatch("11.4.0.1", "10.16.1", True)
    message = compat.version_mismatch("8.6.1", "11.0.0", True)
    assert "later 8.x releases and TensorRT 10" in message
    assert "not built version-compatible" in compat.version_mismatch("10.9.0.34", "11.4.0.1", False)


class _Engine10_0:
    """Holds only what a TensorRT 10.0 ICudaEngine offers for this query (plain data, not TensorRT)."""

    device_memory_size = 4096


class _Engine11:
    device_memory_size_v2 = 8192


def test_device_memory_attribute_follows_the_version() -> None:
    assert not compat.has_device_memory_size_v2("10.0.1.6") and compat.has_device_memory_size_v2("10.1.0")
    assert compat.has_device_memory_size_v2("11.4.0.106")
    assert compat.engine_device_memory_bytes(_Engine10_0(), "10.0.1.6") == 4096
    assert compat.engine_device_memory_bytes(_Engine11(), "11.4.0.106") == 8192
    with pytest.raises(AttributeError):  # never the removed name on 11.x
        compat.engine_device_memory_bytes(_Engine10_0(), "11.0.0")


def test_pool_device_memory_counts_every_context_and_is_zero_once_released() -> None:
    assert compat.pool_device_memory_bytes(_Engine11(), "11.4.0.106", 3) == 3 * 8192
    assert compat.pool_device_memory_bytes(_Engine10_0(), "10.0.1.6", 2) == 2 * 4096
    assert compat.pool_device_memory_bytes(None, "11.4.0.106", 0) == 0  # what close() leaves


def test_caller_addresses_through_own_buffers_when_needed() -> None:
    from trtopt.backends.tensorrt.runner import needs_own_buffer

    assert not needs_own_buffer(0x7F0000000000, cuda_graph=False)  # cudaMalloc alignment: bound as is
    assert needs_own_buffer(0x7F0000000004, cuda_graph=False)  # torch.empty(n + 1)[1:]: 4 bytes in
    assert needs_own_buffer(0x7F0000000000, cuda_graph=True)  # graphs: addresses must stay fixed


def test_shape_tensor_inputs_are_refused_clearly() -> None:
    from trtopt.backends.tensorrt.runner import shape_tensor_refusal

    assert shape_tensor_refusal(Path("m.engine"), []) is None
    message = shape_tensor_refusal(Path("m.engine"), ["new_shape"])
    assert message.startswith("m.engine: input(s) ['new_shape'] are shape tensors") and "constants" in message


@pytest.mark.parametrize("built, here, level, ok", [
    (A100, A100, "none", True),
    (A100, A30, "none", False),  # same compute capability, another model
    (A100, A30, "same-compute-capability", True),
    (A100, H100, "same-compute-capability", False),
    (A100, H100, "ampere+", True),
    (A100, T4, "ampere+", False),
])
def test_device_rules(built: dict, here: dict, level: str, ok: bool) -> None:
    assert (compat.device_mismatch(built, here, level) is None) == ok


def test_refusal_says_how_to_rebuild() -> None:
    manifest = {"name": "resnet18-int8", "tensorrt": compat.engine_record("10.9.0.34", A100, False, "none")}
    compat.check_engine_compatible(manifest, "10.9.0.34", A100)
    with pytest.raises(TrtoptError) as info:
        compat.check_engine_compatible(manifest, "10.10.0.31", T4)
    message = str(info.value)
    assert "resnet18-int8" in message and "10.9.0.34" in message and "Tesla T4" in message
    assert "Rebuild it on this machine" in message and "--version-compatible" in message
    with pytest.raises(TrtoptError, match="lacks the TensorRT version"):
        compat.check_engine_compatible({"backend": "tensorrt"}, "10.9.0.34", A100)


def test_hardware_compat_options() -> None:
    assert compat.hardware_compat_level("ampere+") == "AMPERE_PLUS"
    with pytest.raises(UsageError, match="--hardware-compat 'turing'"):
        compat.hardware_compat_level("turing")
    with pytest.raises(UsageError, match="compute capability 7.5"):
        compat.check_build_options("ampere+", "7.5")


def test_dtype_mapping() -> None:
    assert numpy_dtype("FLOAT") == np.float32 and numpy_dtype("DataType.HALF") == np.float16
    assert numpy_dtype("BF16") == np.dtype(ml_dtypes.bfloat16) and numpy_dtype("BOOL") == np.bool_
    for name in ("FLOAT", "HALF", "INT8", "INT32", "INT64", "UINT8", "BOOL", "BF16", "FP8"):
        assert trt_type_name(numpy_dtype(name)) == name
    with pytest.raises(UsageError, match="tensor 'w': TensorRT type INT4 is a packed sub-byte type"):
        numpy_dtype("INT4", "w")
    with pytest.raises(UsageError):
        trt_type_name(np.complex64)


INSPECTOR_10 = {
    "Layers": [
        {
            "Name": "conv0 + relu0",
            "LayerType": "CaskConvolution",
            "Outputs": [{"Name": "r0", "Format/Datatype": "Row major linear INT8 format"}],
        },
        {
            "Name": "reformat",
            "LayerType": "Reformat",
            "Outputs": [{"Name": "x", "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}],
        },
        {
            "Name": "fc",
            "LayerType": "CaskGemmMatrixMultiply",
            "Outputs": [{"Name": "logits", "Format/Datatype": "Row major linear FP32"}],
        },
    ],
    "Bindings": ["input", "logits"],
}
INSPECTOR_11 = {
    "Layers": [
        {
            "Name": "conv0",
            "LayerType": "CaskConvolution",
            "Outputs": [{"Name": "c0", "Format": "kLINEAR", "DataType": "Half"}],
        }
    ],
    "I/O Tensors": [
        {"Name": "input", "IOMode": "Input", "DataType": "Float", "Dimensions": [-1, 3, 16, 16], "Location": "Device"},
        {"Name": "logits", "IOMode": "Output", "DataType": "Float", "Dimensions": [-1, 10], "Location": "Device"},
    ],
}


def test_inspector_10x_bindings() -> None:
    summary = parse_engine_information(json.dumps(INSPECTOR_10))
    assert summary.layers == 3 and summary.reformat_layers == 1
    assert dict(summary.precisions) == {"INT8": 1, "FP16": 1, "FP32": 1}
    assert summary.io_tensors == [{"name": "input"}, {"name": "logits"}]


def test_inspector_11x_io_tensors() -> None:
    summary = parse_engine_information(json.dumps(INSPECTOR_11))
    assert summary.precisions == {"FP16": 1}
    assert summary.io_tensors[0] == {"name": "input", "mode": "input", "dtype": "FP32", "shape": [-1, 3, 16, 16]}
    assert summary.to_json()["io_tensors"][1]["mode"] == "output"


def test_inspector_plain_layer_names_and_bad_json() -> None:
    assert parse_engine_information(json.dumps({"Layers": ["a", "b"], "Bindings": []})).layers == 2
    with pytest.raises(TrtoptError, match="not JSON"):
        parse_engine_information("{")
    assert (
        precision_of("Row major linear FP32") == "FP32" and precision_of("Int8") == "INT8" and precision_of("") is None
    )


def test_log_router_levels_and_error_capture(caplog: pytest.LogCaptureFixture) -> None:
    router = LogRouter()
    with caplog.at_level(logging.DEBUG, logger="trtopt.tensorrt"):
        router.emit("Severity.VERBOSE", "tactic 7")
        router.emit("WARNING", "weights clipped")
        router.emit("ERROR", "IBuilder::buildSerializedNetwork: Error Code 4: out of memory\n")
        router.emit("INTERNAL_ERROR", "assertion failed")
    levels = {r.getMessage(): r.levelno for r in caplog.records}
    assert levels["tactic 7"] == logging.DEBUG and levels["weights clipped"] == logging.WARNING
    assert levels["assertion failed"] == logging.CRITICAL
    message = router.explain("build failed")
    assert message.startswith("build failed: IBuilder::buildSerializedNetwork") and "assertion failed" in message
    assert "logged no error" in router.explain("again")  # errors are taken once


def test_timing_cache_keyed_by_device_and_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = timing_cache.cache_file_name("10.9.0.34", A100)
    assert name == "timing-nvidia-a100-sxm4-40gb-sm80-trt10.9.0.34.cache"
    assert name != timing_cache.cache_file_name("10.9.0.34", A30) != timing_cache.cache_file_name("11.0.0", A100)
    monkeypatch.setenv("TRTOPT_CACHE_DIR", str(tmp_path))
    default = timing_cache.resolve_cache_path(None, "10.9.0.34", A100)
    assert default == tmp_path / "timing" / name
    assert timing_cache.resolve_cache_path(tmp_path, "10.9.0.34", A100) == tmp_path / name
    explicit = tmp_path / "my.cache"
    assert timing_cache.resolve_cache_path(explicit, "10.9.0.34", A100) == explicit
    assert timing_cache.load_cache_bytes(default) == b""
    timing_cache.save_cache_bytes(default, b"\x01\x02")
    assert timing_cache.load_cache_bytes(default) == b"\x01\x02"
    assert [p.name for p in default.parent.iterdir()] == [name]  # no temp file left behind


def test_parser_errors_name_node_and_operator() -> None:
    class Code:
        name = "ErrorCode.UNSUPPORTED_NODE"
    line = parser_error_line(Code(), "No importer registered for op: FancyOp ", "fancy_3", "FancyOp", 12)
    assert line == "node 'fancy_3' (FancyOp, #12): [UNSUPPORTED_NODE] No importer registered for op: FancyOp"
    assert parser_error_line("INVALID_GRAPH", "bad", "", "", -1) == "model: [INVALID_GRAPH] bad"
    message = parse_failure_message(Path("m.onnx"), [line, "model: [X] y"])
    assert "m.onnx (2 error(s))" in message and "fancy_3" in message and "model: [X] y" in message


def test_missing_profiles_and_option_checks() -> None:
    inputs = [TensorInfo("input", np.dtype(np.float32), (None, 3, 16, 16)), TensorInfo("k", np.dtype(np.int64), (1,))]
    assert missing_profiles(inputs, ShapeProfile()) == ["input: float32[?x3x16x16]"]
    full = ShapeProfile(min={"input": (1, 3, 16, 16)}, opt={"input": (8, 3, 16, 16)}, max={"input": (8, 3, 16, 16)})
    assert missing_profiles(inputs, full) == []
    check_options(BuildOptions(engine=EngineSettings(opt_level=5, workspace_bytes=1 << 30, contexts=2)))
    for bad in (EngineSettings(opt_level=6), EngineSettings(workspace_bytes=0), EngineSettings(hardware_compat="all"),
                EngineSettings(contexts=0)):
        with pytest.raises(UsageError):
            check_options(BuildOptions(engine=bad))


def test_io_record_for_manifest() -> None:
    record = io_record(["input", "logits"], {"input": "input", "logits": "output"},
                       {"input": "HALF", "logits": "FLOAT"}, {"input": (-1, 3, 16, 16), "logits": (-1, 10)})
    assert record == [{"name": "input", "mode": "input", "dtype": "float16", "shape": [None, 3, 16, 16]},
                      {"name": "logits", "mode": "output", "dtype": "float32", "shape": [None, 10]}]
