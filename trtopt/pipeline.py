"""The build pipeline: [calibrate -> quantize | convert FP16] -> backend build -> accuracy vs FP32.

``build(onnx, settings=None, **overrides)`` is what ``trtopt build``, the demo and benchmark suites
call: it applies the keyword overrides to a :class:`~trtopt.settings.BuildSettings`, asks
:func:`trtopt.plan.plan_build` for a checked plan and runs :func:`execute`. ``execute`` only does
work; every user error was found while planning. It talks to backends only through the registry's
Backend protocol, so ONNX Runtime and TensorRT take the same path. Everything lands in
``engines/NAME/`` through one atomic folder publish, after the accuracy check has passed its budget:
a failed, interrupted or over-budget build leaves no engine behind. Each resource (the FP32
reference session, the staging folder, the engine under test) is held in a ``with`` block.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trtopt import __version__
from trtopt.accuracy import far_off_problems
from trtopt.errors import TrtoptError, UsageError
from trtopt.fileio import atomic_directory, atomic_write_json, sha256_file
from trtopt.latency import LatencySettings
from trtopt.plan import BuildPlan, build_options_json, plan_build
from trtopt.repository import MANIFEST, SCHEMA_VERSION, cached_manifest, read_manifest
from trtopt.settings import BuildSettings

log = logging.getLogger("trtopt.build")

SCALE_TABLE_FILE = "scales.json"
SENSITIVITY_FILE = "sensitivity.json"
SENSITIVITY_TOP = 10  # layers listed in the manifest; the file has them all
# Timing of every variant the mixed-precision search evaluates (many: short), and of the built engine (once)
SEARCH_LATENCY = LatencySettings(min_rounds=3, max_seconds=1.0)
BUILD_LATENCY = LatencySettings(min_rounds=5, max_seconds=5.0)
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


def build(onnx_path: str | os.PathLike[str], settings: BuildSettings | None = None, **overrides: Any) -> BuildResult:
    """Build ``engines/NAME`` from an FP32 ONNX; see the module docstring for the stages.

    `overrides` are flat keywords over `settings` (``precision="int8", calib_data="digits",
    threads=1``; the names are listed by :func:`trtopt.settings.keywords`). INT8 needs calibration
    data (`calib_data`, any spec trtopt.data.sources.open_source takes) or a scale table computed on
    this exact model (`calib_table`). Accuracy is measured on the held-out part of `calib_data`, or
    on `val_data` when given; FP32/FP16 builds without data use seeded random inputs (agreement
    only, no task accuracy).
    """
    settings = (settings or BuildSettings()).with_overrides(**overrides)
    return execute(plan_build(onnx_path, settings))


def execute(plan: BuildPlan) -> BuildResult:
    """Run a checked plan: reuse an identical engine, or calibrate, convert, build and verify one."""
    from trtopt.quantization.modelio import prepared_source

    if not plan.settings.force:
        cached = cached_manifest(plan.engine_dir, plan.cache_key)
        if cached is not None:
            # reusing a mostly-float INT8 engine is not a plain success either: say so again, as the build did
            if warning := (cached["model"].get("int8_coverage") or {}).get("warning"):
                log.warning("%s: %s", plan.source, warning)
            return BuildResult(plan.name, plan.engine_dir, cached, cache_hit=True, backend_reason=plan.backend_reason)
    _sweep_stale_staging(plan.engine_dir.parent, plan.name)
    with prepared_source(plan.source, plan.overrides) as work:
        return _execute(plan, work)


def _execute(plan: BuildPlan, work: Path) -> BuildResult:
    """execute() on `work`: the model every stage reads (the source, or its prepared copy: old-IR
    initializer inputs made constants, values the data feeds them applied)."""
    from trtopt.backends.onnxruntime import OnnxRuntimeRunner

    accuracy, threads = plan.settings.accuracy, plan.settings.engine.threads
    # The FP32 reference session holds a whole copy of the weights: it is open only where it is used
    # (the search, the accuracy check), not beside calibration and the Q/DQ pass, which read the
    # weights themselves; for a model of several GB that is the difference between 2x and 3x its size.
    tic = time.perf_counter()
    table = _scale_table(plan, work)
    calibration_seconds = time.perf_counter() - tic if table is not plan.table else None
    batch = _batch_size(plan.inputs, plan.profile, plan.settings.batch_size)
    mixed = ranked = None
    if plan.settings.precision == "int8" and (plan.budget or accuracy.sensitivity):
        with (OnnxRuntimeRunner(work, threads=threads) as reference,
              _evaluator(plan, work, table, batch, reference) as evaluator):
            layers = _quantized_layers(evaluator)  # read once: sensitivity and the search both rank them
            ranked = _sensitivity(evaluator, layers) if accuracy.sensitivity else None
            mixed = _mixed_precision(plan, evaluator, layers) if plan.budget else None
    float_nodes = mixed.float_nodes if mixed else ()  # the layers the accuracy-budget search kept float
    with atomic_directory(plan.engine_dir, versioned=True) as staging:
        model_file, model_info = _precision_model(plan, work, staging, table, float_nodes)
        if table is not None:
            table.save(staging / SCALE_TABLE_FILE)
        built = plan.backend.build(staging / model_file, staging, plan.options)
        manifest = _manifest(plan, staging, model_file, model_info, built, table)
        if calibration_seconds is not None and manifest["calibration"] is not None:
            manifest["calibration"]["seconds"] = round(calibration_seconds, 3)
        with OnnxRuntimeRunner(work, threads=threads) as reference:
            report, timing, data_used, first_batch = _measure_accuracy(plan, staging, manifest, reference, batch)
        if plan.settings.precision == "int8":
            manifest["model"]["int8_coverage"] = _int8_coverage(plan, work, staging / model_file, model_info,
                                                                float_nodes, first_batch)
        problems = plan.budget.violations(report, timing.get("speedup"))
        if problems:
            raise TrtoptError(
                f"engine {plan.name!r} misses the accuracy budget: " + "; ".join(problems)
                + " (nothing was written; try --exclude-op-types/--exclude-nodes, another --calib-method, or FP16)"
            )
        far_off = far_off_problems(report)
        if far_off and not accuracy.accept_loss:
            log.warning("engine %r is far off FP32: %s", plan.name, "; ".join(far_off))
        manifest["accuracy"] = {**report.to_json(), "data": data_used, "budget": plan.budget.to_json() or None,
                                "metric_settings": accuracy.metrics.to_json(), "far_off": far_off,
                                "far_off_accepted": bool(far_off) and accuracy.accept_loss}
        if mixed is not None:
            manifest["mixed_precision"] = _mixed_json(plan, mixed, calibration_seconds)
        if ranked is not None:
            atomic_write_json(staging / SENSITIVITY_FILE, ranked.to_json())
            manifest["sensitivity"] = {
                "file": SENSITIVITY_FILE, "samples": ranked.samples, "seconds": round(ranked.seconds, 3),
                "top": [{"node": e.layer.name, "op_type": e.layer.op_type, "harm": e.harm, "gain": e.gain}
                        for e in ranked.layers[:SENSITIVITY_TOP]],
            }
        manifest["timing"] = timing
        manifest["build_seconds"] = round(time.perf_counter() - plan.started, 3)
        atomic_write_json(staging / MANIFEST, manifest)
    return BuildResult(plan.name, plan.engine_dir, read_manifest(plan.engine_dir), cache_hit=False,
                       backend_reason=plan.backend_reason)


def _manifest(plan: BuildPlan, staging: Path, model_file: str, model_info: dict[str, Any], built: Any,
              table: Any) -> dict[str, Any]:
    """The manifest before the accuracy check adds its numbers (layout: trtopt.repository)."""
    engine_path = staging / built.engine_file
    return {
        "schema_version": SCHEMA_VERSION, "name": plan.name, "cache_key": plan.cache_key,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "trtopt_version": __version__,
        "command": plan.settings.command,
        "backend": {"name": plan.backend.name, "version": plan.backend_version}, "device": plan.device,
        "precision": plan.settings.precision,
        "source": {"path": os.fspath(plan.source), "sha256": plan.source_sha256},
        "model": {"file": model_file, "sha256": sha256_file(staging / model_file), **model_info},
        "engine": {"file": built.engine_file, "sha256": sha256_file(engine_path), "bytes": engine_path.stat().st_size},
        "calibration": None if table is None else {
            "table_id": table.table_id, "method": table.method, "file": SCALE_TABLE_FILE,
            "data": plan.settings.calibration.data, "samples": table.num_samples},
        "io": {"inputs": [i.to_json() for i in plan.inputs], "outputs": [o.to_json() for o in plan.outputs],
               "profile": plan.profile.to_json()},
        "build_options": build_options_json(plan),
        **built.manifest_fields,
    }


def _sweep_stale_staging(root: Path, name: str) -> None:
    import shutil

    cutoff = time.time() - STALE_STAGING_S
    for folder in root.glob(f".{name}.*.staging"):
        if folder.is_dir() and folder.stat().st_mtime < cutoff:
            shutil.rmtree(folder, ignore_errors=True)


def _scale_table(plan: BuildPlan, work: Path) -> Any:
    """The scale table: the one the plan loaded and matched, or calibrated now from the calibration data."""
    if plan.table is not None or not plan.needs_table:
        return plan.table
    from trtopt.data.sources import open_source
    from trtopt.quantization.calibrate import calibrate

    calibration = plan.settings.calibration
    data = open_source(str(calibration.data), plan.inputs, batch_size=plan.settings.batch_size,
                       max_samples=calibration.samples, seed=calibration.seed, part="calibration",
                       **plan.data.for_source(str(calibration.data)))
    # FP16's range rule needs every activation's range: an overflow anywhere turns the output into inf/NaN
    return calibrate(work, data, calibration, threads=plan.settings.engine.threads,
                     all_tensors=plan.settings.precision == "fp16", model_name=plan.source)


def _precision_model(
    plan: BuildPlan, work: Path, staging: Path, table: Any, float_nodes: Sequence[str]
) -> tuple[str, dict[str, Any]]:
    """Write the ONNX the backend builds (a copy, Q/DQ or FP16) into the staging folder; `float_nodes`
    (from the mixed-precision search) stay float in addition to --exclude-nodes.

    ``force=True`` below: the plan already matched the table against these exact bytes (or the user
    accepted a mismatch with --force), so the conversions need not hash the model again.
    """
    qdq, precision = plan.settings.qdq, plan.settings.precision
    if precision == "int8":
        from trtopt.quantization.qdq import quantize

        result = quantize(work, table, staging / "model.int8.onnx", encoding=plan.options.encoding,
                          per_channel=qdq.per_channel, exclude_nodes=sorted({*qdq.exclude_nodes, *float_nodes}),
                          exclude_op_types=qdq.exclude_op_types, force=True)
        info = {"encoding": plan.options.encoding, "quantized_activations": len(result.activations),
                "quantized_weights": len(result.weights), "missing_scales": result.missing_scales}
        if float_nodes and plan.backend.float_precision == "fp16":
            from trtopt.quantization.fp16 import convert_nodes_fp16

            # the search measured these float layers in FP32 on the CPU; the final accuracy check measures FP16
            fp16 = convert_nodes_fp16(staging / "model.int8.onnx", staging / "model.int8.onnx", float_nodes,
                                      scales=table)
            info["float_layers"] = {"precision": "fp16", "converted": fp16.converted_nodes,
                                    "kept_fp32": fp16.kept_fp32}
        elif float_nodes:
            info["float_layers"] = {"precision": "fp32", "converted": 0, "kept_fp32": {}}
        return "model.int8.onnx", info
    if precision == "fp16":
        from trtopt.quantization.fp16 import convert_fp16

        result = convert_fp16(work, staging / "model.fp16.onnx", scales=table, keep_io_types=qdq.keep_io_types,
                              exclude_nodes=qdq.exclude_nodes, exclude_op_types=qdq.exclude_op_types, force=True)
        return "model.fp16.onnx", {"kept_fp32": result.kept_fp32, "keep_io_types": qdq.keep_io_types}
    from trtopt.quantization.modelio import load_onnx, save_onnx, uses_external_data

    # external weights travel with the model (the staging folder is published as a whole)
    save_onnx(load_onnx(work), staging / "model.fp32.onnx", external=uses_external_data(work) or None)
    return "model.fp32.onnx", {}


def _int8_coverage(plan: BuildPlan, work: Path, qdq_model: Path, model_info: dict[str, Any],
                   float_nodes: Sequence[str], first_batch: tuple[dict[str, Any], int]) -> dict[str, Any]:
    """How much of the model the INT8 engine quantizes (trtopt.quantization.coverage), with each layer's
    compute measured on the FP32 model with the accuracy check's first batch (feed, rows); warns when little."""
    import onnx

    from trtopt.int8_eval import measured_macs
    from trtopt.quantization.coverage import FloatChoices, int8_coverage

    feed, rows = first_batch
    macs = {name: value / rows for name, value in measured_macs(work, feed, plan.settings.engine.threads).items()}
    choices = FloatChoices.of(plan.settings.qdq, model_info["missing_scales"], float_nodes)
    coverage = int8_coverage(onnx.load(qdq_model, load_external_data=False), choices, macs)
    if warning := coverage.warning():
        log.warning("%s: %s", plan.source, warning)
    return coverage.to_json()


