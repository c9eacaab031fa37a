"""The build pipeline: [calibrate -> quantize | convert FP16] -> backend build -> accuracy vs FP32.

``build()`` is what ``trtopt build`` and the demo call. It talks to backends only through the
registry's Backend protocol, so ONNX Runtime and TensorRT take the same path. Everything lands in
``engines/NAME/`` through one atomic folder rename, after the accuracy check has passed its budget:
a failed, interrupted or over-budget build leaves no engine behind.
"""
from __future__ import annotations

import logging
import os
import shlex
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trtopt import __version__
from trtopt.accuracy import MetricSettings, far_off_problems
from trtopt.budget import AccuracyBudget
from trtopt.errors import TrtoptError, UsageError
from trtopt.fileio import atomic_directory, atomic_write_json, ensure_writable_dir, sha256_bytes, sha256_file
from trtopt.repository import MANIFEST, SCHEMA_VERSION, cached_manifest, read_manifest

log = logging.getLogger("trtopt.build")

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_ACCURACY_SAMPLES = 512
SCALE_TABLE_FILE = "scales.json"
SENSITIVITY_FILE = "sensitivity.json"
SENSITIVITY_TOP = 10  # layers listed in the manifest; the file has them all
# A SIGKILLed build leaves its staging folder (".NAME.*.staging", never loadable). Ones this old
# belong to no running build (TensorRT builds of large models take minutes to an hour) and are swept.
STALE_STAGING_S = 6 * 3600


@dataclass
class BuildResult:
    """What one build produced (or found in the cache)."""

    name: str
    engine_dir: Path
    manifest: dict[str, Any]
    cache_hit: bool
    backend_reason: str = ""

    @property
    def precision(self) -> str:
        return str(self.manifest["precision"])

    @property
    def accuracy(self) -> dict[str, Any] | None:
        return self.manifest.get("accuracy")

    @property
    def engine_bytes(self) -> int:
        return int(self.manifest["engine"]["bytes"])

    @property
    def latency_ms(self) -> float | None:
        timing = self.manifest.get("timing") or {}
        return timing.get("median_ms")

    def load(self, **runner_options: Any) -> Any:
        from trtopt.repository import load

        return load(self.engine_dir, **runner_options)


