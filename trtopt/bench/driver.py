"""Runs every target through the chosen scenarios on the same samples and builds the report dict.

Targets run one after another, the baseline first: its outputs on the sample pool are the
reference for every other target's accuracy, and its inputs define what the others must accept.
Each target's memory is measured from just before it is loaded until its runners are closed.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from trtopt.accuracy import compare_outputs
from trtopt.backends.base import Runner
from trtopt.tensors import TensorInfo
from trtopt.bench import environment, scenarios
from trtopt.bench.inputs import (QueryLibrary, SamplePool, allowed_batch_sizes, check_compatible, data_pool,
                                 generated_pool)
from trtopt.bench.memory import PeakRss
from trtopt.bench.stability import StabilityPolicy
from trtopt.bench.targets import Target, resolve_targets
from trtopt.errors import UsageError
from trtopt.ortsession import check_threads
from trtopt.progress import progress

log = logging.getLogger("trtopt.bench")

SCHEMA_ID = "trtopt-bench-report"
SCHEMA_VERSION = 1
_ACCURACY_BATCH = 32


@dataclass
class BenchConfig:
    """Every knob of a benchmark run; recorded verbatim in the report."""

    scenarios: tuple[str, ...] = (scenarios.SINGLE_STREAM, scenarios.OFFLINE)
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    qps: float | None = None
    duration_s: float = 5.0
    concurrency: int = 1
    seed: int = 0
    samples: int = 128
    data: str | None = None
    data_part: str = "heldout"
    shapes: str | None = None
    threads: int | None = None
    warmup_s: float = 0.2
    max_time_s: float = 5.0
    tolerance: float = 0.05
    torch_compile: bool = False
    label: str | None = None  # e.g. the suite name; stored in the history
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        unknown = [s for s in self.scenarios if s not in scenarios.ALL_SCENARIOS]
        if unknown or not self.scenarios:
            raise UsageError(
                f"--scenarios: unknown {unknown or 'empty list'}; choose from {', '.join(scenarios.ALL_SCENARIOS)}"
            )
        if scenarios.SERVER in self.scenarios and (self.qps is None or self.qps <= 0):
            raise UsageError("the server scenario needs --qps with a positive rate")
        checks = [
            (
                all(b >= 1 for b in self.batch_sizes) and bool(self.batch_sizes),
                "--batch-sizes must be positive integers, e.g. 1,8,32",
            ),
            (self.duration_s > 0, "--duration must be positive (seconds)"),
            (self.concurrency >= 1, "--concurrency must be at least 1"),
            (self.samples >= 1, "--samples must be at least 1"),
            (self.warmup_s >= 0, "--warmUp must not be negative"),
            (self.max_time_s > 0, "--max-time must be positive (seconds)"),
            (self.tolerance > 0, "--tolerance must be positive (e.g. 0.05 for 5%)"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        check_threads(self.threads)  # the same rule and message as build's --threads

    def policy(self) -> StabilityPolicy:
        return StabilityPolicy(warmup_s=self.warmup_s, max_time_s=self.max_time_s, tolerance=self.tolerance)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["scenarios"] = list(self.scenarios)
        data["batch_sizes"] = list(self.batch_sizes)
        return data


class _RunnerSut:
    """The system under test for a runner: issue() runs one query and drops the outputs."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def issue(self, query: Mapping[str, np.ndarray]) -> None:
        self._runner.infer(query)


def _outputs_on_pool(runner: Runner, library: QueryLibrary) -> dict[str, np.ndarray]:
    """The runner's outputs on the whole pool, batched as large as the runner allows (<= 32)."""
    sizes = allowed_batch_sizes(runner.inputs, range(min(_ACCURACY_BATCH, library.size), 0, -1))
    if not sizes:
        raise UsageError(
            f"no batch size up to {_ACCURACY_BATCH} fits the inputs {[i.describe() for i in runner.inputs]}"
        )
    parts: dict[str, list[np.ndarray]] = {}
    for feed in library.chunks(sizes[0]):
        for name, value in runner.infer(feed).items():
            parts.setdefault(name, []).append(value)
    return {name: np.concatenate(values) for name, values in parts.items()}


def _accuracy(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray], labels: np.ndarray | None,
              target: str) -> dict[str, Any]:
    missing = sorted(set(reference) - set(candidate))
    if missing:
        raise UsageError(f"target {target!r} has no output(s) {missing} (it has {sorted(candidate)}); "
                         "it cannot be compared with the baseline")
    count = min(min(len(v) for v in reference.values()), min(len(candidate[n]) for n in reference))
    report = compare_outputs({n: v[:count] for n, v in reference.items()},
                             {n: candidate[n][:count] for n in reference}, None if labels is None else labels[:count])
    return {"output": next(iter(reference)), **report.to_json()}


def _task_accuracy(outputs: dict[str, np.ndarray], labels: np.ndarray | None) -> float | None:
    if labels is None:
        return None
    logits = next(iter(outputs.values()))
    count = min(len(logits), len(labels))
    return float((logits[:count].reshape(count, -1).argmax(axis=1) == labels[:count]).mean())


