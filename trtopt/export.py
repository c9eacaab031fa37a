"""torch -> ONNX export that verifies itself against torch in ONNX Runtime.

The model is exported to memory, checked (onnx.checker, opset, dynamic batch axis), given
provenance metadata, run in ONNX Runtime beside torch on real samples at several batch sizes, and
only then written atomically. A failed export or a parity miss therefore leaves no file behind.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trtopt import __version__
from trtopt.errors import TrtoptError, UsageError
from trtopt.fileio import atomic_write_bytes, ensure_writable_dir, sha256_bytes, sha256_file
from trtopt.models import InputSpec, model_input_spec

log = logging.getLogger("trtopt.export")

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_AXIS = "batch"
MIN_OPSET = 17


@dataclass
class ExportResult:
    path: str
    max_abs_diff: float  # worst |onnxruntime - torch| over all verified batch sizes
    opset: int  # of the written graph (the dynamo exporter may raise the requested one)
    model_name: str
    dynamic_batch: bool
    batch_sizes: tuple[int, ...]  # batch sizes the parity check ran at
    samples: str  # "digits" (real data) or "random" (seeded normal)
    exporter: str  # "torchscript" or "dynamo"
    sha256: str  # of the written ONNX file
    metadata: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


EXPORTERS = ("auto", "torchscript", "dynamo")


def _export_bytes(model: Any, example: Any, opset: int, dynamic_batch: bool, exporter: str) -> tuple[bytes, str]:
    """Serialized ONNX and the exporter that made it.

    "auto" takes the TorchScript exporter while torch still has it (fast, and it honours opset 17
    exactly) and falls back to the torch.export-based one, which may raise the opset to 18.
    """
    import torch

    if exporter != "dynamo":
        axes = {INPUT_NAME: {0: BATCH_AXIS}, OUTPUT_NAME: {0: BATCH_AXIS}} if dynamic_batch else None
        buffer = io.BytesIO()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (example,), buffer, dynamo=False, input_names=[INPUT_NAME],
                                  output_names=[OUTPUT_NAME], dynamic_axes=axes, opset_version=opset,
                                  do_constant_folding=True)
            return buffer.getvalue(), "torchscript"
        except TypeError:  # this torch has no `dynamo` switch any more: the legacy exporter is gone
            if exporter == "torchscript":
                raise UsageError(
                    "this torch no longer has the TorchScript ONNX exporter; use --exporter dynamo"
                ) from None
        except RuntimeError as exc:  # an opset newer than the TorchScript exporter knows: the dynamo one may
            if "opset" not in str(exc) or exporter == "torchscript":
                raise
    shapes = ({0: torch.export.Dim(BATCH_AXIS, min=1)},) if dynamic_batch else None
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):  # it prints progress to stdout
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=shapes,
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
    return program.model_proto.SerializeToString(), "dynamo"


def _max_opset() -> int:
    """The newest opset this torch's exporters write (the installed onnx package may know newer ones)."""
    import onnx

    try:
        from torch.onnx._constants import ONNX_MAX_OPSET  # not public API; absent in some releases
    except ImportError:
        return int(onnx.defs.onnx_opset_version())
    return min(int(ONNX_MAX_OPSET), int(onnx.defs.onnx_opset_version()))


def _verification_samples(spec: InputSpec, count: int) -> tuple[np.ndarray, str]:
    if tuple(spec.shape) == (1, 16, 16):
        from trtopt.data.digits import load_digits_split

        x, _ = load_digits_split("test")
        return x[:count], "digits"
    rng = np.random.default_rng(0)
    return rng.standard_normal((count, *spec.shape)).astype(np.float32), "random"