def _accuracy_data(plan: BuildPlan) -> tuple[str, str]:
    """(spec, part) of the accuracy data: --val-data, else the held-out part of --calib-data, else random."""
    val_data, calib_data = plan.settings.accuracy.data, plan.settings.calibration.data
    return (val_data, "all") if val_data else (calib_data, "heldout") if calib_data else ("random", "all")


def _evaluator(plan: BuildPlan, work: Path, table: Any, batch: int, reference: Any) -> Any:
    """INT8 variants of `work` run against the open FP32 `reference` on the accuracy data (trtopt.int8_eval);
    timed against it too when the target backend is the one variants run on (ONNX Runtime on the CPU)."""
    from trtopt.int8_eval import Evaluator, load_heldout

    threads = plan.settings.engine.threads
    quant = dataclasses.replace(plan.settings.qdq, encoding=plan.options.encoding)
    spec, part = _accuracy_data(plan)
    heldout = load_heldout(reference, str(spec), part, plan.settings.accuracy.samples, batch,
                           plan.data.for_source(str(spec)))
    latency = SEARCH_LATENCY if plan.backend.name == "onnxruntime" else None
    return Evaluator(work, table, quant, heldout, plan.settings.accuracy.metrics, threads, latency)


def _quantized_layers(evaluator: Any) -> Any:
    """The Q/DQ groups of the evaluator's full INT8 placement (trtopt.int8_eval)."""
    from trtopt.int8_eval import quantized_layers

    return quantized_layers(evaluator.model_path, evaluator.table, evaluator.quant)


