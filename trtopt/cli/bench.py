"""`trtopt bench TARGET... --baseline FP32_TARGET`: latency, throughput, memory, accuracy, history.

Exit status: 0 ok, 1 failure, 2 usage error (unknown target, baseline with other inputs, bad suite
file), 3 a metric regressed against --compare-to.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from trtopt.cli.groups import ENGINE
from trtopt.usercode import CODE_WARNING
from trtopt.errors import UsageError

if TYPE_CHECKING:  # imported lazily at run time: `--help` stays fast
    from trtopt.bench.driver import BenchConfig
    from trtopt.bench.record import RecordOptions


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,8,32, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers such as 1,8,32, got {text!r}")
    return values


def _scenario_list(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench", help="benchmark engines, ONNX files and checkpoints against an FP32 baseline",
        description="Benchmark targets (engine folders, .onnx files run in ONNX Runtime, zoo checkpoints run in "
        "PyTorch) on the same inputs: latency percentiles, throughput, memory, accuracy vs the "
        "baseline. Name a target with NAME=PATH; the name keys it in the history.",
        epilog="Exit status: 0 ok, 1 failure, 2 usage error, 3 regression against --compare-to.",
    )
    parser.add_argument(
        "targets",
        nargs="*",
        metavar="TARGET",
        help="engine folder, .onnx file or checkpoint (.pt); NAME=PATH to name it",
    )
    parser.add_argument(
        "--baseline", metavar="TARGET", help="FP32 reference for accuracy (added to the targets if not among them)"
    )
    parser.add_argument(
        "--suite",
        type=Path,
        metavar="SUITE.toml",
        help="run a benchmark suite (builds missing engines) instead of TARGETs",
    )
    parser.add_argument(
        "--allow-code",
        action="store_true",
        help="let the suite's data/calib_data name file.py:fn loaders, which import and run that "
        "Python file (refused without this flag: a suite file may come from anyone)",
    )
    load = parser.add_argument_group("load")
    load.add_argument(
        "--scenarios",
        type=_scenario_list,
        metavar="LIST",
        help="comma list of single-stream, offline, server, concurrency (default: single-stream,offline, "
        "plus server with --qps and concurrency with --concurrency > 1)",
    )
    load.add_argument(
        "--batch-sizes", type=_int_list, default=(1, 8, 32), metavar="1,8,32", help="offline sweep (default 1,8,32)"
    )
    load.add_argument("--qps", type=float, help="server scenario: Poisson arrival rate (queries/s)")
    load.add_argument(
        "--duration", type=float, default=5.0, metavar="S", help="server scenario length in seconds (default 5)"
    )
    load.add_argument(
        "--concurrency",
        type=int,
        default=1,
        metavar="N",
        help="callers in parallel, each with its own runner (also server workers)",
    )
    load.add_argument(
        "--warmUp",
        dest="warmup_ms",
        type=float,
        default=200.0,
        metavar="MS",
        help="warm-up per measurement in ms, excluded (default 200)",
    )
    load.add_argument(
        "--max-time", type=float, default=5.0, metavar="S", help="time bound per measurement in seconds (default 5)"
    )
    load.add_argument(
        "--tolerance", type=float, default=0.05, help="median stability tolerance, relative (default 0.05)"
    )
    load.add_argument(
        "--torch-compile",
        action="store_true",
        help="run checkpoint targets through torch.compile (falls back to eager, noted, when it fails)",
    )
    ENGINE.add(parser, only=["threads"])
    data = parser.add_argument_group("inputs")
    data.add_argument(
        "--data",
        metavar="SRC",
        help="data source as in calibration (.npy/.npz, folder, image folder, file.py:fn, digits); labels give "
        f"task accuracy ({CODE_WARNING})",
    )
    data.add_argument(
        "--data-part",
        choices=("all", "calibration", "heldout"),
        default="heldout",
        help="part of --data to use (default heldout)",
    )
    data.add_argument("--samples", type=int, default=128, help="samples in the input pool (default 128)")
    data.add_argument("--seed", type=int, default=0, help="seed for generated inputs and server arrivals (default 0)")
    data.add_argument("--shapes", metavar="name:1x3x224x224", help="sizes of dynamic non-batch dimensions")
    out = parser.add_argument_group("reports and history")
    out.add_argument(
        "--json", type=Path, metavar="FILE", help="write the JSON report (schema: trtopt/bench/report.schema.json)"
    )
    out.add_argument("--markdown", type=Path, metavar="FILE", help="write a Markdown report")
    out.add_argument("--html", type=Path, metavar="FILE", help="write a self-contained HTML report with plots")
    out.add_argument(
        "--history",
        metavar="PATH",
        help="SQLite history (default $TRTOPT_BENCH_HISTORY or ~/.cache/trtopt/bench-history.sqlite)",
    )
    out.add_argument("--no-history", action="store_true", help="do not store this run")
    out.add_argument(
        "--compare-to", metavar="last|RUN_ID", help="flag metrics that moved against a stored run; exit 3 on regression"
    )
    out.add_argument(
        "--threshold", type=float, default=None, metavar="FRACTION", help="relative change that counts (default 0.15)"
    )
    out.add_argument(
        "--spread-k", type=float, default=None, metavar="K", help="...and more than K x the measured spread (default 3)"
    )
    out.add_argument("--label", help="label stored with the run (--compare-to last compares within the label)")
    parser.set_defaults(func=run)


def _config(args: argparse.Namespace) -> BenchConfig:
    from trtopt.bench.driver import BenchConfig
    from trtopt.bench.scenarios import CONCURRENCY, OFFLINE, SERVER, SINGLE_STREAM

    chosen = args.scenarios
    if chosen is None:
        chosen = (
            (SINGLE_STREAM, OFFLINE)
            + ((SERVER,) if args.qps else ())
            + ((CONCURRENCY,) if args.concurrency > 1 else ())
        )
    return BenchConfig(
        scenarios=chosen,
        batch_sizes=args.batch_sizes,
        qps=args.qps,
        duration_s=args.duration,
        concurrency=args.concurrency,
        seed=args.seed,
        samples=args.samples,
        data=args.data,
        data_part=args.data_part,
        shapes=args.shapes,
        threads=ENGINE.parse(args).threads,
        warmup_s=args.warmup_ms / 1000.0,
        max_time_s=args.max_time,
        tolerance=args.tolerance,
        torch_compile=args.torch_compile,
        label=args.label,
    )


def _record_options(args: argparse.Namespace) -> RecordOptions:
    from trtopt.bench.compare import DEFAULT_SPREAD_K, DEFAULT_THRESHOLD
    from trtopt.bench.record import RecordOptions

    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    spread_k = DEFAULT_SPREAD_K if args.spread_k is None else args.spread_k
    if threshold < 0 or spread_k < 0:
        raise UsageError("--threshold and --spread-k must not be negative")
    return RecordOptions(history=args.history, store=not args.no_history, compare_to=args.compare_to,
                         threshold=threshold, spread_k=spread_k, json_path=args.json,
                         markdown_path=args.markdown, html_path=args.html)


def run(args: argparse.Namespace) -> int:
    from trtopt.bench import report_terminal
    from trtopt.bench.driver import benchmark
    from trtopt.bench.record import record

    options = _record_options(args)
    if args.suite is not None:
        if args.targets or args.baseline:
            raise UsageError("--suite runs the suite's own targets; drop the TARGET arguments and --baseline")
        from trtopt.bench.suite import run_suite

        return run_suite(args.suite, history=args.history, compare_to=args.compare_to, threshold=args.threshold,
                         spread_k=args.spread_k, store=not args.no_history, allow_code=args.allow_code)
    if not args.targets and not args.baseline:
        raise UsageError(
            "no targets given; pass TARGET... (engine folders, .onnx files, checkpoints) or --suite SUITE.toml"
        )
    report = benchmark(args.targets, args.baseline, _config(args))
    try:
        record(report, options)
    finally:
        print(report_terminal.render(report))
    return 0
