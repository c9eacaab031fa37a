"""Evaluate INT8 variants of one model on held-out data: the engine under sensitivity and mixed precision.

A *layer* is a Q/DQ group: a node that reads a dequantized input or weight in the full INT8
placement, named by its ONNX node name. A *variant* is the model quantized with a set of layers
left in float (through the Q/DQ pass's node exclusions, so an excluded layer keeps its inputs and
weights float). Each variant is written to a temporary file, opened in ONNX Runtime on the CPU
with the session options the `onnxruntime` backend uses for that encoding, run on the same
held-out batches, and compared with the FP32 outputs computed once
(:class:`trtopt.accuracy.AccuracyAccumulator`); the median batch latency comes with it.

:func:`noise_ranking` is the one-pass estimate the mixed-precision search starts from: the full
INT8 variant and FP32 run with every layer's inputs and outputs exposed, and each layer is scored
by the noise it *adds*: relative noise power (noise / signal) at its outputs minus the largest at
its inputs. Layers that turn a clean input into a noisy output come first. The same pass reads the
real shapes of every layer's tensors, from which :func:`layer_macs` estimates each layer's compute
(multiply-accumulates per sample): the cheap latency proxy that tells the search which layers gain
little from INT8.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from trtopt.accuracy import AccuracyAccumulator, AccuracyReport, MetricSettings, UserMetric
from trtopt.errors import UsageError
from trtopt.settings import QdqSettings  # how the Q/DQ pass quantizes: the choices `build --int8` makes


@dataclass(frozen=True)
class Layer:
    name: str
    op_type: str


@dataclass(frozen=True)
class RankedLayer:
    """A layer with the noise it adds in the full INT8 variant and its compute (the latency proxy)."""

    layer: Layer
    added_noise: float
    macs: float  # multiply-accumulates per sample; elementwise layers count one per output value


@dataclass
class Evaluation:
    """One variant: which layers stayed float, its accuracy and median batch latency."""

    float_layers: frozenset[str]
    report: AccuracyReport
    latency_ms: float


@dataclass
class HeldOut:
    """Held-out batches and the FP32 outputs on them, kept in memory (a small set by design)."""

    feeds: list[dict[str, np.ndarray]]
    labels: list[np.ndarray | None]
    reference: list[dict[str, np.ndarray]]
    fp32_latency_ms: float
    samples: int = field(init=False)

    def __post_init__(self) -> None:
        self.samples = sum(int(next(iter(f.values())).shape[0]) for f in self.feeds)


def load_heldout(model_path: Path, spec: str, part: str, samples: int, batch_size: int, threads: int | None,
                 source_options: Mapping[str, Any] | None = None) -> HeldOut:
    """Read up to ``samples`` held-out samples and run the FP32 model on them once.

    ``source_options`` are the build's extra open_source() keywords (model constants, generated-data
    shapes and value ranges), so the search reads the same data as the build's final accuracy check."""
    from trtopt.backends.onnxruntime import OnnxRuntimeRunner
    from trtopt.data.sources import open_source

    with OnnxRuntimeRunner(model_path, threads=threads) as reference:
        data = open_source(spec, reference.inputs, batch_size=batch_size, max_samples=samples, part=part,
                           **(source_options or {}))
        feeds, labels, outputs, times = [], [], [], []
        for batch in data:
            feeds.append(batch.feed)
            labels.append(batch.labels)
            tic = time.perf_counter()
            outputs.append(reference.infer(batch.feed))
            times.append(time.perf_counter() - tic)
    if not feeds:
        raise UsageError(f"held-out data {spec!r} ({part}) yielded no samples; pass --val-data with a few samples")
    return HeldOut(feeds, labels, outputs, 1000 * float(np.median(times)))


