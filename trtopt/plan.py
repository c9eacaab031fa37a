"""``plan_build()``: every decision and every user error of a build, before any work starts.

The plan resolves the backend (``--backend auto`` included), reads the model's inputs, derives the
shape profile, checks the backend's engine options, loads the scale table and matches it against
the model bytes once (``force`` accepts a mismatch), picks the engine folder and computes the cache
key. ``trtopt.pipeline.execute(plan)`` then only does work: a bad flag fails here in a fraction of
a second instead of after minutes of calibration.

Cache key: sha256 over the source ONNX bytes, precision, profile, Q/DQ encoding and settings, the
calibration and accuracy inputs, backend name/version, device, trtopt version, and only the engine
settings the chosen backend declares as engine-affecting (``Backend.engine_fields``), so changing
``--threads`` reuses a TensorRT engine but rebuilds an ONNX Runtime one (whose session records it).
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtopt import __version__
from trtopt.backends.registry import Backend, BuildOptions
from trtopt.budget import SPEEDUP, AccuracyBudget
from trtopt.errors import UsageError
from trtopt.fileio import ensure_writable_dir, sha256_bytes, sha256_file
from trtopt.settings import BuildSettings, check
from trtopt.tensors import ShapeProfile, TensorInfo
from trtopt.usercode import split_spec

# Backends that run any input shape: a dynamic dimension nobody gave needs no profile entry there.
PROFILE_FREE_BACKENDS = ("onnxruntime", "onnxruntime-cuda")


@dataclass(frozen=True)
class DataOptions:
    """What every data source of one build needs beyond the inputs: model constants, shapes, value ranges."""

    constants: Mapping[str, TensorInfo] = dataclasses.field(default_factory=dict)  # initializer-backed inputs
    profile: ShapeProfile = dataclasses.field(default_factory=ShapeProfile)
    ranges: Mapping[str, tuple[float, float]] = dataclasses.field(default_factory=dict)  # --input-range

    def for_source(self, spec: str) -> dict[str, Any]:
        """open_source() keywords; generated data takes its shapes from the profile (opt) and the ranges."""
        if spec == "random":
            return {"shapes": dict(self.profile.opt), "ranges": dict(self.ranges)}
        return {"constants": self.constants}


@dataclass(frozen=True)
class BuildPlan:
    """A checked build: what ``execute()`` needs, nothing left to decide."""

    settings: BuildSettings
    source: Path
    source_sha256: str
    backend: Backend
    backend_reason: str
    backend_version: str
    device: dict[str, Any]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    options: BuildOptions
    table: Any  # ScaleTable given with --calib-table, already matched; None when calibrating now or not needed
    budget: AccuracyBudget
    engine_dir: Path
    cache_key: str
    started: float  # perf_counter() when planning began (build_seconds counts from here)
    data: DataOptions = dataclasses.field(default_factory=DataOptions)
    # values the user's data gives for initializer-backed inputs (old IR); the prepared model uses them
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.engine_dir.name

    @property
    def profile(self) -> ShapeProfile:
        return self.options.profile

    @property
    def needs_table(self) -> bool:
        """INT8 always; FP16 when calibration data or a table is given (its ranges guide the FP16 rules)."""
        calibration = self.settings.calibration
        return self.settings.precision == "int8" or (
            self.settings.precision == "fp16" and (calibration.data is not None or calibration.table is not None))


def plan_build(onnx_path: str | os.PathLike[str], settings: BuildSettings) -> BuildPlan:
    """Resolve and check everything about building `onnx_path` with `settings` (UsageError/TrtoptError)."""
    from trtopt.backends.registry import get_backend
    from trtopt.backends.select import select_backend

    started = time.perf_counter()
    check(settings)
    from trtopt.quantization.calibrators import METHODS

    if settings.calibration.method not in METHODS:
        raise UsageError(f"--calib-method must be one of {list(METHODS)}, got {settings.calibration.method!r}")
    calibration = settings.calibration
    if settings.precision == "int8" and calibration.data is None and calibration.table is None:
        raise UsageError("--int8 needs calibration: pass --calib-data SRC (an .npz/.npy file, a folder of arrays or "
                         "images, file.py:function, or 'digits'), or --calib-table TABLE.json from `trtopt calibrate` "
                         "on this model")
    source = Path(onnx_path)
    metrics = settings.accuracy.metrics
    budget = AccuracyBudget.parse(settings.accuracy.budget, user_metrics=bool(metrics.user_metrics))
    backend_name, reason = select_backend(settings.engine.backend)
    backend = get_backend(backend_name)
    if any(item.metric == SPEEDUP for item in budget.items) and backend.name != "onnxruntime":
        raise UsageError(f"--accuracy-budget speedup=: speed vs FP32 is measured only with the onnxruntime backend, "
                         f"not {backend.name} (the FP32 reference runs on the CPU)")
    name = settings.name or f"{source.stem}-{settings.precision}"
    if not name or "/" in name or name.startswith("."):
        raise UsageError(f"--name {name!r}: expected a plain folder name")
    data = plan_data(source, settings, needs_profile=backend.name not in PROFILE_FREE_BACKENDS)
    engine_dir = ensure_writable_dir(settings.engines_dir, "engines folder") / name
    profile = data.options.profile
    encoding = settings.qdq.encoding or backend.default_encoding if settings.precision == "int8" else None
    options = BuildOptions(precision=settings.precision, profile=profile, encoding=encoding, engine=settings.engine)
    backend.check_options(options)
    source_sha256 = sha256_file(source)
    table = _matched_table(calibration.table, source_sha256, settings.force)
    plan = BuildPlan(settings=settings, source=source, source_sha256=source_sha256, backend=backend,
                     backend_reason=reason, backend_version=backend.version(), device=backend.device(),
                     inputs=data.inputs, outputs=data.outputs, options=options, table=table, budget=budget,
                     engine_dir=engine_dir, cache_key="", started=started, data=data.options, overrides=data.overrides)
    return dataclasses.replace(plan, cache_key=cache_key(plan))


@dataclass(frozen=True)
class DataPlan:
    """The model's inputs and outputs and what its data sources need (a build's, or a sensitivity run's)."""

    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    options: DataOptions
    # values the user's data gives for initializer-backed inputs (old IR); the prepared model uses them
    overrides: Mapping[str, Any]


