"""Streaming collection: run the FP32 model batch by batch, fold each target into its statistics.

The model is re-saved with the target tensors added as graph outputs and run in ONNX Runtime; each
batch's outputs update one :class:`RangeStats` (pass 1) or :class:`AbsHistogram` (pass 2) per tensor
and are dropped before the next batch, so peak memory is one batch of activations plus
``2048 x 8`` bytes per tensor, whatever the number of samples.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from trtopt.tensors import TensorInfo
from trtopt.data.sources import DataSource
from trtopt.errors import TrtoptError, UsageError
from trtopt.progress import progress
from trtopt.quantization.histogram import AbsHistogram, RangeStats


@dataclass
class Collected:
    """Everything the calibrators need, per target tensor."""

    samples: int
    ranges: dict[str, RangeStats]
    histograms: dict[str, AbsHistogram] | None  # None when only ranges were collected


class TargetRunner:
    """An ONNX Runtime runner of the model with every target tensor exposed as an output."""

    def __init__(self, model: onnx.ModelProto, targets: Sequence[str], threads: int | None = None,
                 source: str = "the model") -> None:
        """`source` names the user's file in errors: the session opens a temporary copy of it."""
        from trtopt.ortsession import OrtSession, make_session_options

        model = onnx.ModelProto.FromString(model.SerializeToString())
        present = {out.name for out in model.graph.output}
        for name in targets:
            if name not in present:
                model.graph.output.append(onnx.ValueInfoProto(name=name))
        with tempfile.TemporaryDirectory(prefix="trtopt-calib-") as folder:
            path = Path(folder) / "targets.onnx"
            onnx.save(model, os.fspath(path))
            # no arena: it keeps the largest batch's buffers and grows in power-of-two steps, which
            # shows up as peak memory creeping with the number of batches
            options = make_session_options(threads)
            options.enable_cpu_mem_arena = False
            try:
                self.runner = OrtSession(path, options)
            except UsageError as exc:  # ONNX Runtime names the temporary copy; the user knows their file
                raise UsageError(str(exc).replace(os.fspath(path), source)) from exc
        float_outputs = {info.name for info in self.runner.outputs if np.dtype(info.dtype).kind == "f"}
        self.targets = [name for name in targets if name in float_outputs]

    @property
    def inputs(self) -> list[TensorInfo]:
        return self.runner.inputs

    def batches(self, data: DataSource, desc: str) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
        """Yield (batch index, batch size, target activations), with a progress bar over samples."""
        with progress(total=data.num_samples, desc=desc, unit="sample") as bar:
            for index, batch in enumerate(data):
                outputs = self.runner.run(batch.feed)
                yield index, batch.size, {name: outputs[name] for name in self.targets}
                del outputs
                bar.update(batch.size)

    def close(self) -> None:
        self.runner.close()


def collect(runner: TargetRunner, data: DataSource, *, histograms: bool, nan_policy: str = "error") -> Collected:
    """Pass 1 (ranges) and, when ``histograms``, pass 2 (|x| histograms over those ranges)."""
    if nan_policy not in ("error", "skip"):
        raise UsageError(f"--nan-policy must be 'error' or 'skip', got {nan_policy!r}")
    skip = nan_policy == "skip"
    ranges = {name: RangeStats() for name in runner.targets}
    samples = 0
    for index, size, activations in runner.batches(data, "calibrate: ranges"):
        samples += size
        for name, values in activations.items():
            ranges[name].update(values, skip, f"tensor {name!r} in batch {index}")
    if samples == 0:
        raise UsageError(f"the calibration data gave no samples: {data.describe()}")
    if not histograms:
        return Collected(samples, ranges, None)
    hists = {name: AbsHistogram(stats.absmax) for name, stats in ranges.items()}
    seen = 0
    for _, size, activations in runner.batches(data, "calibrate: histograms"):
        seen += size
        for name, values in activations.items():
            if ranges[name].nonfinite:
                values = values[np.isfinite(values)]
            hists[name].update(values)
    if seen != samples:
        raise TrtoptError(f"the calibration data is not repeatable: {samples} samples in the first pass, {seen} "
                          f"in the second ({data.describe()}); a loader must yield the same data every time")
    return Collected(samples, ranges, hists)
