"""``calibrate()``: an FP32 ONNX model and calibration data in, a :class:`ScaleTable` out."""
from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trtopt.data.sources import DataSource, open_source
from trtopt.errors import UsageError
from trtopt.fileio import sha256_file
from trtopt.quantization.calibrators import (AUTO_CANDIDATES, METHODS, NUM_LEVELS, auto_bins, entropy_bins, mse_bins,
                                            percentile_bins)
from trtopt.quantization.collect import Collected, collect
from trtopt.quantization.histogram import FINE_BINS, NUM_BINS, TAIL_SIZE, AbsHistogram
from trtopt.quantization.table import ScaleTable, TensorStats
from trtopt.settings import CalibrationSettings

log = logging.getLogger("trtopt.calibrate")

# A tensor that is zero everywhere quantizes to 0 at any scale; 1.0 keeps scale = 1/127 far from
# both 0 (a division by zero in Q) and float16 subnormals.
DEGENERATE_AMAX = 1.0


def _amax(name: str, collected: Collected, method: str, percentile: float) -> tuple[float, str]:
    """(amax, method that produced it): ``auto`` names the candidate it chose for this tensor."""
    absmax = collected.ranges[name].absmax
    if absmax == 0:
        log.warning("tensor %r is zero everywhere (or had no finite values); amax set to %s", name, DEGENERATE_AMAX)
        return DEGENERATE_AMAX, method
    if method == "max":
        return absmax, method
    hist = collected.histograms[name]  # type: ignore[index]
    kept, method = kept_bins(hist, method, percentile)
    return (kept * hist.width if kept < hist.bins else absmax), method


def kept_bins(hist: AbsHistogram, method: str, percentile: float) -> tuple[int, str]:
    """(bins kept, method that picked them) by a histogram method: ``auto`` names its chosen candidate.

    Shared with ``scripts/calibration_agreement.py``, so it measures the very picks calibration makes.
    """
    if method == "auto":
        return auto_bins(hist.counts, hist.nonzero_counts())
    if method == "percentile":
        return percentile_bins(hist.counts, percentile), method
    nonzero = hist.nonzero_counts()
    return (entropy_bins(nonzero) if method == "entropy" else mse_bins(nonzero)), method


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


def calibrate(model_path: str | os.PathLike[str], data: DataSource | str | None = None,
              settings: CalibrationSettings | None = None, *, batch_size: int = 16, threads: int | None = None,
              all_tensors: bool = False, part: str = "all", source_options: Mapping[str, Any] | None = None,
              model_name: str | os.PathLike[str] | None = None, **overrides: Any) -> ScaleTable:
    """Calibrate every activation a Q/DQ pass may need (all float activations with ``all_tensors``).

    ``data`` is a DataSource or a spec for :func:`trtopt.data.sources.open_source` (default:
    ``settings.data``; then ``batch_size``, ``settings.samples``, ``settings.seed``, ``part`` and
    ``source_options`` such as image ``layout`` or random ``shapes`` apply). `overrides` are
    :class:`~trtopt.settings.CalibrationSettings` fields (``method="max"``, ``samples=64``;
    ``max_samples`` is the older name of ``samples``; ``device`` picks where the forward pass runs,
    see :mod:`trtopt.quantization.providers`). The table records the sha256 of the exact model bytes.
    ``model_name`` is how messages name the model (default: ``model_path``): the user's file when
    ``model_path`` is a prepared temporary copy of it (:func:`~trtopt.quantization.modelio.prepared_source`).
    """
    import onnx

    from trtopt.quantization.providers import select_providers
    from trtopt.quantization.session import TargetRunner

    if "max_samples" in overrides:
        overrides["samples"] = overrides.pop("max_samples")
    settings = dataclasses.replace(settings or CalibrationSettings(), **overrides)
    problems = settings.problems()
    if problems:
        raise UsageError("; ".join(problems))
    data = settings.data if data is None else data
    if data is None:
        raise UsageError("--calib-data is required (digits, random, an .npz file, a folder, or file.py:function)")
    method = settings.method
    if method not in METHODS:
        raise UsageError(f"--calib-method must be one of {list(METHODS)}, got {method!r}")
    path = Path(model_path)
    shown = model_name or path
    if not path.is_file():
        raise UsageError(f"ONNX model not found: {path}")
    providers = select_providers(settings.device)
    digest = sha256_file(path)
    try:
        model = onnx.load(os.fspath(path), load_external_data=False)  # the graph; the session reads the weights
    except Exception as exc:  # protobuf/onnx raise several types for a corrupt file
        raise UsageError(f"cannot read ONNX model {shown}: {exc}") from exc
    if not model.graph.node:
        raise UsageError(f"{shown} has an empty graph: no activations to calibrate")
    runner = TargetRunner(path, model, providers, all_tensors=all_tensors, threads=threads)
    del model
    try:
        source = data if isinstance(data, DataSource) else open_source(
            data, runner.inputs, batch_size=batch_size, max_samples=settings.samples, seed=settings.seed, part=part,
            **(source_options or {}))
        log.info("calibrating %d tensors of %s on %s (%s)", len(runner.targets), shown, source.describe(),
                 providers.reason)
        collected = collect(runner, source, histograms=method != "max", nan_policy=settings.nan_policy)
    finally:
        runner.close()
    tensors = {}
    chosen: dict[str, str] = {}
    for name in runner.targets:
        amax, chosen[name] = _amax(name, collected, method, settings.percentile)
        tensors[name] = _stats(name, collected, amax)
    params: dict[str, object] = {
        "nan_policy": settings.nan_policy,
        "all_tensors": all_tensors,
        "data": source.describe(),
        "provider": providers.providers[0],
    }
    if method != "max":
        params.update(bins=NUM_BINS, range=f"one pass: [0, max|x|], re-binned from {FINE_BINS} power-of-two bins, "
                                                f"the largest {TAIL_SIZE} values exact")
    if method in ("entropy", "auto"):
        params["levels"] = NUM_LEVELS
    if method == "auto":
        params["candidates"] = list(AUTO_CANDIDATES)
        params["chosen"] = chosen  # per tensor: the candidate with the smallest quantization error
    if method == "percentile":
        params["percentile"] = settings.percentile
    return ScaleTable(digest, method, params, collected.samples, tensors)


__all__ = ["calibrate", "METHODS"]
