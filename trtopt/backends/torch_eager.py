"""PyTorch runner for zoo checkpoints: the baseline a user would otherwise reach for.

Eager mode by default; with ``compile=True`` the model goes through ``torch.compile`` and, when
compilation fails on this machine (no C++ toolchain, unsupported op), falls back to eager and says
so in ``notes`` instead of failing the benchmark. Imported only for checkpoint targets: the rest of
trtopt stays free of torch.

Thread-safety: ``thread_safe`` is False because ``torch.set_num_threads`` is process-wide and
compiled graphs may recompile on first use from a new thread; give each caller its own runner.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trtopt.backends.base import Runner
from trtopt.errors import first_line
from trtopt.tensors import TensorInfo
from trtopt.export import BATCH_AXIS, INPUT_NAME, OUTPUT_NAME
from trtopt.models import InputSpec, model_input_spec
from trtopt.train.checkpoint import load_checkpoint, model_from_checkpoint


class TorchRunner(Runner):
    """Runs a trtopt checkpoint's model on CPU with the same I/O names as its ONNX export."""

    backend = "torch"
    thread_safe = False

    def __init__(self, checkpoint: str | os.PathLike[str], threads: int | None = None, compile: bool = False) -> None:
        if threads:
            torch.set_num_threads(threads)
        state = load_checkpoint(checkpoint)
        self.path = Path(checkpoint)
        spec = (InputSpec.from_json(state["input_spec"]) if "input_spec" in state
                else model_input_spec(state["model_name"], **state["model_config"]))
        self._model: Any = model_from_checkpoint(state, checkpoint)
        self._inputs = [TensorInfo(INPUT_NAME, np.dtype(spec.dtype), (BATCH_AXIS, *spec.shape))]
        with torch.inference_mode():
            probe = self._model(torch.zeros((1, *spec.shape), dtype=getattr(torch, spec.dtype)))
        self._outputs = [TensorInfo(OUTPUT_NAME, np.dtype(np.float32), (BATCH_AXIS, *probe.shape[1:]))]
        self.compiled = False
        if compile:
            self._try_compile(spec)

    def _try_compile(self, spec: InputSpec) -> None:
        eager = self._model
        try:
            compiled = torch.compile(eager)
            with torch.inference_mode():
                compiled(torch.zeros((1, *spec.shape), dtype=getattr(torch, spec.dtype)))
        except Exception as exc:  # noqa: BLE001 - torch.compile raises many backend-specific types; eager still works
            self._add_note(f"torch.compile failed, ran eager instead: {first_line(exc)[:200]}")
            return
        self._model = compiled
        self.compiled = True

    @property
    def closed(self) -> bool:
        return self._model is None

    def _infer(self, feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            result = self._model(torch.from_numpy(feed[INPUT_NAME]))
        return {OUTPUT_NAME: result.float().numpy()}

    def close(self) -> None:
        self._model = None
