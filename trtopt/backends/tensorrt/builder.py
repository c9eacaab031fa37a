"""ONNX -> strongly typed TensorRT engine (TensorRT 10.x and 11.x).

The ONNX handed in already encodes the precision (FP32, FP16 mixed precision, or Q/DQ INT8), so
the build only parses it and builds it strongly typed: no precision builder flags, no calibrator
(both removed in TensorRT 11). TensorRT is imported inside :func:`build_engine`; the helpers above
it are pure and covered by the CPU tests.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trtopt.backends.registry import BuildOptions, BuiltEngine
from trtopt.backends.tensorrt import compat, timing_cache
from trtopt.backends.tensorrt.dtypes import numpy_dtype
from trtopt.backends.tensorrt.inspector import parse_engine_information
from trtopt.backends.tensorrt.logger import LogRouter, make_trt_logger
from trtopt.backends.tensorrt.runtime import deserialize
from trtopt.errors import TrtoptError, UsageError
from trtopt.fileio import atomic_write_bytes, atomic_write_text
from trtopt.shapes import format_shape, is_dynamic
from trtopt.tensors import ShapeProfile, TensorInfo

log = logging.getLogger("trtopt.tensorrt")

ENGINE_FILE = "model.engine"
INSPECTOR_FILE = "engine-info.json"
TIMING_CACHE_FILE = "timing.cache"


def parser_error_line(code: Any, desc: str, node_name: str, node_operator: str, node_index: int) -> str:
    """One parser error: ``node 'conv3' (Conv, #12): [UNSUPPORTED_NODE] description``."""
    code_name = getattr(code, "name", str(code)).rsplit(".", 1)[-1]
    if node_index is not None and node_index >= 0:
        where = f"node {node_name or '?'!r} ({node_operator or '?'}, #{node_index})"
    else:
        where = "model"
    return f"{where}: [{code_name}] {desc.strip()}"


def parse_failure_message(onnx_path: Path, lines: Sequence[str]) -> str:
    shown = "; ".join(lines) if lines else "no error was reported"
    return f"TensorRT's ONNX parser rejected {onnx_path} ({len(lines)} error(s)): {shown}"


def missing_profiles(inputs: Sequence[TensorInfo], profile: ShapeProfile) -> list[str]:
    """Dynamic inputs with no min/opt/max in `profile` (TensorRT would fail the build on them)."""
    return [info.describe() for info in inputs
            if any(is_dynamic(d) for d in info.shape)
            and not (info.name in profile.min and info.name in profile.opt and info.name in profile.max)]


def check_options(options: BuildOptions) -> None:
    """Validate the engine settings TensorRT reads before TensorRT is touched."""
    engine = options.engine
    if engine.opt_level is not None and not 0 <= engine.opt_level <= 5:
        raise UsageError(f"--opt-level {engine.opt_level}: TensorRT accepts 0 to 5 (default 3)")
    if engine.workspace_bytes is not None and engine.workspace_bytes <= 0:
        raise UsageError(f"--workspace must be positive, got {engine.workspace_bytes} bytes")
    compat.hardware_compat_level(engine.hardware_compat)
    if not isinstance(engine.contexts, int) or engine.contexts < 1:
        raise UsageError(
            f"--contexts must be a positive integer (one optimization profile per concurrent execution context), "
            f"got {engine.contexts!r}"
        )


def io_record(names: Sequence[str], modes: Mapping[str, str], dtypes: Mapping[str, str],
              shapes: Mapping[str, Sequence[int]]) -> list[dict[str, Any]]:
    """Engine I/O for the manifest: name, mode, numpy dtype, shape (None for dynamic dims)."""
    return [{"name": n, "mode": modes[n], "dtype": numpy_dtype(dtypes[n], n).name,
             "shape": [None if d < 0 else int(d) for d in shapes[n]]} for n in names]


def _network_inputs(network: Any) -> list[TensorInfo]:
    inputs = []
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(None if d < 0 else int(d) for d in tensor.shape)
        inputs.append(TensorInfo(tensor.name, numpy_dtype(tensor.dtype.name, tensor.name), shape))
    return inputs


def _parse(trt: Any, network: Any, logger: Any, onnx_path: Path) -> None:
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(onnx_path)):
        return
    lines = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        lines.append(
            parser_error_line(error.code(), error.desc(), error.node_name(), error.node_operator(), error.node())
        )
    raise TrtoptError(parse_failure_message(onnx_path, lines))


def _add_profiles(trt: Any, builder: Any, config: Any, inputs: Sequence[TensorInfo], options: BuildOptions) -> int:
    """Add `profiles` identical optimization profiles: TensorRT lets one profile be active in only
    one execution context at a time, so concurrent contexts need one profile each."""
    missing = missing_profiles(inputs, options.profile)
    if missing:
        raise UsageError(f"dynamic input(s) without an optimization profile: {missing}; "
                         "give --shapes or --min-shapes/--opt-shapes/--max-shapes")
    dynamic = [info for info in inputs if any(is_dynamic(d) for d in info.shape)]
    if not dynamic:
        return 0
    count = int(options.engine.contexts)
    for _ in range(count):
        profile = builder.create_optimization_profile()
        for info in dynamic:
            shapes = [options.profile.min[info.name], options.profile.opt[info.name], options.profile.max[info.name]]
            profile.set_shape(info.name, *shapes)
            log.info("profile %s: min %s opt %s max %s", info.name, *(format_shape(s) for s in shapes))
        if config.add_optimization_profile(profile) < 0:
            raise TrtoptError(f"TensorRT rejected the optimization profile for {[i.name for i in dynamic]}")
    return count


