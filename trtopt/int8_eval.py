"""Evaluate INT8 variants of one model on held-out data: the engine under sensitivity and mixed precision.

A *layer* is a Q/DQ group: a node that reads a dequantized input or weight in the full INT8
placement, named by its ONNX node name. A *variant* is the model quantized with a set of layers
left in float (through the Q/DQ pass's node exclusions, so an excluded layer keeps its inputs and
weights float). Each variant is written to a temporary file, opened in ONNX Runtime on the CPU
with the session options the `onnxruntime` backend uses for that encoding, run on the same
held-out batches, and compared with the FP32 outputs computed once
(:class:`trtopt.accuracy.AccuracyAccumulator`).

The FP32 outputs come from the caller's open FP32 session (the build's reference runner): no second
FP32 session is opened. When the target backend is ONNX Runtime on the CPU, a variant's latency is
*measured* against that same FP32 session on one held-out batch (:func:`trtopt.latency.compare_latency`:
warm-up, interleaved rounds, fastest round, time cap), so its speedup over FP32 is the ratio of two
measurements taken under the same load. For other targets the variant's latency on the CPU says
nothing about the target, so none is measured; :func:`layer_macs` (multiply-accumulates per sample,
from the real shapes of one FP32 run) is then the estimate the search uses instead.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from trtopt.accuracy import AccuracyAccumulator, AccuracyReport, MetricSettings, UserMetric
from trtopt.errors import UsageError
from trtopt.latency import LatencySettings, compare_latency
from trtopt.quantization.coverage import RECURRENT_OPS, node_key
from trtopt.quantization.modelio import all_graphs
from trtopt.settings import QdqSettings  # how the Q/DQ pass quantizes: the choices `build --int8` makes


@dataclass(frozen=True)
class Layer:
    name: str
    op_type: str


@dataclass
class Evaluation:
    """One variant: which layers stayed float, its accuracy and (when measured) its latency vs FP32."""

    float_layers: frozenset[str]
    report: AccuracyReport
    latency_ms: float | None = None  # fastest interleaved round on one held-out batch (None: not measured)
    speedup: float | None = None  # FP32's fastest round / this variant's, measured together


@dataclass
class HeldOut:
    """Held-out batches, the FP32 outputs on them, and the open FP32 runner that computed them."""

    feeds: list[dict[str, np.ndarray]]
    labels: list[np.ndarray | None]
    reference: list[dict[str, np.ndarray]]
    fp32: Any  # the caller's FP32 Runner: stays open while variants are evaluated (latency baseline)
    # samples in each batch, as the data source counted them: a model's first input need not have the
    # batch on axis 0 (a recurrent state [layers, batch, width])
    sizes: list[int]

    @property
    def samples(self) -> int:
        return sum(self.sizes)


def load_heldout(fp32: Any, spec: str, part: str, samples: int, batch_size: int,
                 source_options: Mapping[str, Any] | None = None) -> HeldOut:
    """Read up to ``samples`` held-out samples and run the caller's open FP32 runner on them once.

    ``source_options`` are the build's extra open_source() keywords (model constants, generated-data
    shapes and value ranges), so the search reads the same data as the build's final accuracy check."""
    from trtopt.data.sources import open_source

    data = open_source(spec, fp32.inputs, batch_size=batch_size, max_samples=samples, part=part,
                       **(source_options or {}))
    feeds, labels, outputs, sizes = [], [], [], []
    for batch in data:
        feeds.append(batch.feed)
        labels.append(batch.labels)
        outputs.append(fp32.infer(batch.feed))
        sizes.append(batch.size)
    if not feeds:
        raise UsageError(f"held-out data {spec!r} ({part}) yielded no samples; pass --val-data with a few samples")
    return HeldOut(feeds, labels, outputs, fp32, sizes)


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
    """Builds and runs INT8 variants of one model against the held-out FP32 outputs.

    ``latency`` set: each evaluated variant is also timed against FP32 (target backend = ONNX Runtime
    on the CPU); None: accuracy only.
    """

    def __init__(
        self,
        model_path: Path,
        table: object,
        quant: QdqSettings,
        heldout: HeldOut,
        metrics: MetricSettings,
        threads: int | None = None,
        latency: LatencySettings | None = None,
    ) -> None:
        self.model_path = model_path
        self.table = table
        self.quant = quant
        self.heldout = heldout
        self.metrics = metrics
        self.user_metrics = [UserMetric(spec) for spec in metrics.user_metrics]
        self.threads = threads
        self.latency = latency
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

    def _runner(self, path: Path) -> object:
        """An ORT runner as the backend would run ``path``."""
        from trtopt.backends.onnxruntime import OnnxRuntimeRunner, qdq_session_config
        from trtopt.ortsession import make_session_options

        options = make_session_options(self.threads, config=qdq_session_config(self.quant.encoding))
        return OnnxRuntimeRunner(path, session_options=options)

    def evaluate(self, float_layers: Iterable[str], timed: bool = True) -> Evaluation:
        """Accuracy of the variant with ``float_layers`` float, and (``timed`` and measurable) its latency vs FP32."""
        started = time.perf_counter()
        layers = frozenset(float_layers)
        path = self.variant(layers, self.workdir / f"variant-{self.evaluations}.onnx")
        accumulator = AccuracyAccumulator(self.metrics, self.user_metrics)
        latency_ms = speedup = None
        with self._runner(path) as runner:  # type: ignore[attr-defined]
            for feed, labels, expected in zip(self.heldout.feeds, self.heldout.labels, self.heldout.reference):
                accumulator.update(expected, runner.infer(feed), labels)
            if timed and self.latency is not None:
                feed = self.heldout.feeds[0]
                comparison = compare_latency(
                    {"fp32": lambda: self.heldout.fp32.infer(feed), "variant": lambda: runner.infer(feed)},
                    self.latency,
                )
                latency_ms, speedup = comparison.fastest_ms["variant"], comparison.speedup("variant", "fp32")
        path.unlink()
        self.evaluations += 1
        self.seconds += time.perf_counter() - started
        return Evaluation(layers, accumulator.report(), latency_ms, speedup)

    def close(self) -> None:
        self._folder.cleanup()

    def __enter__(self) -> "Evaluator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def layer_macs(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> float:
    """Multiply-accumulates of ``node`` for the batch its ``shapes`` (inputs, weights included, and
    outputs, as one run recorded them) were read from.

    Convolutions and matrix products cost one MAC per output value and reduced input value (the
    weight's fan-in, or the inner dimension); a recurrent layer (LSTM, GRU, RNN) its input and
    recurrence weights once per time step and sequence; anything else one per output value. A proxy,
    not a timing: enough to tell a 3x3 convolution over a feature map from a bias add.
    """
    out = shapes.get(node.output[0]) if node.output else None
    if out is None:
        return 0.0
    values = float(math.prod(out))
    if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in shapes:
        return values * math.prod(shapes[node.input[1]][1:])
    if node.op_type == "ConvTranspose" and len(node.input) > 1 and node.input[0] in shapes and node.input[1] in shapes:
        return float(math.prod(shapes[node.input[0]])) * math.prod(shapes[node.input[1]][1:])
    if node.op_type in RECURRENT_OPS and all(name in shapes for name in node.input[:3]):
        steps = math.prod(shapes[node.input[0]][:-1])  # X: [seq, batch, input] or [batch, seq, input]
        return float(steps * (math.prod(shapes[node.input[1]]) + math.prod(shapes[node.input[2]])))
    if node.op_type in ("MatMul", "Gemm") and node.input[0] in shapes and shapes[node.input[0]]:
        first = shapes[node.input[0]]
        transposed = any(a.name == "transA" and a.i for a in node.attribute)
        return values * (first[0] if transposed or len(first) == 1 else first[-1])
    return values


