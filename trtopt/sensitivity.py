"""Per-layer INT8 sensitivity: which Q/DQ groups cost accuracy, measured on held-out data.

For every quantized layer (see :mod:`trtopt.int8_eval`) two variants are measured against FP32:
*INT8 alone* (only this layer quantized: the damage it does by itself) and *float alone* (every
other layer quantized, this one float: what keeping it float buys back). Layers are ranked by the
INT8-alone harm, then by the float-alone gain. Harm is the noise-to-signal power ratio summed over
the model's outputs (``sum 10^(-SNR/10)``; noise powers of independent errors add, so it ranks
consistently across outputs of different scale); every metric of every output is kept in the JSON.

Cost: two variants per layer, each a Q/DQ pass, an ONNX Runtime session and a run over the
held-out samples; the analysis is a diagnostic, not part of a default build.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtopt.accuracy import AccuracyReport
from trtopt.errors import UsageError
from trtopt.int8_eval import Evaluation, Evaluator, Layer, load_heldout, quantized_layers
from trtopt.quantization.encodings import host_cpu_encoding
from trtopt.settings import BuildSettings


def noise_to_signal(report: AccuracyReport) -> float:
    """Sum over outputs of noise power / signal power (0 identical, inf for broken outputs)."""
    return float(sum(10.0 ** (-o.snr_db / 10.0) if o.snr_db != float("inf") else 0.0 for o in report.outputs.values()))


def _summary(report: AccuracyReport) -> dict[str, Any]:
    """The headline numbers of one variant (the full per-output report stays in the JSON)."""
    return {"noise_to_signal": noise_to_signal(report), "accuracy": report.to_json()}


@dataclass
class LayerSensitivity:
    layer: Layer
    int8_alone: Evaluation
    float_alone: Evaluation
    harm: float  # noise-to-signal with only this layer INT8
    gain: float  # full-INT8 noise-to-signal minus the one with this layer float

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.layer.name,
            "op_type": self.layer.op_type,
            "harm": self.harm,
            "gain": self.gain,
            "int8_alone": _summary(self.int8_alone.report),
            "float_alone": _summary(self.float_alone.report),
        }


@dataclass
class SensitivityResult:
    all_int8: Evaluation
    layers: list[LayerSensitivity]  # ranked, most harmful first
    samples: int
    evaluations: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "evaluations": self.evaluations,
            "seconds": round(self.seconds, 3),
            "all_int8": _summary(self.all_int8.report),
            "layers": [entry.to_json() for entry in self.layers],
        }

    def table(self, limit: int | None = None) -> str:
        """A Markdown table of the ranking (worst output's SNR and agreement, user metrics)."""
        user = sorted(self.all_int8.report.user_metrics)
        header = [
            "rank",
            "node",
            "op",
            "INT8 alone: SNR dB",
            "agreement",
            *user,
            "float alone: SNR dB",
            "agreement",
            *user,
        ]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for rank, entry in enumerate(self.layers[:limit], 1):
            cells = [str(rank), entry.layer.name, entry.layer.op_type]
            for evaluation in (entry.int8_alone, entry.float_alone):
                report = evaluation.report
                agreement = report.top1_agreement
                cells += [
                    f"{report.snr_db:.1f}",
                    "-" if agreement is None else f"{100 * agreement:.2f}%",
                    *[f"{report.user_metrics[u]:.4f}" for u in user],
                ]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def analyze(
    evaluator: Evaluator, layers: Sequence[Layer], on_layer: Callable[[int, int], None] | None = None
) -> SensitivityResult:
    """Measure both variants of every layer and rank them (``on_layer(done, total)`` reports progress)."""
    start_evaluations, start_seconds = evaluator.evaluations, evaluator.seconds
    all_int8 = evaluator.evaluate((), timed=False)
    baseline = noise_to_signal(all_int8.report)
    names = [layer.name for layer in layers]
    entries = []
    for index, layer in enumerate(layers):
        alone = evaluator.evaluate((n for n in names if n != layer.name), timed=False)
        kept = evaluator.evaluate([layer.name], timed=False)
        entries.append(
            LayerSensitivity(layer, alone, kept, noise_to_signal(alone.report), baseline - noise_to_signal(kept.report))
        )
        if on_layer is not None:
            on_layer(index + 1, len(layers))
    entries.sort(key=lambda e: (-e.harm, -e.gain))
    return SensitivityResult(
        all_int8,
        entries,
        evaluator.heldout.samples,
        evaluator.evaluations - start_evaluations,
        evaluator.seconds - start_seconds,
    )


def run_sensitivity(model: Path, settings: BuildSettings, *, samples: int = 64,
                    on_layer: Callable[[int, int], None] | None = None) -> SensitivityResult:
    """Calibrate (or load ``settings.calibration.table``), then :func:`analyze` every quantized layer on
    `samples` held-out samples, with a build's calibration, Q/DQ, accuracy-metric, data (initializer-backed
    inputs, ``--input-range``, ``--shapes``) and thread settings. One FP32 session serves calibration
    and the held-out reference."""
    from trtopt.backends.onnxruntime import OnnxRuntimeRunner
    from trtopt.data.sources import open_source
    from trtopt.plan import plan_data
    from trtopt.quantization.calibrate import calibrate
    from trtopt.quantization.modelio import prepared_source
    from trtopt.quantization.table import ScaleTable

    calibration, qdq, threads = settings.calibration, settings.qdq, settings.engine.threads
    if calibration.data is None:
        raise UsageError("--calib-data is required: its held-out part is the evaluation data unless --val-data")
    data = plan_data(model, settings, needs_profile=False)
    table = None
    if calibration.table:
        table = ScaleTable.load(calibration.table)
        table.ensure_matches(model, force=settings.force)
    quant = dataclasses.replace(qdq, encoding=qdq.encoding or host_cpu_encoding())
    val_data = settings.accuracy.data
    spec, part = (val_data, "all") if val_data else (calibration.data, "heldout")
    with prepared_source(model, data.overrides) as work, OnnxRuntimeRunner(work, threads=threads) as fp32:
        if table is None:
            batches = open_source(calibration.data, fp32.inputs, batch_size=settings.batch_size,
                                  max_samples=calibration.samples, seed=calibration.seed, part="calibration",
                                  **data.options.for_source(calibration.data))
            table = calibrate(work, batches, calibration, threads=threads, model_name=model)
        heldout = load_heldout(fp32, spec, part, samples, settings.batch_size, data.options.for_source(spec))
        with Evaluator(work, table, quant, heldout, settings.accuracy.metrics, threads) as evaluator:
            return analyze(evaluator, quantized_layers(work, table, quant), on_layer)