def quantized_layers(model_path: Path, table: object, quant: QdqSettings) -> list[Layer]:
    """The Q/DQ groups of the full INT8 placement, in graph order (unnamed nodes cannot be excluded: skipped)."""
    import onnx_ir as ir

    from trtopt.quantization.encodings import get_encoding
    from trtopt.quantization.placement import plan_placement
    from trtopt.quantization.qdq import amax_mapping

    model = ir.from_proto(onnx.load(os.fspath(model_path)))
    stats = getattr(table, "tensors", {})
    placement = plan_placement(
        model,
        amax_mapping(table),
        get_encoding(quant.encoding),
        per_channel=quant.per_channel,
        exclude_nodes=quant.exclude_nodes,
        exclude_op_types=quant.exclude_op_types,
        observed_non_negative=[n for n, t in stats.items() if getattr(t, "non_negative", None)],
    )
    reading = {id(node) for edges in placement.activations.values() for node, _ in edges}
    reading |= {id(plan.node) for plan in placement.weights}
    return [Layer(node.name, node.op_type) for node in model.graph if id(node) in reading and node.name]


class Evaluator:
    """Builds and runs INT8 variants of one model against the held-out FP32 outputs."""

    def __init__(
        self,
        model_path: Path,
        table: object,
        quant: QdqSettings,
        heldout: HeldOut,
        metrics: MetricSettings,
        threads: int | None = None,
    ) -> None:
        self.model_path = model_path
        self.table = table
        self.quant = quant
        self.heldout = heldout
        self.metrics = metrics
        self.user_metrics = [UserMetric(spec) for spec in metrics.user_metrics]
        self.threads = threads
        self.evaluations = 0
        self.seconds = 0.0
        self._folder = tempfile.TemporaryDirectory(prefix="trtopt-int8-eval-")
        self.workdir = Path(self._folder.name)

    def variant(self, float_layers: Iterable[str], path: Path) -> Path:
        """Write the Q/DQ model with ``float_layers`` (plus the user's exclusions) kept float."""
        from trtopt.quantization.qdq import quantize

        excluded = sorted(set(float_layers) | set(self.quant.exclude_nodes))
        quantize(
            self.model_path,
            self.table,
            path,
            encoding=self.quant.encoding,
            per_channel=self.quant.per_channel,
            exclude_nodes=excluded,
            exclude_op_types=self.quant.exclude_op_types,
            force=True,
        )
        return path

    def _runner(self, path: Path, extra_outputs: Sequence[str] = ()) -> object:
        """An ORT runner as the backend would run ``path``; with ``extra_outputs`` exposed, Q/DQ runs simulated.

        Fused integer kernels would hand out an exposed tensor already requantized for its consumer,
        charging the consumer's input quantization to the producer: simulated Q/DQ keeps them apart.
        """
        from trtopt.backends.onnxruntime import OnnxRuntimeRunner, qdq_session_config
        from trtopt.ortsession import make_session_options

        if extra_outputs:
            model = onnx.load(os.fspath(path))
            present = {o.name for o in model.graph.output}
            model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in extra_outputs if n not in present)
            onnx.save(model, os.fspath(path))
        options = make_session_options(
            self.threads, config=qdq_session_config("tensorrt" if extra_outputs else self.quant.encoding)
        )
        return OnnxRuntimeRunner(path, session_options=options)

    def evaluate(self, float_layers: Iterable[str]) -> Evaluation:
        """Accuracy and median batch latency of the variant with ``float_layers`` float."""
        started = time.perf_counter()
        layers = frozenset(float_layers)
        path = self.variant(layers, self.workdir / f"variant-{self.evaluations}.onnx")
        accumulator = AccuracyAccumulator(self.metrics, self.user_metrics)
        times = []
        with self._runner(path) as runner:  # type: ignore[attr-defined]
            for feed, labels, expected in zip(self.heldout.feeds, self.heldout.labels, self.heldout.reference):
                tic = time.perf_counter()
                got = runner.infer(feed)
                times.append(time.perf_counter() - tic)
                accumulator.update(expected, got, labels)
        path.unlink()
        self.evaluations += 1
        self.seconds += time.perf_counter() - started
        return Evaluation(layers, accumulator.report(), 1000 * float(np.median(times)))

    def close(self) -> None:
        self._folder.cleanup()

    def __enter__(self) -> "Evaluator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _noise_ratio(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Noise power over signal power (0: identical); non-finite candidates count as all noise."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    finite = np.isfinite(ref)
    if not np.isfinite(cand[finite]).all():
        return float("inf")
    signal = float((ref[finite] ** 2).sum())
    noise = float(((ref[finite] - cand[finite]) ** 2).sum())
    return noise / signal if signal > 0 else (0.0 if noise == 0 else float("inf"))


