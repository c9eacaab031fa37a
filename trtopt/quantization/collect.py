"""Streaming collection: one pass of the FP32 model over the data, statistics folded in as it runs.

Each batch's target activations update one :class:`RangeStats` and one
:class:`PowerOfTwoHistogram` per tensor (see :mod:`trtopt.quantization.histogram` for why one pass
gives batch-order- and batch-size-independent histograms). The updates run on one worker thread
while the next batch is in inference: ONNX Runtime releases the GIL while it runs and numpy
releases it in the element-wise work, so on a multi-core host the statistics cost hides behind the
forward pass. The pipeline is one batch deep (the next batch's statistics start only after the
previous ones are done), so at most two batches of activations are alive, and per-tensor state is
a fixed-size histogram: peak memory does not grow with the number of samples.
"""
from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from trtopt.data.sources import DataSource
from trtopt.errors import UsageError
from trtopt.progress import progress
from trtopt.quantization.histogram import AbsHistogram, PowerOfTwoHistogram, RangeStats
from trtopt.quantization.session import TargetRunner


@dataclass
class Collected:
    """Everything the calibrators need, per target tensor."""

    samples: int
    ranges: dict[str, RangeStats]
    histograms: dict[str, AbsHistogram] | None  # None when only ranges were collected


class _Statistics:
    """Per-tensor statistics of the pass; ``fold`` runs on the worker thread, one batch at a time."""

    def __init__(self, targets: list[str], histograms: bool, skip_nonfinite: bool) -> None:
        self.ranges = {name: RangeStats() for name in targets}
        self.fine = {name: PowerOfTwoHistogram() for name in targets} if histograms else None
        self.skip_nonfinite = skip_nonfinite

    def fold(self, index: int, activations: dict[str, np.ndarray]) -> None:
        for name, values in activations.items():
            ranges = self.ranges[name]
            finite = ranges.update(values, self.skip_nonfinite, f"tensor {name!r} in batch {index}")
            if self.fine is not None:
                self.fine[name].update(finite, ranges.absmax)

    def histograms(self) -> dict[str, AbsHistogram] | None:
        """The 2048-bin histograms over each tensor's final ``[0, max |x|]``."""
        if self.fine is None:
            return None
        return {name: fine.rebin(self.ranges[name].absmax) for name, fine in self.fine.items()}


def _batches(runner: TargetRunner, data: DataSource) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
    """Yield (batch index, batch size, target activations), with a progress bar over samples."""
    with progress(total=data.num_samples, desc="calibrate", unit="sample") as bar:
        for index, batch in enumerate(data):
            yield index, batch.size, runner.infer(batch.feed)
            bar.update(batch.size)


def collect(runner: TargetRunner, data: DataSource, *, histograms: bool, nan_policy: str = "error") -> Collected:
    """Ranges and, when ``histograms``, |x| histograms of every target, in one pass over ``data``."""
    if nan_policy not in ("error", "skip"):
        raise UsageError(f"--nan-policy must be 'error' or 'skip', got {nan_policy!r}")
    statistics = _Statistics(runner.targets, histograms, nan_policy == "skip")
    samples = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="trtopt-calibrate") as worker:
        pending: Future[None] | None = None
        for index, size, activations in _batches(runner, data):
            if pending is not None:
                pending.result()  # re-raises the worker's error (e.g. NaN in the previous batch)
            samples += size
            pending = worker.submit(statistics.fold, index, activations)
            del activations
        if pending is not None:
            pending.result()
    if samples == 0:
        raise UsageError(f"the calibration data gave no samples: {data.describe()}")
    return Collected(samples, statistics.ranges, statistics.histograms())