def data_fingerprint(spec: str | None) -> str | None:
    """Identify a data source for the cache key without reading it all (names, sizes, mtimes)."""
    if spec is None:
        return None
    path = Path(str(spec).split(".py:")[0] + (".py" if ".py:" in str(spec) else ""))
    if path.is_file():
        return f"{spec}@{sha256_file(path)}"
    if path.is_dir():
        listing = sorted(
            (str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*") if p.is_file()
        )
        return f"{spec}@{sha256_bytes(repr(listing).encode())}"
    return str(spec)


def _default_encoding(backend: str) -> str:
    return "tensorrt" if backend == "tensorrt" else "onnxruntime-cpu"


def _cli_command() -> str | None:
    """The command line that ran this build, recorded so load() can say how to rebuild."""
    if sys.argv and Path(sys.argv[0]).name in ("__main__.py", "trtopt"):
        return "trtopt " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    return None


def build(
    onnx_path: str | os.PathLike[str],
    *,
    precision: str = "fp32",
    calib_data: str | None = None,
    calib_method: str = "auto",
    calib_table: str | os.PathLike[str] | None = None,
    calib_samples: int | None = 512,
    val_data: str | None = None,
    accuracy_samples: int = DEFAULT_ACCURACY_SAMPLES,
    accuracy_budget: str | Mapping[str, float] | AccuracyBudget | None = None,
    metrics: MetricSettings | None = None,
    accept_accuracy_loss: bool = False,
    sensitivity: bool = False,
    backend: str = "auto",
    name: str | None = None,
    engines_dir: str | os.PathLike[str] = "engines",
    shapes: str | Mapping[str, Sequence[int]] | None = None,
    min_shapes: str | Mapping[str, Sequence[int]] | None = None,
    opt_shapes: str | Mapping[str, Sequence[int]] | None = None,
    max_shapes: str | Mapping[str, Sequence[int]] | None = None,
    encoding: str | None = None,
    per_channel: bool = True,
    exclude_nodes: Iterable[str] = (),
    exclude_op_types: Iterable[str] = (),
    keep_io_types: bool = True,
    threads: int | None = None,
    workspace_bytes: int | None = None,
    opt_level: int | None = None,
    timing_cache: str | os.PathLike[str] | None = None,
    tf32: bool = True,
    version_compatible: bool = False,
    hardware_compat: str = "none",
    batch_size: int = 32,
    force: bool = False,
) -> BuildResult:
    """Build ``engines/NAME`` from an FP32 ONNX; see the module docstring for the stages.

    INT8 needs calibration data (`calib_data`, any spec trtopt.data.sources.open_source takes) or a
    scale table computed on this exact model (`calib_table`). Accuracy is measured on the held-out
    part of `calib_data`, or on `val_data` when given; FP32/FP16 builds without data use seeded
    random inputs (agreement only, no task accuracy).
    """
    from trtopt.backends.onnxruntime import OnnxRuntimeRunner
    from trtopt.backends.registry import BuildOptions, get_backend
    from trtopt.backends.select import select_backend
    from trtopt.quantization.modelio import load_onnx
    from trtopt.shapes import derive_profile

    started = time.perf_counter()
    source = Path(onnx_path)
    if precision not in PRECISIONS:
        raise UsageError(f"precision {precision!r} is unknown; use one of {PRECISIONS} (--fp16 / --int8)")
    if precision == "int8" and calib_data is None and calib_table is None:
        raise UsageError(
            "--int8 needs calibration: pass --calib-data SRC (an .npz/.npy file, a folder of arrays or images, "
            "file.py:function, or 'digits'), or --calib-table TABLE.json from `trtopt calibrate` on this model"
        )
    load_onnx(source)
    metrics = metrics or MetricSettings()
    budget = AccuracyBudget.parse(accuracy_budget, user_metrics=bool(metrics.user_metrics))
    backend_name, reason = select_backend(backend)
    be = get_backend(backend_name)
    encoding = encoding or _default_encoding(backend_name)
    name = name or f"{source.stem}-{precision}"
    if not name or "/" in name or name.startswith("."):
        raise UsageError(f"--name {name!r}: expected a plain folder name")
    root = ensure_writable_dir(engines_dir, "engines folder")
    engine_dir = root / name

    reference = OnnxRuntimeRunner(source, threads=threads)
    profile = derive_profile(reference.inputs, shapes, min_shapes, opt_shapes, max_shapes)
    options = BuildOptions(precision=precision, profile=profile, workspace_bytes=workspace_bytes, opt_level=opt_level,
                           threads=threads, timing_cache=Path(timing_cache) if timing_cache else None,
                           tf32=tf32, version_compatible=version_compatible, hardware_compat=hardware_compat,
                           extra={"encoding": encoding if precision == "int8" else None, "per_channel": per_channel,
                                  "exclude_nodes": sorted(exclude_nodes), "exclude_op_types": sorted(exclude_op_types),
                                  "keep_io_types": keep_io_types})
    source_sha = sha256_file(source)
    backend_version, device = be.version(), be.device()
    calib_table_sha = sha256_file(calib_table) if calib_table else None
    key_parts = {
        "trtopt": __version__, "source": source_sha, "precision": precision, "backend": be.name,
        "backend_version": backend_version, "device": device, "options": options.to_json(),
        "calibration": {"data": data_fingerprint(calib_data), "method": calib_method, "samples": calib_samples,
                        "table": calib_table_sha} if precision in ("int8", "fp16") else None,
        "accuracy": {"data": data_fingerprint(val_data), "samples": accuracy_samples, "budget": budget.to_json(),
                     "metrics": metrics.to_json(), "metric_files": [data_fingerprint(m) for m in metrics.user_metrics],
                     "sensitivity": sensitivity},
    }
    cache_key = sha256_bytes(repr(sorted(key_parts.items())).encode())
    if not force:
        cached = cached_manifest(engine_dir, cache_key)
        if cached is not None:
            reference.close()
            return BuildResult(name, engine_dir, cached, cache_hit=True, backend_reason=reason)

    _sweep_stale_staging(root, name)
    table = _scale_table(
        source, precision, calib_data, calib_method, calib_table, calib_samples, reference, batch_size, force
    )
    accuracy_batch = _batch_size(reference.inputs, profile, batch_size)
    mixed = ranked = None
    if precision == "int8" and (budget or sensitivity):
        evaluator = _evaluator(source, table, encoding, per_channel, exclude_nodes, exclude_op_types, metrics,
                               _accuracy_data(calib_data, val_data), accuracy_samples, accuracy_batch, threads)
        with evaluator:
            ranked = _sensitivity(evaluator) if sensitivity else None
            mixed = _mixed_precision(evaluator, budget) if budget else None
        exclude_nodes = sorted(set(exclude_nodes) | set(mixed.float_nodes if mixed else ()))
    with atomic_directory(engine_dir) as staging:
        model_file, model_info = _precision_model(source, staging, precision, table, encoding, per_channel,
                                                  exclude_nodes, exclude_op_types, keep_io_types)
        if table is not None:
            table.save(staging / SCALE_TABLE_FILE)
        built = be.build(staging / model_file, staging, options)
        engine_path = staging / built.engine_file
        manifest: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION, "name": name, "cache_key": cache_key,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "trtopt_version": __version__,
            "command": _cli_command(),
            "backend": {"name": be.name, "version": backend_version}, "device": device, "precision": precision,
            "source": {"path": os.fspath(source), "sha256": source_sha},
            "model": {"file": model_file, "sha256": sha256_file(staging / model_file), **model_info},
            "engine": {
                "file": built.engine_file,
                "sha256": sha256_file(engine_path),
                "bytes": engine_path.stat().st_size,
            },
            "calibration": None
            if table is None
            else {
                "table_id": table.table_id,
                "method": table.method,
                "file": SCALE_TABLE_FILE,
                "data": calib_data,
                "samples": table.num_samples,
            },
            "io": {
                "inputs": [i.to_json() for i in reference.inputs],
                "outputs": [o.to_json() for o in reference.outputs],
                "profile": profile.to_json(),
            },
            "build_options": options.to_json(),
            **built.manifest_fields,
        }
        report, timing, data_used = _measure_accuracy(be, staging, manifest, reference,
                                                      _accuracy_data(calib_data, val_data), accuracy_samples,
                                                      accuracy_batch, metrics)
        problems = budget.violations(report, timing.get("speedup"))
        if problems:
            raise TrtoptError(
                f"engine {name!r} misses the accuracy budget: "
                + "; ".join(problems)
                + " (nothing was written; try --exclude-op-types/--exclude-nodes, another --calib-method, or FP16)"
            )
        far_off = far_off_problems(report)
        if far_off and not accept_accuracy_loss:
            log.warning("engine %r is far off FP32: %s", name, "; ".join(far_off))
        manifest["accuracy"] = {**report.to_json(), "data": data_used, "budget": budget.to_json() or None,
                                "metric_settings": metrics.to_json(), "far_off": far_off,
                                "far_off_accepted": bool(far_off) and accept_accuracy_loss}
        if mixed is not None:
            manifest["mixed_precision"] = mixed.to_json()
        if ranked is not None:
            atomic_write_json(staging / SENSITIVITY_FILE, ranked.to_json())
            manifest["sensitivity"] = {
                "file": SENSITIVITY_FILE, "samples": ranked.samples, "seconds": round(ranked.seconds, 3),
                "top": [{"node": e.layer.name, "op_type": e.layer.op_type, "harm": e.harm, "gain": e.gain}
                        for e in ranked.layers[:SENSITIVITY_TOP]],
            }
        manifest["timing"] = timing
        manifest["build_seconds"] = round(time.perf_counter() - started, 3)
        atomic_write_json(staging / MANIFEST, manifest)
    reference.close()
    return BuildResult(name, engine_dir, read_manifest(engine_dir), cache_hit=False, backend_reason=reason)