def _activations(graph: onnx.GraphProto) -> set[str]:
    initializers = {init.name for init in graph.initializer}
    inputs = {value.name for value in graph.input if value.name not in initializers}
    return inputs | {name for node in graph.node if node.op_type != "Constant" for name in node.output if name}


def layer_macs(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]], weights: dict[str, tuple[int, ...]]) -> float:
    """Multiply-accumulates of ``node`` for the batch its ``shapes`` were read from.

    Convolutions and matrix products cost one MAC per output value and reduced input value (the
    weight's fan-in, or the inner dimension); anything else one per output value. A proxy, not a
    timing: enough to tell a 3x3 convolution over a feature map from a bias add.
    """
    out = shapes.get(node.output[0]) if node.output else None
    if out is None:
        return 0.0
    values = float(math.prod(out))
    dims = {**weights, **shapes}
    if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in dims:
        return values * math.prod(dims[node.input[1]][1:])
    if node.op_type == "ConvTranspose" and len(node.input) > 1 and node.input[0] in dims and node.input[1] in dims:
        return float(math.prod(dims[node.input[0]])) * math.prod(dims[node.input[1]][1:])
    if node.op_type in ("MatMul", "Gemm") and node.input[0] in dims and dims[node.input[0]]:
        first = dims[node.input[0]]
        transposed = any(a.name == "transA" and a.i for a in node.attribute)
        return values * (first[0] if transposed or len(first) == 1 else first[-1])
    return values


def noise_ranking(evaluator: Evaluator, layers: Sequence[Layer], batches: int = 2) -> list[RankedLayer]:
    """Layers sorted by the noise each adds in the full INT8 variant (one pass over a few batches), with their MACs."""
    graph = onnx.load(os.fspath(evaluator.model_path), load_external_data=False).graph
    nodes = {node.name: node for node in graph.node}
    weights = {init.name: tuple(init.dims) for init in graph.initializer}
    folder = evaluator.workdir
    quantized = evaluator.variant((), folder / "ranking-int8.onnx")
    fp32 = folder / "ranking-fp32.onnx"
    onnx.save(onnx.load(os.fspath(evaluator.model_path)), os.fspath(fp32))
    # activations only: values computed by a (non-Constant) node, or graph inputs, in both models
    computed = _activations(graph) & _activations(onnx.load(os.fspath(quantized), load_external_data=False).graph)
    constants = {name for node in graph.node for name in [*node.input, *node.output]} - computed
    watched = {
        name for layer in layers for name in [*nodes[layer.name].input, *nodes[layer.name].output] if name in computed
    }
    ratios: dict[str, list[float]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    with (
        evaluator._runner(fp32, sorted(watched)) as ref_runner,
        evaluator._runner(quantized, sorted(watched)) as int8_runner,
    ):  # type: ignore[attr-defined]
        available = {o.name for o in ref_runner.outputs} & {o.name for o in int8_runner.outputs}
        for feed in evaluator.heldout.feeds[:batches]:
            ref_out, int8_out = ref_runner.infer(feed), int8_runner.infer(feed)
            if not shapes:
                shapes = {name: tuple(value.shape) for name, value in {**feed, **ref_out}.items()}
            for name in watched & available:
                ratios.setdefault(name, []).append(_noise_ratio(ref_out[name], int8_out[name]))
    noise = {name: float(np.mean(values)) for name, values in ratios.items()}

    def added(layer: Layer) -> float:
        node = nodes[layer.name]
        out = max((noise.get(n, 0.0) for n in node.output if n), default=0.0)
        into = max((noise.get(n, 0.0) for n in node.input if n and n not in constants), default=0.0)
        return out - into if np.isfinite(out) and np.isfinite(into) else (float("inf") if not np.isfinite(out) else out)

    batch = int(next(iter(evaluator.heldout.feeds[0].values())).shape[0]) or 1  # held-out data is never empty
    scored = [
        RankedLayer(layer, added(layer), layer_macs(nodes[layer.name], shapes, weights) / batch) for layer in layers
    ]
    return sorted(scored, key=lambda item: -item.added_noise)