def plan_data(source: Path, settings: BuildSettings, needs_profile: bool) -> DataPlan:
    """Read the model's inputs, the values its data gives initializer-backed inputs, --input-range, and
    the shape profile (`needs_profile`: every dynamic dimension bounded, from the flags or the data)."""
    from trtopt.backends.onnxruntime import OnnxRuntimeRunner
    from trtopt.data.sources.synthetic import parse_input_ranges
    from trtopt.quantization.modelio import initializer_inputs, load_onnx
    from trtopt.shapes import derive_profile

    calibration, shapes = settings.calibration, settings.shapes
    model = load_onnx(source)
    constants = initializer_inputs(model)
    overrides = _fed_constants(model, constants, calibration.data, settings.accuracy.data)
    del model
    ranges = shapes.input_ranges
    ranges = parse_input_ranges(ranges) if isinstance(ranges, str | None) else dict(ranges)
    with OnnxRuntimeRunner(source, threads=settings.engine.threads) as reference:
        inputs, outputs = reference.inputs, reference.outputs
    # Engines that need a profile (TensorRT) take unset dynamic dimensions from the data; ONNX Runtime
    # engines run any shape, so the data only has to fit the shapes the user gave.
    data_specs = (calibration.data, settings.accuracy.data)
    observed = _observed_shapes(inputs, data_specs, constants, settings.batch_size,
                                explicit=needs_profile or any((shapes.shapes, shapes.min_shapes, shapes.max_shapes)))
    profile = derive_profile(inputs, shapes.shapes, shapes.min_shapes, shapes.opt_shapes, shapes.max_shapes,
                             default_max_batch=shapes.max_batch, observed=observed,
                             observed_from=f"data {' and '.join(s for s in data_specs if s)}",
                             require_all=needs_profile, profile_observed=needs_profile)
    return DataPlan(inputs, outputs, DataOptions(constants, profile, ranges), overrides)