class _Run:
    """State shared across the targets of one benchmark run."""

    def __init__(self, config: BenchConfig, reference: Target | None, bar: Any) -> None:
        self.config = config
        self.reference = reference
        self.bar = bar
        self.pool: SamplePool | None = None
        self.pool_inputs: list[TensorInfo] = []
        self.pool_owner = ""
        self.reference_outputs: dict[str, np.ndarray] | None = None

    def prepare(self, first: Target) -> None:
        """Build the sample pool from the first target's inputs, outside any memory measurement.

        Loading a data source (and the first runner of a backend) costs one-time library memory
        that would otherwise be charged to whichever target happened to run first.
        """
        with first.open() as probe:
            inputs = probe.inputs
        cfg = self.config
        self.pool = (data_pool(cfg.data, inputs, cfg.samples, cfg.data_part) if cfg.data
                     else generated_pool(inputs, cfg.samples, cfg.seed, cfg.shapes))
        self.pool_inputs, self.pool_owner = inputs, first.name

    def _library_for(self, target: Target, inputs: list[TensorInfo]) -> QueryLibrary:
        assert self.pool is not None, "prepare() runs first"
        check_compatible(self.pool_inputs, inputs, self.pool_owner, target.name)
        return self.pool.bind(inputs)

    def _scenarios(
        self, target: Target, runners: list[Runner], library: QueryLibrary
    ) -> tuple[dict[str, Any], list[str]]:
        cfg = self.config
        policy = cfg.policy()
        suts = [_RunnerSut(r) for r in runners]
        results: dict[str, Any] = {}
        notes: list[str] = []
        for scenario in cfg.scenarios:
            self.bar.set_postfix_str(f"{target.name} {scenario}")
            if scenario == scenarios.SINGLE_STREAM:
                results["single_stream"] = scenarios.single_stream(suts[0], library, policy)
            elif scenario == scenarios.OFFLINE:
                sizes = allowed_batch_sizes(runners[0].inputs, cfg.batch_sizes)
                skipped = sorted(set(cfg.batch_sizes) - set(sizes))
                if skipped:
                    notes.append(
                        f"offline: batch sizes {skipped} do not fit the inputs "
                        f"{[i.describe() for i in runners[0].inputs]}"
                    )
                results["offline"] = scenarios.offline(suts[0], library, sizes, policy)
            elif scenario == scenarios.SERVER:
                results["server"] = scenarios.server(
                    suts, library, float(cfg.qps or 0), cfg.duration_s, cfg.seed, cfg.warmup_s
                )
            else:
                results["concurrency"] = scenarios.concurrency(suts, library, policy)
            self.bar.update(1)
        return results, notes

    def run_target(self, target: Target) -> dict[str, Any]:
        log.info("benchmarking %s (%s, %s)", target.name, target.kind, target.backend)
        callers = (
            self.config.concurrency if {scenarios.SERVER, scenarios.CONCURRENCY} & set(self.config.scenarios) else 1
        )
        runners: list[Runner] = []
        target.import_backend()
        with PeakRss() as memory:
            try:
                start = time.perf_counter()
                runners.append(target.open())
                load_s = time.perf_counter() - start
                inputs = runners[0].inputs
                library = self._library_for(target, inputs)
                outputs = _outputs_on_pool(runners[0], library)
                entry: dict[str, Any] = {**target.describe(), "load_time_s": load_s,
                                         "inputs": [i.to_json() for i in inputs],
                                         "outputs": [o.to_json() for o in runners[0].outputs],
                                         "task_accuracy": _task_accuracy(outputs, library.labels), "accuracy": None}
                if target is self.reference:
                    self.reference_outputs = outputs
                elif self.reference_outputs is not None:
                    entry["accuracy"] = _accuracy(self.reference_outputs, outputs, library.labels, target.name)
                runners.extend(target.open() for _ in range(callers - 1))
                entry["scenarios"], notes = self._scenarios(target, runners, library)
                entry["notes"] = [*runners[0].notes, *notes]
                device_bytes = runners[0].device_memory_bytes
            finally:
                for runner in runners:
                    runner.close()
        entry["memory"] = {"host_peak_rss_bytes": memory.peak_bytes, "host_rss_delta_bytes": memory.delta_bytes,
                           "method": memory.method, "device_bytes": device_bytes}
        return entry


def benchmark(targets: Sequence[str], baseline: str | None = None, config: BenchConfig | None = None,
              **options: Any) -> dict[str, Any]:
    """Benchmark `targets` (engine folders, .onnx files, checkpoints) against `baseline`.

    Returns the report as a dict following ``report.schema.json`` (schema_version 1). Options are
    BenchConfig fields (``scenarios``, ``batch_sizes``, ``qps``, ``max_time_s``...). Raises
    UsageError for unknown targets, a baseline with different inputs, or bad options.
    """
    config = config or BenchConfig(**options)
    config.validate()
    resolved, reference = resolve_targets(list(targets), baseline, config.threads, config.torch_compile)
    steps = len(resolved) * len(config.scenarios)
    with progress(total=steps, desc="bench", unit="scenario") as bar:
        run = _Run(config, reference, bar)
        resolved[0].import_backend()
        run.prepare(resolved[0])
        entries = [run.run_target(target) for target in resolved]
    assert run.pool is not None
    return {
        "schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "run_id": None,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "label": config.label,
        "environment": environment.collect(config.threads),
        "config": config.to_json(),
        "baseline": reference.name if reference else None,
        "inputs": {"origin": run.pool.origin, "samples": run.pool.size, "labelled": run.pool.labels is not None,
                   "tensors": [i.to_json() for i in run.pool_inputs]},
        "targets": entries,
        "comparison": None,
    }
