"""Scheduled benchmark suites: models x precisions x backends from one TOML file.

A suite run builds what is missing (ONNX export from a checkpoint, engines via trtopt.pipeline.build, both
cache hits when already there), benchmarks each model's engines against its FP32 ONNX on the same
inputs, writes JSON/Markdown/HTML reports per model, stores every run in the history under the
label ``SUITE/MODEL``, compares with the previous run of that label, and exits 3 when any model
regressed (after every model ran and every report was written). Format: docs/BENCH.md.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtopt.bench.compare import DEFAULT_SPREAD_K, DEFAULT_THRESHOLD
from trtopt.bench.driver import BenchConfig, benchmark
from trtopt.bench.record import RecordOptions, record
from trtopt.usercode import runs_code
from trtopt.errors import RegressionDetected, UsageError
from trtopt.fileio import read_toml

log = logging.getLogger("trtopt.bench")

PRECISIONS = ("fp32", "fp16", "int8")
_SUITE_KEYS = {"name", "engines_dir", "reports_dir", "history", "compare_to", "threshold", "spread_k"}


def _list_of(kind: type) -> Callable[[Any], tuple[Any, ...]]:
    """A converter for TOML lists whose items must all be `kind` (tuple() would split a string into letters)."""
    def convert(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list) or not all(type(item) is kind for item in value):
            raise ValueError(f"expected a list of {kind.__name__} values")
        return tuple(value)
    return convert


# suite file key -> (BenchConfig field, converter)
_BENCH_KEYS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "scenarios": ("scenarios", _list_of(str)), "batch_sizes": ("batch_sizes", _list_of(int)), "qps": ("qps", float),
    "duration": ("duration_s", float), "concurrency": ("concurrency", int), "seed": ("seed", int),
    "samples": ("samples", int), "data": ("data", str), "data_part": ("data_part", str), "shapes": ("shapes", str),
    "threads": ("threads", int), "warmup_ms": ("warmup_s", lambda ms: float(ms) / 1000.0),
    "max_time": ("max_time_s", float), "tolerance": ("tolerance", float), "torch_compile": ("torch_compile", bool),
}
_MODEL_KEYS = {"name", "onnx", "checkpoint", "precisions", "backends", "calib_data", "baseline", *_BENCH_KEYS}


@dataclass
class SuiteModel:
    name: str
    onnx: Path
    checkpoint: Path | None
    precisions: list[str]
    backends: list[str]
    calib_data: str | None
    baseline: str  # "onnx" (the FP32 ONNX in ONNX Runtime) or "checkpoint" (PyTorch eager)
    bench: dict[str, Any] = field(default_factory=dict)


@dataclass
class Suite:
    path: Path
    name: str
    engines_dir: Path
    reports_dir: Path
    history: Path | None
    compare_to: str | None
    threshold: float
    spread_k: float
    bench: dict[str, Any]
    models: list[SuiteModel]


def _fail(path: Path, message: str) -> UsageError:
    return UsageError(f"suite {path}: {message}")


def _bench_options(path: Path, where: str, table: Mapping[str, Any]) -> dict[str, Any]:
    options = {}
    for key, value in table.items():
        if key not in _BENCH_KEYS:
            continue
        name, convert = _BENCH_KEYS[key]
        try:
            options[name] = convert(value)
        except (TypeError, ValueError) as exc:
            raise _fail(path, f"{where}.{key} = {value!r} is not valid ({exc})") from None
    return options


def _check_keys(path: Path, where: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    if not isinstance(table, dict):
        raise _fail(path, f"[{where}] must be a table, got {table!r}")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise _fail(path, f"unknown key(s) {unknown} in [{where}]; allowed: {', '.join(sorted(allowed))}")


def _string_list(path: Path, where: str, value: Any, allowed: tuple[str, ...] | None = None) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _fail(path, f"{where} must be a non-empty list of strings, got {value!r}")
    bad = [v for v in value if allowed is not None and v not in allowed]
    if bad:
        raise _fail(path, f"{where} has {bad}; choose from {', '.join(allowed or ())}")
    return list(value)


def _model(path: Path, index: int, table: Any) -> SuiteModel:
    where = f"models[{index}]"
    if not isinstance(table, dict):
        raise _fail(path, f"{where} must be a table ([[models]])")
    _check_keys(path, where, table, _MODEL_KEYS)
    name = table.get("name")
    if not isinstance(name, str) or not name or "/" in name:
        raise _fail(path, f"{where}.name must be a plain name such as \"lenet\"")
    checkpoint = _path(path, f"{where}.checkpoint", table["checkpoint"]) if "checkpoint" in table else None
    if "onnx" not in table and checkpoint is None:
        raise _fail(path, f"{where} ({name}) needs onnx = \"model.onnx\" or checkpoint = \"model.pt\"")
    onnx = _path(path, f"{where}.onnx", table.get("onnx", f"{name}.onnx"))
    baseline = table.get("baseline", "onnx")
    if baseline not in ("onnx", "checkpoint") or (baseline == "checkpoint" and checkpoint is None):
        raise _fail(path, f"{where}.baseline must be \"onnx\" or \"checkpoint\" (the latter needs checkpoint =)")
    precisions = _string_list(path, f"{where}.precisions", table.get("precisions", ["fp32"]), PRECISIONS)
    calib_data = table.get("calib_data")
    if calib_data is not None and not isinstance(calib_data, str):
        raise _fail(path, f"{where}.calib_data must be a data source string such as \"digits\", got {calib_data!r}")
    if "int8" in precisions and calib_data is None:
        raise _fail(path, f'{where} ({name}) builds int8 and needs calib_data = "SRC" (e.g. "digits")')
    return SuiteModel(
        name,
        onnx,
        checkpoint,
        precisions,
        _string_list(path, f"{where}.backends", table.get("backends", ["onnxruntime"])),
        calib_data,
        baseline,
        _bench_options(path, where, table),
    )


def _path(path: Path, where: str, value: Any) -> Path:
    """A path from the suite file, relative to it."""
    if not isinstance(value, str) or not value:
        raise _fail(path, f"{where} must be a path string, got {value!r}")
    return path.parent / value


def _number(path: Path, where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(path, f"{where} must be a number, got {value!r}")
    return float(value)


def _compare_to(path: Path, value: Any) -> str:
    if not isinstance(value, str) or not (value == "last" or value.isdigit()):
        raise _fail(path, f"suite.compare_to must be \"last\" or a run id string such as \"12\", got {value!r}")
    return value


def _refuse_code(path: Path, where: str, table: Mapping[str, Any]) -> None:
    """A suite may come from anyone: its Python loaders run only when the user says --allow-code."""
    for key in ("data", "calib_data"):
        if key in table and runs_code(table[key]):
            raise _fail(path, f"{where}.{key} = {table[key]!r} is a Python loader: it would import and run that file. "
                              "Pass --allow-code if you trust this suite's code")


def load_suite(path: str | Path, allow_code: bool = False) -> Suite:
    """Parse and check a suite file; every problem is a UsageError naming the file and key.

    ``file.py[:fn]`` data loaders are refused unless `allow_code` (``--allow-code``): they run code.
    """
    file = Path(path)
    data = read_toml(file, "suite file")
    _check_keys(file, "top level", data, {"suite", "bench", "models"})
    head = data.get("suite", {})
    _check_keys(file, "suite", head, _SUITE_KEYS)
    bench = data.get("bench", {})
    _check_keys(file, "bench", bench, set(_BENCH_KEYS))
    models = data.get("models")
    if not isinstance(models, list) or not models:
        raise _fail(file, "no models; add at least one [[models]] table")
    parsed = [_model(file, i, m) for i, m in enumerate(models)]
    if not allow_code:
        _refuse_code(file, "bench", bench)
        for index, table in enumerate(models):
            _refuse_code(file, f"models[{index}]", table)
    names = [m.name for m in parsed]
    if len(set(names)) != len(names):
        raise _fail(file, f"model names must be unique, got {names}")
    return Suite(
        path=file, name=str(head.get("name", file.stem)),
        engines_dir=_path(file, "suite.engines_dir", head.get("engines_dir", "engines")),
        reports_dir=_path(file, "suite.reports_dir", head.get("reports_dir", "bench-reports")),
        history=_path(file, "suite.history", head["history"]) if "history" in head else None,
        compare_to=_compare_to(file, head.get("compare_to", "last")),
        threshold=_number(file, "suite.threshold", head.get("threshold", DEFAULT_THRESHOLD)),
        spread_k=_number(file, "suite.spread_k", head.get("spread_k", DEFAULT_SPREAD_K)),
        bench=_bench_options(file, "bench", bench),
        models=parsed,
    )


def _ensure_onnx(model: SuiteModel) -> None:
    if model.onnx.is_file():
        return
    if model.checkpoint is None:
        raise UsageError(
            f"model {model.name}: {model.onnx} does not exist and no checkpoint is given to export it from"
        )
    from trtopt.export import export_onnx

    log.info("exporting %s -> %s", model.checkpoint, model.onnx)
    export_onnx(model.checkpoint, model.onnx)


def _ensure_engines(model: SuiteModel, suite: Suite, config: BenchConfig) -> list[str]:
    """Engine folders for every precision x backend, built when missing; returns NAME=PATH specs."""
    from trtopt.pipeline import build

    specs = []
    for backend in model.backends:
        for precision in model.precisions:
            name = f"{model.name}-{precision}-{backend}"
            folder = suite.engines_dir / name
            if not (folder / "manifest.json").is_file():
                log.info("building %s", name)
                build(model.onnx, precision=precision, calib_data=model.calib_data if precision == "int8" else None,
                      val_data=config.data, backend=backend, name=name, engines_dir=suite.engines_dir,
                      threads=config.threads)
            specs.append(f"{name}={folder}")
    return specs


def run_suite(
    path: str | Path,
    history: str | None = None,
    compare_to: str | None = None,
    threshold: float | None = None,
    spread_k: float | None = None,
    store: bool = True,
    printer: Callable[[str], None] = print,
    allow_code: bool = False,
) -> int:
    """Run every model of the suite; raises RegressionDetected (exit 3) after all models ran."""
    from trtopt.bench import report_terminal

    suite = load_suite(path, allow_code=allow_code)
    regressed: list[str] = []
    for model in suite.models:
        config = BenchConfig(**{**suite.bench, **model.bench, "label": f"{suite.name}/{model.name}"})
        config.validate()
        _ensure_onnx(model)
        targets = _ensure_engines(model, suite, config)
        baseline = (
            f"{model.name}-fp32-onnx={model.onnx}"
            if model.baseline == "onnx"
            else f"{model.name}-eager={model.checkpoint}"
        )
        report = benchmark(targets, baseline, config)
        stem = suite.reports_dir / model.name
        options = RecordOptions(
            history=history or suite.history,
            store=store,
            compare_to=compare_to or suite.compare_to,
            threshold=suite.threshold if threshold is None else threshold,
            spread_k=suite.spread_k if spread_k is None else spread_k,
            json_path=stem.with_suffix(".json"),
            markdown_path=stem.with_suffix(".md"),
            html_path=stem.with_suffix(".html"),
        )
        try:
            record(report, options)
        except RegressionDetected as exc:
            regressed.append(f"{model.name}: {exc}")
        finally:
            printer(f"== {suite.name}/{model.name}\n{report_terminal.render(report)}\n")
    if regressed:
        raise RegressionDetected("; ".join(regressed))
    return 0