def _sweep_stale_staging(root: Path, name: str) -> None:
    import shutil

    cutoff = time.time() - STALE_STAGING_S
    for folder in root.glob(f".{name}.*.staging"):
        if folder.is_dir() and folder.stat().st_mtime < cutoff:
            shutil.rmtree(folder, ignore_errors=True)


def _scale_table(
    source: Path,
    precision: str,
    calib_data: str | None,
    method: str,
    calib_table: Any,
    samples: int | None,
    reference: Any,
    batch_size: int,
    force: bool,
) -> Any:
    """The INT8 scale table (loaded or calibrated now); FP16 uses one for its range rules when data is given."""
    from trtopt.quantization.table import ScaleTable

    if precision == "fp32" or (precision == "fp16" and calib_data is None and calib_table is None):
        return None
    if calib_table is not None:
        table = ScaleTable.load(calib_table)
        table.ensure_matches(source, force=force)
        return table
    from trtopt.data.sources import open_source
    from trtopt.quantization.calibrate import calibrate

    data = open_source(
        str(calib_data), reference.inputs, batch_size=batch_size, max_samples=samples, part="calibration"
    )
    return calibrate(source, data, method=method)


def _precision_model(
    source: Path,
    staging: Path,
    precision: str,
    table: Any,
    encoding: str,
    per_channel: bool,
    exclude_nodes: Iterable[str],
    exclude_op_types: Iterable[str],
    keep_io_types: bool,
) -> tuple[str, dict[str, Any]]:
    """Write the ONNX the backend builds (a copy, Q/DQ or FP16) into the staging folder."""
    if precision == "int8":
        from trtopt.quantization.qdq import quantize

        result = quantize(source, table, staging / "model.int8.onnx", encoding=encoding, per_channel=per_channel,
                          exclude_nodes=exclude_nodes, exclude_op_types=exclude_op_types)
        return "model.int8.onnx", {"encoding": encoding, "quantized_activations": len(result.activations),
                                   "quantized_weights": len(result.weights), "missing_scales": result.missing_scales}
    if precision == "fp16":
        from trtopt.quantization.fp16 import convert_fp16

        result = convert_fp16(source, staging / "model.fp16.onnx", scales=table, keep_io_types=keep_io_types,
                              exclude_nodes=exclude_nodes, exclude_op_types=exclude_op_types)
        return "model.fp16.onnx", {"kept_fp32": result.kept_fp32, "keep_io_types": keep_io_types}
    from trtopt.fileio import atomic_write_bytes

    atomic_write_bytes(staging / "model.fp32.onnx", source.read_bytes())
    return "model.fp32.onnx", {}