def _sensitivity(evaluator: Any, layers: Sequence[Any]) -> Any:
    """Per-layer sensitivity of the full INT8 model (``--sensitivity``; trtopt.sensitivity)."""
    from trtopt.sensitivity import analyze

    return analyze(evaluator, layers)


def _mixed_precision(plan: BuildPlan, evaluator: Any, layers: Sequence[Any]) -> Any:
    """Which layers to keep float so the budget holds on the held-out data (trtopt.mixed_precision)."""
    from trtopt.mixed_precision import BudgetUnreachable, search

    try:
        result = search(evaluator, layers, plan.budget)
    except BudgetUnreachable as exc:
        raise TrtoptError(f"{exc}; nothing was written") from None
    log.info("mixed precision: %d layer(s) kept float after %d variants in %.1f s", len(result.kept_float),
             result.evaluations, result.seconds)
    return result


def _mixed_json(plan: BuildPlan, mixed: Any, calibration_seconds: float | None) -> dict[str, Any]:
    """The manifest's mixed-precision section: the search's result, what float means on this backend, and
    the search's cost against the calibration it reused (the issue's bar: within a few times one calibration)."""
    cost = round(mixed.seconds / calibration_seconds, 2) if calibration_seconds else None
    return {**mixed.to_json(), "float_precision": plan.backend.float_precision,
            "calibration_seconds": None if calibration_seconds is None else round(calibration_seconds, 3),
            "cost_vs_calibration": cost}