def _fed_constants(model: Any, constants: Mapping[str, TensorInfo], *specs: str | None) -> dict[str, Any]:
    """Values the user's data gives for initializer-backed inputs (old IR), checked against the initializers."""
    from trtopt.data.sources import open_source
    from trtopt.quantization.modelio import feed_inputs

    fed: dict[str, Any] = {}
    for spec in specs:
        if constants and spec and spec != "random":
            fed.update(open_source(spec, feed_inputs(model), constants=constants).constant_feeds())
    return fed


def _observed_shapes(inputs: Sequence[TensorInfo], specs: Sequence[str | None], constants: Mapping[str, TensorInfo],
                     batch_size: int, explicit: bool) -> dict[str, Any]:
    """Sizes the calibration/validation data holds, read when an input has a dynamic non-batch dimension
    and something uses them (`explicit`: a profile is needed, or shapes were given to check the data against)."""
    from trtopt.data.sources import open_source
    from trtopt.shapes import is_dynamic, observe_shapes

    if not explicit or not any(is_dynamic(d) for info in inputs for d in info.shape[1:]):
        return {}
    feeds = (batch.feed for spec in specs if spec and spec != "random"
             for batch in open_source(spec, inputs, batch_size=batch_size, constants=constants))
    return dict(observe_shapes(feeds))


def _matched_table(path: str | None, source_sha256: str, force: bool) -> Any:
    """The scale table at `path`, refused when computed on other model bytes unless `force` (the one check)."""
    if path is None:
        return None
    from trtopt.quantization.table import ScaleTable

    table = ScaleTable.load(path)
    table.ensure_matches(source_sha256, force=force)
    return table


def build_options_json(plan: BuildPlan) -> dict[str, Any]:
    """The manifest's ``build_options``: precision, profile, encoding, Q/DQ settings and the engine
    settings the backend declares engine-affecting."""
    qdq = plan.settings.qdq
    return {
        **plan.options.to_json(plan.backend.engine_fields),
        "qdq": None if plan.settings.precision == "fp32" else {
            "per_channel": qdq.per_channel, "exclude_nodes": sorted(qdq.exclude_nodes),
            "exclude_op_types": sorted(qdq.exclude_op_types), "keep_io_types": qdq.keep_io_types},
    }


def cache_key(plan: BuildPlan) -> str:
    settings, calibration, accuracy = plan.settings, plan.settings.calibration, plan.settings.accuracy
    key_parts = {
        "trtopt": __version__, "source": plan.source_sha256, "precision": settings.precision,
        "backend": plan.backend.name, "backend_version": plan.backend_version, "device": plan.device,
        "options": build_options_json(plan),
        "calibration": {"data": data_fingerprint(calibration.data), "method": calibration.method,
                        "percentile": calibration.percentile, "samples": calibration.samples,
                        "nan_policy": calibration.nan_policy,
                        "table": plan.table.table_id if plan.table is not None else None} if plan.needs_table else None,
        "accuracy": {"data": data_fingerprint(accuracy.data), "samples": accuracy.samples,
                     "budget": plan.budget.to_json(), "metrics": accuracy.metrics.to_json(),
                     "input_ranges": sorted(plan.data.ranges.items()),
                     "metric_files": [data_fingerprint(m) for m in accuracy.metrics.user_metrics],
                     "sensitivity": accuracy.sensitivity},
    }
    return sha256_bytes(repr(sorted(key_parts.items())).encode())


def data_fingerprint(spec: str | None) -> str | None:
    """Identify a data source for the cache key without reading it all (names, sizes, mtimes)."""
    if spec is None:
        return None
    path = split_spec(str(spec), "")[0]  # a loader's file (file.py:function), else the data file or folder
    if path.is_file():
        return f"{spec}@{sha256_file(path)}"
    if path.is_dir():
        listing = sorted(
            (str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*") if p.is_file()
        )
        return f"{spec}@{sha256_bytes(repr(listing).encode())}"
    return str(spec)

