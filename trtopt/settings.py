"""Build settings: frozen dataclasses, the one place where a build option and its default are written.

``BuildSettings`` is composed of small parts, one per concern: calibration, Q/DQ, shapes, engine
and accuracy. The Python API (``build(onnx, settings=None, **overrides)``), the CLI's argument
groups and benchmark suites all produce these objects, so a default is never written twice.
Nothing here imports onnx, onnxruntime or torch (only the accuracy metric and budget types, which
are numpy-only): settings are plain data, checked by
``trtopt.plan.plan_build`` before any work starts.

Each field may carry metadata:

* ``help``: the help text the CLI group shows for the field's flag;
* ``keyword``: its name as a flat keyword of ``build(**overrides)`` when that is not
  ``<part prefix><field>`` (``PART_PREFIXES``), e.g. ``val_data`` for ``accuracy.data``.

Adding a build setting: add the field (with its default and ``help``) to the part it belongs to,
read it where it is used, and, when it changes the engine a backend builds, name it in that
backend's ``engine_fields`` (see docs/ARCHITECTURE.md, "Adding a setting").
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtopt.accuracy import MetricSettings
from trtopt.budget import AccuracyBudget
from trtopt.errors import UsageError
from trtopt.usercode import CODE_WARNING

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_MAX_BATCH = 32  # the batch axis of the default profile is capped here (TensorRT and ONNX Runtime alike)

ShapesArgument = str | Mapping[str, Sequence[int]] | None


def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass(frozen=True)
class CalibrationSettings:
    """Where INT8 scales come from (a scale table, or calibration data and a method)."""

    data: str | None = field(default=None, metadata=_help(
        "calibration data: digits | random | FILE.npz/.npy | FOLDER (arrays or images) | FILE.py[:FUNCTION] "
        f"({CODE_WARNING})"))
    table: str | None = field(default=None, metadata=_help(
        "scale table JSON from `trtopt calibrate` on this model (instead of calibration data)"))
    # one of trtopt.quantization.calibrators.METHODS (checked there and by the plan)
    method: str = field(default="auto", metadata=_help(
        "calibration method; auto: per tensor, the candidate (entropy, percentiles, MSE, max) with the "
        "least quantization error"))
    percentile: float = field(default=99.99, metadata=_help("for the percentile method"))
    samples: int | None = field(default=512, metadata=_help("most calibration samples to use"))
    seed: int = field(default=0, metadata=_help("seed for random calibration data"))
    nan_policy: str = field(default="error", metadata=_help(
        "NaN/Inf in an activation: error (fail naming tensor and batch) or skip them"))
    # one of trtopt.quantization.providers.DEVICES (checked there)
    device: str = field(default="auto", metadata=_help(
        "where the calibration forward pass runs: auto (ONNX Runtime's CUDA provider when onnxruntime-gpu and a "
        "CUDA device are present, else the CPU), cpu, cuda, tensorrt"))

    def problems(self) -> list[str]:
        found = []
        if self.method == "percentile" and not 0 < self.percentile <= 100:
            found.append(f"--percentile must be in (0, 100], got {self.percentile}")
        if self.samples is not None and self.samples < 1:
            found.append(f"--calib-samples must be positive, got {self.samples}")
        if self.nan_policy not in ("error", "skip"):
            found.append(f"--nan-policy must be 'error' or 'skip', got {self.nan_policy!r}")
        return found


@dataclass(frozen=True)
class QdqSettings:
    """How the precision model is written: Q/DQ encoding and what stays in float (INT8 and FP16)."""

    encoding: str | None = field(default=None, metadata=_help(
        "Q/DQ encoding (when not given: the build backend's own: tensorrt for TensorRT; on the ONNX Runtime CPU "
        "backend onnxruntime-vnni where the CPU has VNNI/AMX int8 dot products, else onnxruntime-cpu; "
        "quantize writes the portable onnxruntime-cpu)"))
    per_channel: bool = field(default=True, metadata=_help("one scale per output channel of a weight"))
    exclude_nodes: tuple[str, ...] = field(default=(), metadata=_help("node names kept in float"))
    exclude_op_types: tuple[str, ...] = field(default=(), metadata=_help("op types kept in float"))
    keep_io_types: bool = field(default=True, metadata=_help("FP16 models keep FP32 inputs and outputs"))


@dataclass(frozen=True)
class ShapeSettings:
    """The optimization profile, in trtexec spelling (see trtopt.shapes for the rules)."""

    shapes: ShapesArgument = field(default=None, metadata=_help("input shapes, e.g. input:8x3x224x224 (min=opt=max)"))
    min_shapes: ShapesArgument = field(default=None, metadata=_help("profile minimum shapes"))
    opt_shapes: ShapesArgument = field(default=None, metadata=_help("profile optimum shapes"))
    max_shapes: ShapesArgument = field(default=None, metadata=_help("profile maximum shapes"))
    max_batch: int = field(default=DEFAULT_MAX_BATCH, metadata=_help(
        "batch axis cap of the default profile: without --max-shapes a dynamic batch axis is built for 1..N, "
        "with every backend (ONNX Runtime engines reject larger batches too)"))
    input_ranges: str | Mapping[str, tuple[float, float]] | None = field(default=None, metadata=_help(
        "value range of generated (random) data per input, NAME:LOW:HIGH,... e.g. ids:0:30522 (inclusive); "
        "integer inputs need one when no --calib-data/--val-data is given"))


@dataclass(frozen=True)
class EngineSettings:
    """What the backend is asked to build. Each backend reads the fields it understands and names the
    ones that change its engine in ``engine_fields`` (only those enter the cache key and manifest)."""

    backend: str = field(default="auto", metadata=_help(
        "auto | onnxruntime | tensorrt | onnxruntime-cuda | onnxruntime-tensorrt (auto says what it picked and why)"))
    threads: int | None = field(default=None, metadata=_help(
        "intra-op CPU threads of ONNX Runtime sessions (default: all cores)"))
    workspace_bytes: int | None = field(default=None, metadata=_help("TensorRT workspace, e.g. 4G"))
    opt_level: int | None = field(default=None, metadata=_help("TensorRT builder optimization level 0-5 (default 3)"))
    tf32: bool = field(default=True, metadata=_help("TF32 for FP32 convolutions and matrix multiplies"))
    version_compatible: bool = field(default=False, metadata=_help(
        "TensorRT engine that runs on later TensorRT releases of the same major version"))
    hardware_compat: str = field(default="none", metadata=_help(
        "TensorRT hardware compatibility level (none: this GPU model only)"))
    timing_cache: str | None = field(default=None, metadata=_help("TensorRT timing cache file (read and updated)"))
    contexts: int = field(default=1, metadata=_help(
        "TensorRT: optimization profiles built, i.e. execution contexts that may run concurrently"))

    def to_json(self, names: Sequence[str] | None = None) -> dict[str, Any]:
        """The named fields (all when None) as JSON values."""
        values = dataclasses.asdict(self)
        return {name: values[name] for name in (names if names is not None else values)}

    def problems(self) -> list[str]:
        found = []
        if self.threads is not None and self.threads < 1:
            found.append(f"--threads must be positive, got {self.threads}")
        if self.workspace_bytes is not None and self.workspace_bytes <= 0:
            found.append(f"--workspace must be positive, got {self.workspace_bytes} bytes")
        if self.opt_level is not None and not 0 <= self.opt_level <= 5:
            found.append(f"--opt-level {self.opt_level}: expected 0 to 5")
        if self.contexts < 1:
            found.append(f"--contexts must be a positive integer, got {self.contexts}")
        return found


@dataclass(frozen=True)
class AccuracySettings:
    """The accuracy check against FP32 that every build runs, and the budget it must meet."""

    data: str | None = field(default=None, metadata=_help(
        f"accuracy data, same forms as --calib-data (when not given: its held-out part; {CODE_WARNING})",
        keyword="val_data"))
    samples: int = field(default=512, metadata=_help("most samples for the accuracy check"))
    budget: str | Mapping[str, float] | AccuracyBudget | None = field(default=None, metadata=_help(
        "METRIC[@OUTPUT]=VALUE,...: agreement=, cosine=, snr=DB, iou=, max-abs-error=, mean-abs-error=, "
        "top1-drop=POINTS, a --metric score name, speedup=X (vs FP32). With --int8, the most harmful "
        "layers are kept float until it holds; fails (keeping nothing) when no assignment meets it"))
    metrics: MetricSettings = field(default_factory=MetricSettings, metadata=_help(
        "how outputs are compared with FP32 (class axes, IoU threshold, user metrics)", keyword="metrics"))
    accept_loss: bool = field(default=False, metadata=_help(
        "do not warn on the terminal when the engine is far off FP32 (the manifest still records it)",
        keyword="accept_accuracy_loss"))
    sensitivity: bool = field(default=False, metadata=_help(
        "with --int8: also measure every quantized layer's effect on the accuracy data (INT8 alone / float alone) "
        "and record the ranking in the engine folder (sensitivity.json; costs two variants per layer)",
        keyword="sensitivity"))


# part name -> (settings class, prefix of its flat keyword names in build(**overrides))
PARTS: dict[str, tuple[type, str]] = {
    "calibration": (CalibrationSettings, "calib_"),
    "qdq": (QdqSettings, ""),
    "shapes": (ShapeSettings, ""),
    "engine": (EngineSettings, ""),
    "accuracy": (AccuracySettings, "accuracy_"),
}


@dataclass(frozen=True)
class BuildSettings:
    """Everything one ``trtopt build`` takes."""

    precision: str = field(default="fp32", metadata=_help("fp32 | fp16 | int8"))
    name: str | None = field(default=None, metadata=_help("engine name (MODEL-PRECISION when not given)"))
    engines_dir: str = field(default="engines", metadata=_help("engine repository folder"))
    batch_size: int = field(
        default=32, metadata=_help("samples per inference batch (calibration and the accuracy check)")
    )
    force: bool = field(
        default=False,
        metadata=_help(
            "do the work even when it would be skipped or refused: rebuild an identical engine, accept a scale "
            "table computed on other model bytes"
        ),
    )
    command: str | None = field(
        default=None,
        metadata=_help("the command line that asked for this build, recorded so load() can say how to rebuild"),
    )
    calibration: CalibrationSettings = field(default_factory=CalibrationSettings)
    qdq: QdqSettings = field(default_factory=QdqSettings)
    shapes: ShapeSettings = field(default_factory=ShapeSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    accuracy: AccuracySettings = field(default_factory=AccuracySettings)

    def with_overrides(self, **overrides: Any) -> BuildSettings:
        """A copy with flat keywords applied (``calib_data=``, ``threads=``, ``val_data=`` ...; see
        :func:`keywords`); an unknown keyword is a TypeError, as for any Python call."""
        table = keywords()
        unknown = sorted(set(overrides) - set(table))
        if unknown:
            raise TypeError(f"unknown build setting(s) {unknown}; known: {sorted(table)}")
        top: dict[str, Any] = {}
        parts: dict[str, dict[str, Any]] = {}
        for keyword, value in overrides.items():
            part, name = table[keyword]
            if part is None:
                top[name] = str(value) if isinstance(value, Path) else value
            else:
                parts.setdefault(part, {})[name] = _normalized(value)
        for part, values in parts.items():
            top[part] = dataclasses.replace(getattr(self, part), **values)
        return dataclasses.replace(self, **top)

    def problems(self) -> list[str]:
        found = [] if self.precision in PRECISIONS else [
            f"precision {self.precision!r} is unknown; use one of {PRECISIONS} (--fp16 / --int8)"]
        if self.batch_size < 1:
            found.append(f"--batch-size must be positive, got {self.batch_size}")
        if self.accuracy.samples < 1:
            found.append(f"--accuracy-samples must be positive, got {self.accuracy.samples}")
        return found + self.calibration.problems() + self.engine.problems()


def keywords() -> dict[str, tuple[str | None, str]]:
    """Flat keyword of ``build(**overrides)`` -> (part name or None for a top-level field, field name)."""
    table: dict[str, tuple[str | None, str]] = {
        f.name: (None, f.name) for f in dataclasses.fields(BuildSettings) if f.name not in PARTS}
    for part, (cls, prefix) in PARTS.items():
        for f in dataclasses.fields(cls):
            table[f.metadata.get("keyword", prefix + f.name)] = (part, f.name)
    return table


def _normalized(value: Any) -> Any:
    """Lists become tuples (settings are frozen and hashable); paths become strings."""
    if isinstance(value, list | set | frozenset):
        return tuple(sorted(value)) if isinstance(value, set | frozenset) else tuple(value)
    if isinstance(value, Path):
        return str(value)
    return value


def check(settings: BuildSettings) -> None:
    """UsageError listing every problem the settings have on their own (before any file is read)."""
    found = settings.problems()
    if found:
        raise UsageError("; ".join(found))