def _measure_accuracy(plan: BuildPlan, staging: Path, manifest: dict[str, Any], reference: Any,
                      batch: int) -> tuple[Any, dict[str, Any], str, tuple[dict[str, Any], int]]:
    """Run the new engine and the FP32 ONNX on the same held-out batches, comparing every output; then time.

    Returns the report, the timing, which data it used, and the first batch as fed (feed, rows).

    Timing (trtopt.latency): the first batch, after warm-up, in interleaved rounds with a time cap;
    the fastest round counts. Speed vs FP32 is measured only where the FP32 reference runs on the
    same backend (ONNX Runtime on the CPU); elsewhere the engine is timed alone.
    """
    import numpy as np

    from trtopt.accuracy import AccuracyAccumulator
    from trtopt.data.sources import open_source
    from trtopt.latency import compare_latency
    from trtopt.progress import progress
    from trtopt.shapes import fit_profile_batch, unpad_outputs

    spec, part = _accuracy_data(plan)
    data = open_source(str(spec), plan.inputs, batch_size=batch, max_samples=plan.settings.accuracy.samples, part=part,
                       **plan.data.for_source(str(spec)))
    accumulator = AccuracyAccumulator(plan.settings.accuracy.metrics)
    timed_feed: dict[str, Any] = {}
    timed_rows = 0
    with plan.backend.load(staging, manifest) as engine:
        for item in progress(data, desc="accuracy vs FP32", unit="batch"):
            # a short last batch is padded to fit the profile; the padding is dropped from the outputs
            feed, padded = fit_profile_batch(item.feed, plan.inputs, plan.profile)
            if not timed_feed:
                timed_feed, timed_rows = feed, item.size + padded
            expected, got = reference.infer(feed), engine.infer(feed)
            accumulator.update(unpad_outputs(expected, item.size, padded),
                               unpad_outputs({k: np.asarray(v) for k, v in got.items()}, item.size, padded),
                               item.labels)
        if accumulator.samples == 0:
            raise UsageError(f"accuracy data {spec!r} ({part}) yielded no samples; pass --val-data with a few samples")
        versus_fp32 = plan.backend.name == "onnxruntime" and plan.settings.precision != "fp32"
        runs = {"engine": lambda: engine.infer(timed_feed)}
        if versus_fp32:
            runs["fp32"] = lambda: reference.infer(timed_feed)
        timed = compare_latency(runs, BUILD_LATENCY)
    timing: dict[str, Any] = {"batch": batch, "method": "fastest of interleaved rounds after warm-up"}
    if versus_fp32:
        timing.update(timed.to_json("engine", "fp32"))
    else:
        timing.update(fastest_ms=round(timed.fastest_ms["engine"], 6), median_ms=round(timed.median_ms["engine"], 6),
                      timing_rounds=timed.rounds)
    return accumulator.report(), timing, f"{spec} ({part})", (timed_feed, timed_rows)


def _batch_size(inputs: Sequence[Any], profile: Any, wanted: int) -> int:
    """A batch size every input accepts: fixed batch dims win, else capped by the profile's max.

    Inputs fed whole with every batch (scalars, a state ``[2, batch, 128]``) have no batch axis 0.
    """
    from trtopt.data.sources.base import whole_inputs

    whole = whole_inputs(inputs)
    for info in (info for info in inputs if info.name not in whole):
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
