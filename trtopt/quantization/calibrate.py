"""``calibrate()``: an FP32 ONNX model and calibration data in, a :class:`ScaleTable` out."""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trtopt.data.sources import DataSource, open_source
from trtopt.errors import UsageError
from trtopt.fileio import sha256_file
from trtopt.quantization.calibrators import METHODS, NUM_LEVELS, entropy_bins, mse_bins, percentile_bins
from trtopt.quantization.collect import Collected, collect
from trtopt.quantization.histogram import FINE_BINS, NUM_BINS
from trtopt.quantization.table import ScaleTable, TensorStats

log = logging.getLogger("trtopt.calibrate")

# A tensor that is zero everywhere quantizes to 0 at any scale; 1.0 keeps scale = 1/127 far from
# both 0 (a division by zero in Q) and float16 subnormals.
DEGENERATE_AMAX = 1.0


def _amax(name: str, collected: Collected, method: str, percentile: float) -> float:
    absmax = collected.ranges[name].absmax
    if absmax == 0:
        log.warning("tensor %r is zero everywhere (or had no finite values); amax set to %s", name, DEGENERATE_AMAX)
        return DEGENERATE_AMAX
    if method == "max":
        return absmax
    hist = collected.histograms[name]  # type: ignore[index]
    if method == "percentile":
        kept = percentile_bins(hist.counts, percentile)
    else:
        nonzero = hist.nonzero_counts()
        kept = entropy_bins(nonzero) if method == "entropy" else mse_bins(nonzero)
    return kept * hist.width if kept < hist.bins else absmax


def _stats(name: str, collected: Collected, amax: float) -> TensorStats:
    ranges = collected.ranges[name]
    finite = ranges.count - ranges.nonfinite
    hist = collected.histograms.get(name) if collected.histograms else None
    return TensorStats(
        amax=float(amax),
        min=ranges.min if finite else None,
        max=ranges.max if finite else None,
        absmax=ranges.absmax,
        mean_abs=hist.abs_sum / finite if hist is not None and finite else None,
        zero_fraction=hist.zeros / finite if hist is not None and finite else None,
        count=ranges.count,
        nonfinite=ranges.nonfinite or None,
    )


def calibrate(model_path: str | os.PathLike[str], data: DataSource | str, *, method: str = "entropy",
              percentile: float = 99.99, all_tensors: bool = False, nan_policy: str = "error",
              batch_size: int = 16, max_samples: int | None = None, threads: int | None = None, seed: int = 0,
              part: str = "all", source_options: Mapping[str, Any] | None = None, device: str = "auto") -> ScaleTable:
    """Calibrate every activation a Q/DQ pass may need (all float activations with ``all_tensors``).

    ``data`` is a DataSource or a spec for :func:`trtopt.data.sources.open_source` (then
    ``batch_size``, ``max_samples``, ``seed``, ``part`` and ``source_options`` such as image
    ``layout`` or random ``shapes`` apply). ``device`` picks where the forward pass runs (see
    :mod:`trtopt.quantization.providers`). The table records the sha256 of the exact model bytes.
    """
    import onnx

    from trtopt.quantization.providers import select_providers
    from trtopt.quantization.session import TargetRunner

    if method not in METHODS:
        raise UsageError(f"--method must be one of {list(METHODS)}, got {method!r}")
    if method == "percentile" and not 0 < percentile <= 100:
        raise UsageError(f"--percentile must be in (0, 100], got {percentile}")
    path = Path(model_path)
    if not path.is_file():
        raise UsageError(f"ONNX model not found: {path}")
    providers = select_providers(device)
    digest = sha256_file(path)
    try:
        model = onnx.load(os.fspath(path), load_external_data=False)  # the graph; weights are read by the session
    except Exception as exc:  # protobuf/onnx raise several types for a corrupt file
        raise UsageError(f"cannot read ONNX model {path}: {exc}") from exc
    runner = TargetRunner(path, model, providers, all_tensors=all_tensors, threads=threads)
    del model
    try:
        source = data if isinstance(data, DataSource) else open_source(
            data, runner.inputs, batch_size=batch_size, max_samples=max_samples, seed=seed, part=part,
            **(source_options or {}))
        log.info("calibrating %d tensors of %s on %s (%s)", len(runner.targets), path, source.describe(),
                 providers.reason)
        collected = collect(runner, source, histograms=method != "max", nan_policy=nan_policy)
    finally:
        runner.close()
    tensors = {}
    for name in runner.targets:
        tensors[name] = _stats(name, collected, _amax(name, collected, method, percentile))
    params: dict[str, object] = {"nan_policy": nan_policy, "all_tensors": all_tensors, "data": source.describe(),
                                 "provider": providers.providers[0]}
    if method != "max":
        params.update(bins=NUM_BINS, range=f"one pass: [0, max|x|], re-binned from {FINE_BINS} power-of-two bins")
    if method == "entropy":
        params["levels"] = NUM_LEVELS
    if method == "percentile":
        params["percentile"] = percentile
    return ScaleTable(digest, method, params, collected.samples, tensors)


__all__ = ["calibrate", "METHODS"]