def macs_per_sample(evaluator: Evaluator, layers: Sequence[Layer]) -> dict[str, float]:
    """Each layer's MACs per sample, measured on the first held-out batch (:func:`measured_macs`)."""
    feed = evaluator.heldout.feeds[0]
    macs = measured_macs(evaluator.model_path, feed, evaluator.threads)
    return {layer.name: macs.get(layer.name, 0.0) / evaluator.heldout.sizes[0] for layer in layers}


def measured_macs(model_path: Path, feed: Mapping[str, np.ndarray], threads: int | None) -> dict[str, float]:
    """MACs of every node that ran on ``feed`` (by :func:`node_key`), from the shapes of one real run.

    The run is profiled by ONNX Runtime with graph optimizations off, so every node of the model runs
    under its own name and the profile records the shapes it read and wrote: nodes inside If/Loop/Scan
    bodies included (where shape inference gives up, and which no graph output can expose), each
    execution of a loop body counted, a branch not taken costing nothing. Nodes are named by their
    key in a private copy first, so unnamed nodes are found too.
    """
    import onnxruntime as ort

    from trtopt.ortsession import make_session_options
    from trtopt.quantization.session import detach_weights

    model = onnx.load(os.fspath(model_path), load_external_data=False)
    nodes = {}
    for graph in all_graphs(model.graph):
        for node in graph.node:
            node.name = node_key(node)
            nodes[node.name] = node
    with tempfile.TemporaryDirectory(prefix="trtopt-macs-") as folder:
        # the renamed copy is the graph only: external weights are read in place, as calibration does
        config = detach_weights(model, Path(model_path).parent, Path(folder))
        copy = Path(folder) / "named.onnx"
        onnx.save(model, os.fspath(copy))
        options = make_session_options(threads, graph_optimization="disabled", config=config)
        options.enable_profiling = True
        options.profile_file_prefix = os.fspath(Path(folder) / "profile")
        session = ort.InferenceSession(os.fspath(copy), options, providers=["CPUExecutionProvider"])
        session.run(None, dict(feed))
        events = json.loads(Path(session.end_profiling()).read_text())
    macs: dict[str, float] = {}
    for event in events:
        node = nodes.get(str(event.get("name", "")).removesuffix("_kernel_time"))
        recorded = event.get("args", {})
        if event.get("cat") != "Node" or node is None or "output_type_shape" not in recorded:
            continue
        shapes = dict(zip([name for name in node.input if name], _profiled_shapes(recorded.get("input_type_shape"))))
        shapes.update(zip([name for name in node.output if name], _profiled_shapes(recorded["output_type_shape"])))
        macs[node.name] = macs.get(node.name, 0.0) + layer_macs(node, shapes)
    return macs


def _profiled_shapes(entries: Any) -> list[tuple[int, ...]]:
    """Shapes of a profile record's ``[{"float": [2, 3]}, ...]`` list (one dtype key per tensor)."""
    return [tuple(next(iter(entry.values()))) for entry in entries or [] if isinstance(entry, dict) and entry]