def _configure(trt: Any, config: Any, options: BuildOptions, version: str) -> None:
    if options.engine.workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.engine.workspace_bytes))
    if options.engine.opt_level is not None:
        config.builder_optimization_level = int(options.engine.opt_level)
    if not options.engine.tf32:
        config.clear_flag(trt.BuilderFlag.TF32)  # exact FP32 conv/matmul (TF32 is on by default)
    if options.engine.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    level = compat.hardware_compat_level(options.engine.hardware_compat)
    if level != "NONE":
        member = getattr(trt.HardwareCompatibilityLevel, level, None)
        if member is None:
            raise UsageError(
                f"--hardware-compat {options.engine.hardware_compat}: TensorRT {version} does not offer {level}"
            )
        config.hardware_compatibility_level = member
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # makes the inspector JSON useful


def _timing_cache(config: Any, path: Path) -> Any:
    """Create the timing cache from the previous file; a stale or foreign cache starts fresh."""
    previous = timing_cache.load_cache_bytes(path)
    cache = config.create_timing_cache(previous)
    if cache is None and previous:
        log.warning("timing cache %s is unreadable by this TensorRT; starting a new one", path)
        cache = config.create_timing_cache(b"")
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        log.warning("timing cache %s does not match this GPU/TensorRT; starting a new one", path)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    if previous:
        log.info("reusing timing cache %s (%d bytes)", path, len(previous))
    return cache


def build_engine(onnx_path: Path, staging_dir: Path, options: BuildOptions, device: Mapping[str, Any]) -> BuiltEngine:
    """Build `onnx_path` into ``staging_dir/model.engine`` (+ inspector JSON and timing cache)."""
    import tensorrt as trt

    check_options(options)
    if not onnx_path.is_file():
        raise UsageError(f"ONNX model not found: {onnx_path}")
    version = trt.__version__
    compat.check_build_options(options.engine.hardware_compat, str(device["compute_capability"]))
    router = LogRouter()
    logger = make_trt_logger(router)
    builder = trt.Builder(logger)
    flags = 0
    if compat.needs_strongly_typed_flag(version):
        # TensorRT 10.x compatibility: 10.x builds weakly typed unless asked; 11.x is always strongly
        # typed and ignores the flag, so it is only passed before 11.
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    config = builder.create_builder_config()
    _parse(trt, network, logger, onnx_path)
    inputs = _network_inputs(network)
    profiles = _add_profiles(trt, builder, config, inputs, options)
    _configure(trt, config, options, version)
    cache_path = timing_cache.resolve_cache_path(options.engine.timing_cache, version, device)
    cache = _timing_cache(config, cache_path)

    started = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    build_seconds = time.perf_counter() - started
    if plan is None:
        raise TrtoptError(router.explain(f"TensorRT {version} failed to build {onnx_path}"))
    del cache  # kept alive until here: the config refers to it during the build

    engine_path = atomic_write_bytes(staging_dir / ENGINE_FILE, bytes(memoryview(plan)))
    cache_bytes = bytes(memoryview(config.get_timing_cache().serialize()))
    timing_cache.save_cache_bytes(cache_path, cache_bytes)
    atomic_write_bytes(staging_dir / TIMING_CACHE_FILE, cache_bytes)

    _runtime, engine = deserialize(trt, logger, bytes(memoryview(plan)), options.engine.version_compatible)
    if engine is None:
        raise TrtoptError(router.explain(f"TensorRT could not load the engine it just built from {onnx_path}"))
    info_json = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
    atomic_write_text(staging_dir / INSPECTOR_FILE, info_json)
    summary = parse_engine_information(info_json)
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    record = compat.engine_record(version, device, options.engine.version_compatible, options.engine.hardware_compat)
    record.update({
        "strongly_typed": True,
        "optimization_profiles": profiles,
        "device_memory_bytes": compat.engine_device_memory_bytes(engine, version),
        "build_seconds": round(build_seconds, 3),
        "timing_cache": str(cache_path),
        "inspector_file": INSPECTOR_FILE,
        "inspector": summary.to_json(),
        "io": io_record(
            names,
            {n: "input" if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT else "output" for n in names},
            {n: engine.get_tensor_dtype(n).name for n in names},
            {n: tuple(engine.get_tensor_shape(n)) for n in names}),
    })
    log.info("built %s in %.1f s: %d layers, %d reformats, precisions %s", engine_path.name, build_seconds,
             summary.layers, summary.reformat_layers, dict(summary.precisions))
    if summary.reformat_layers and options.precision == "int8":
        log.warning(
            "%d reformat layers in the INT8 engine: Q/DQ placement may be costing speed", summary.reformat_layers
        )
    return BuiltEngine(engine_file=ENGINE_FILE, manifest_fields={"tensorrt": record})