def _check_graph(model: Any, dynamic_batch: bool, source: str) -> int:
    """Validate what later stages rely on; returns the graph's default-domain opset."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise TrtoptError(f"exported ONNX for {source} fails onnx.checker: {exc}") from exc
    domain_opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if domain_opset < MIN_OPSET:
        raise TrtoptError(f"exported ONNX for {source} has opset {domain_opset}, need >= {MIN_OPSET}")
    names = ([i.name for i in model.graph.input], [o.name for o in model.graph.output])
    if names != ([INPUT_NAME], [OUTPUT_NAME]):
        raise TrtoptError(f"exported ONNX for {source} has inputs/outputs {names}, expected ['input'], ['logits']")
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    if dynamic_batch and batch_dim.dim_param != BATCH_AXIS:
        raise TrtoptError(f"exported ONNX for {source}: input batch axis is not the dynamic axis {BATCH_AXIS!r}")
    return int(domain_opset)


def export_onnx(
    checkpoint: str | Path,
    output: str | Path,
    *,
    opset: int = MIN_OPSET,
    dynamic_batch: bool = True,
    verify_batch_sizes: tuple[int, ...] = (1, 8),
    atol: float = 1e-4,
    exporter: str = "auto",
) -> ExportResult:
    """Export a trtopt checkpoint to `output` and prove ONNX Runtime matches torch within `atol`.

    With `dynamic_batch=False` the graph is fixed to the first of `verify_batch_sizes`, and only that
    size is verified. Raises UsageError for bad arguments or checkpoints, TrtoptError on a parity miss.
    """
    newest = _max_opset()
    if not MIN_OPSET <= opset <= newest:
        raise UsageError(f"--opset must be between {MIN_OPSET} and {newest} (the newest this torch exports), "
                         f"got {opset}")
    if exporter not in EXPORTERS:
        raise UsageError(f"--exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    sizes = tuple(int(b) for b in verify_batch_sizes)
    if not sizes or min(sizes) < 1:
        raise UsageError(f"verification batch sizes must be positive integers, got {verify_batch_sizes}")
    if not dynamic_batch:
        sizes = sizes[:1]
    target = Path(output)
    ensure_writable_dir(target.parent if str(target.parent) else ".")
    if target.is_dir():
        raise UsageError(f"output {target} is a folder; expected a file path such as {target / 'model.onnx'}")
    if not Path(checkpoint).is_file():
        raise UsageError(f"checkpoint not found: {checkpoint}")
    import onnx
    import onnxruntime as ort
    import torch

    from trtopt.train.checkpoint import load_checkpoint, model_from_checkpoint

    state = load_checkpoint(checkpoint)
    model = model_from_checkpoint(state, checkpoint)
    name, config = state["model_name"], dict(state["model_config"])
    spec = InputSpec.from_json(state["input_spec"]) if "input_spec" in state else model_input_spec(name, **config)

    samples, sample_kind = _verification_samples(spec, max(sizes))
    with torch.no_grad():
        data, used = _export_bytes(model, torch.from_numpy(samples[: sizes[0]]), opset, dynamic_batch, exporter)
    proto = onnx.load_from_string(data)
    metadata = {
        "trtopt.model": name,
        "trtopt.model_config": json.dumps(config, sort_keys=True),
        "trtopt.version": __version__,
        "trtopt.checkpoint_sha256": sha256_file(checkpoint),
        "trtopt.input_normalization": json.dumps({"mean": list(spec.mean), "std": list(spec.std)}),
        "trtopt.dataset": str(state.get("dataset", "")),
    }
    onnx.helper.set_model_props(proto, metadata)
    proto.producer_name, proto.producer_version = "trtopt", __version__
    graph_opset = _check_graph(proto, dynamic_batch, str(checkpoint))
    data = proto.SerializeToString()

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    worst = 0.0
    for size in sizes:
        batch = samples[:size]
        with torch.no_grad():
            expected = model(torch.from_numpy(batch)).numpy()
        (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch})
        diff = float(np.max(np.abs(got - expected)))
        log.info("export parity at batch %d: max abs diff %.3g", size, diff)
        if not np.isfinite(diff) or diff > atol:
            raise TrtoptError(f"ONNX Runtime output of {name} differs from torch by {diff:.3g} at batch {size} "
                              f"(tolerance {atol:g}); nothing was written to {target}")
        worst = max(worst, diff)
    atomic_write_bytes(target, data)
    return ExportResult(
        path=str(target),
        max_abs_diff=worst,
        opset=graph_opset,
        model_name=name,
        dynamic_batch=dynamic_batch,
        batch_sizes=sizes,
        samples=sample_kind,
        exporter=used,
        sha256=sha256_bytes(data),
        metadata=metadata,
    )