def _accuracy_data(calib_data: str | None, val_data: str | None) -> tuple[str, str]:
    """(spec, part) of the accuracy data: --val-data, else the held-out part of --calib-data, else random."""
    return (val_data, "all") if val_data else (calib_data, "heldout") if calib_data else ("random", "all")


def _evaluator(source: Path, table: Any, encoding: str, per_channel: bool, exclude_nodes: Iterable[str],
               exclude_op_types: Iterable[str], metrics: MetricSettings, data: tuple[str, str], samples: int,
               batch: int, threads: int | None) -> Any:
    """INT8 variants of ``source`` run against FP32 on the accuracy data (trtopt.int8_eval)."""
    from trtopt.int8_eval import Evaluator, QuantSettings, load_heldout

    quant = QuantSettings(encoding, per_channel, tuple(sorted(exclude_nodes)), tuple(sorted(exclude_op_types)))
    heldout = load_heldout(source, str(data[0]), data[1], samples, batch, threads)
    return Evaluator(source, table, quant, heldout, metrics, threads)


def _sensitivity(evaluator: Any) -> Any:
    """Per-layer sensitivity of the full INT8 model (``build --sensitivity``; trtopt.sensitivity)."""
    from trtopt.int8_eval import quantized_layers
    from trtopt.sensitivity import analyze

    return analyze(evaluator, quantized_layers(evaluator.model_path, evaluator.table, evaluator.quant))


def _mixed_precision(evaluator: Any, budget: AccuracyBudget) -> Any:
    """Which layers to keep float so the budget holds on the held-out data (trtopt.mixed_precision)."""
    from trtopt.int8_eval import quantized_layers
    from trtopt.mixed_precision import BudgetUnreachable, search

    try:
        result = search(evaluator, quantized_layers(evaluator.model_path, evaluator.table, evaluator.quant), budget)
    except BudgetUnreachable as exc:
        raise TrtoptError(f"{exc}; nothing was written") from None
    log.info("mixed precision: %d layer(s) kept float after %d variants in %.1f s", len(result.kept_float),
             result.evaluations, result.seconds)
    return result


