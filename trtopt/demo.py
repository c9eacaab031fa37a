"""The main job (`make demo`): train the bundled CNN with DDP, export, build FP32/FP16/INT8, benchmark.

`run_demo` is a list of steps sharing one `DemoResult`; later stages (calibrate, build FP32/FP16/
INT8, compare) append their steps to `DEMO_STEPS` and their rows to the result's summary, so the
demo grows without rewriting what is there.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtopt.errors import UsageError
from trtopt.fileio import atomic_write_json, atomic_write_text, ensure_writable_dir

DEMO_EPOCHS = 20  # lenet on digits, 2 processes x batch 32: 98.5%, 98.2%, 98.2%, 97.8% test accuracy for seeds 0-3


@dataclass
class DemoOptions:
    out_dir: Path
    epochs: int = DEMO_EPOCHS
    nproc: int = 2
    seed: int = 0

    def __post_init__(self) -> None:  # before any step writes or trains
        for flag, value in (("--epochs", self.epochs), ("--nproc", self.nproc)):
            if value < 1:
                raise UsageError(f"{flag} must be at least 1, got {value}")


@dataclass
class DemoResult:
    """Artefacts and numbers of the demo so far; each step reads what earlier steps left."""

    options: DemoOptions
    checkpoint: Path | None = None
    onnx: Path | None = None
    summary: dict[str, Any] = field(default_factory=dict)  # step name -> its numbers
    builds: list[Any] = field(default_factory=list)  # trtopt.pipeline.BuildResult per precision
    bench_report: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"out_dir": str(self.options.out_dir), "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                "onnx": str(self.onnx) if self.onnx else None, "steps": self.summary}


def step_train(result: DemoResult) -> None:
    from trtopt.train import TrainConfig, train

    opts = result.options
    trained = train(TrainConfig(model="lenet", dataset="digits", out=str(opts.out_dir / "train"), epochs=opts.epochs,
                                nproc=opts.nproc, seed=opts.seed))
    result.checkpoint = Path(trained.checkpoint)
    result.summary["train"] = {"model": "lenet", "dataset": "digits", "processes": trained.world_size,
                               "epochs": trained.epochs_done, "test_accuracy": trained.test_accuracy,
                               "wall_time_s": trained.wall_time_s}


def step_export(result: DemoResult) -> None:
    from trtopt.export import export_onnx

    assert result.checkpoint is not None, "step_export runs after step_train"
    exported = export_onnx(result.checkpoint, result.options.out_dir / "lenet.onnx")
    result.onnx = Path(exported.path)
    result.summary["export"] = {"onnx": exported.path, "opset": exported.opset, "max_abs_diff": exported.max_abs_diff,
                                "batch_sizes": list(exported.batch_sizes)}


DEMO_PRECISIONS = ("fp32", "fp16", "int8")


def step_build(result: DemoResult) -> None:
    """FP32, FP16 and INT8 engines; INT8 calibrates on the digits validation split, all are checked on test."""
    from trtopt.pipeline import build

    assert result.onnx is not None, "step_build runs after step_export"
    engines = result.options.out_dir / "engines"
    result.builds = [build(result.onnx, precision=precision, calib_data="digits", engines_dir=engines,
                           name=f"lenet-{precision}") for precision in DEMO_PRECISIONS]
    result.summary["build"] = {r.precision: {"engine_dir": str(r.engine_dir), "backend": r.manifest["backend"],
                                             "accuracy": r.accuracy, "engine_bytes": r.engine_bytes,
                                             "cache_hit": r.cache_hit} for r in result.builds}


def step_bench(result: DemoResult) -> None:
    """Latency and throughput of each engine against the FP32 one on the digits test split."""
    from trtopt.bench import benchmark
    from trtopt.bench import report_html, report_json

    engines = {r.precision: str(r.engine_dir) for r in result.builds}
    report = benchmark([engines["fp16"], engines["int8"]], baseline=engines["fp32"], data="digits",
                       batch_sizes=(1, 32), max_time_s=3.0, samples=256)
    out = result.options.out_dir
    atomic_write_text(out / "bench.json", report_json.dumps(report))
    atomic_write_text(out / "bench.html", report_html.render(report))
    result.bench_report = report
    result.summary["bench"] = {"json": str(out / "bench.json"), "html": str(out / "bench.html")}


DEMO_STEPS: list[tuple[str, Callable[[DemoResult], None]]] = [
    ("train", step_train), ("export", step_export), ("build", step_build), ("bench", step_bench)]


def run_demo(out_dir: str | Path, *, epochs: int = DEMO_EPOCHS, nproc: int = 2, seed: int = 0,
             on_step: Callable[[str], None] | None = None) -> DemoResult:
    """Run every step in order into `out_dir`; OUT/demo.json records the summary."""
    options = DemoOptions(Path(out_dir), epochs=epochs, nproc=nproc, seed=seed)
    ensure_writable_dir(out_dir)
    result = DemoResult(options)
    for name, step in DEMO_STEPS:
        if on_step:
            on_step(name)
        step(result)
    atomic_write_json(options.out_dir / "demo.json", result.to_json())
    return result


def format_summary(result: DemoResult) -> str:
    """Human-readable lines for the terminal."""
    lines = []
    train = result.summary.get("train")
    if train:
        lines.append(f"train   lenet on digits, {train['processes']} processes, {train['epochs']} epochs, "
                     f"{train['wall_time_s']:.1f} s: test accuracy {100 * train['test_accuracy']:.2f}%")
    export = result.summary.get("export")
    if export:
        lines.append(f"export  {export['onnx']} (opset {export['opset']}): max abs diff vs torch "
                     f"{export['max_abs_diff']:.3g} at batch {', '.join(map(str, export['batch_sizes']))}")
    if result.builds:
        from trtopt.pipeline import format_comparison

        lines += ["", "build   engines vs FP32 on the digits test split:", format_comparison(result.builds)]
    if result.bench_report:
        from trtopt.bench import report_terminal

        lines += ["", report_terminal.render(result.bench_report),
                  f"bench   reports: {result.summary['bench']['html']}, {result.summary['bench']['json']}"]
    return "\n".join(lines)