def _measure_accuracy(be: Any, staging: Path, manifest: dict[str, Any], reference: Any, data_spec: tuple[str, str],
                      samples: int, batch: int, metrics: MetricSettings) -> tuple[Any, dict[str, Any], str]:
    """Run the new engine and the FP32 ONNX on the same held-out batches, comparing every output; time both.

    Speed vs FP32 is measured only where the FP32 reference runs on the same backend (ONNX Runtime
    on the CPU); for other backends the timing records the engine alone.
    """
    import numpy as np

    from trtopt.accuracy import AccuracyAccumulator
    from trtopt.data.sources import open_source
    from trtopt.progress import progress

    spec, part = data_spec
    data = open_source(str(spec), reference.inputs, batch_size=batch, max_samples=samples, part=part)
    accumulator = AccuracyAccumulator(metrics)
    times, reference_times = [], []
    with be.load(staging, manifest) as engine:
        for item in progress(data, desc="accuracy vs FP32", unit="batch"):
            tic = time.perf_counter()
            expected = reference.infer(item.feed)
            reference_times.append(time.perf_counter() - tic)
            tic = time.perf_counter()
            got = engine.infer(item.feed)
            times.append(time.perf_counter() - tic)
            accumulator.update(expected, {k: np.asarray(v) for k, v in got.items()}, item.labels)
    if accumulator.samples == 0:
        raise UsageError(f"accuracy data {spec!r} ({part}) yielded no samples; pass --val-data with a few samples")
    timing: dict[str, Any] = {"batch": batch, "median_ms": round(1000 * float(np.median(times)), 4),
                              "batches": len(times)}
    if be.name == "onnxruntime" and manifest["precision"] != "fp32":
        fp32_ms = 1000 * float(np.median(reference_times))
        timing.update(fp32_median_ms=round(fp32_ms, 4), speedup=round(fp32_ms / max(timing["median_ms"], 1e-9), 4))
        timing["slower_than_fp32"] = timing["speedup"] < 1.0
    return accumulator.report(), timing, f"{spec} ({part})"


def _batch_size(inputs: Sequence[Any], profile: Any, wanted: int) -> int:
    """A batch size every input accepts: fixed batch dims win, else capped by the profile's max."""
    for info in inputs:
        if info.shape and isinstance(info.shape[0], int) and info.shape[0] > 0:
            return info.shape[0]
        high = profile.max.get(info.name)
        if high:
            wanted = min(wanted, high[0])
    return max(1, wanted)


def _cell(value: Any, fmt: str, scale: float = 1.0, suffix: str = "") -> str:
    return "n/a" if value is None else format(scale * value, fmt) + suffix


def format_comparison(results: Sequence[BuildResult], latency_ms: Mapping[str, float] | None = None) -> str:
    """A Markdown table comparing builds (e.g. FP32, FP16, INT8) for the demo and reports.

    Latency defaults to the median batch time measured during each build's accuracy check;
    pass `latency_ms` ({name: ms}) to show a proper benchmark's numbers instead.
    """
    columns = ["engine", "backend", "precision", "top-1 agreement", "task acc. %", "drop (pts)", "cosine", "SNR dB",
               "max abs err", "latency ms (batch)", "size MB"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in results:
        acc = r.accuracy or {}
        timing = r.manifest.get("timing") or {}
        latency = (latency_ms or {}).get(r.name, r.latency_ms)
        snr = "inf" if acc and acc.get("snr_db") is None else _cell(acc.get("snr_db"), ".1f")
        lines.append("| " + " | ".join([
            r.name, r.manifest["backend"]["name"], r.precision,
            _cell(acc.get("top1_agreement"), ".2f", 100, "%"), _cell(acc.get("candidate_accuracy"), ".2f", 100),
            _cell(acc.get("accuracy_drop_points"), "+.2f"), _cell(acc.get("cosine_similarity"), ".5f"), snr,
            _cell(acc.get("max_abs_error"), ".3g"), f"{_cell(latency, '.2f')} ({timing.get('batch', '?')})",
            f"{r.engine_bytes / 1e6:.2f}",
        ]) + " |")
    return "\n".join(lines)
