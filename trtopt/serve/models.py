"""The served models: engine folders found on the command line, loaded into runner pools.

A model is served under its folder name (``engines/NAME``), version = the engine's build (the first
12 hex digits of the engine file's sha256, as recorded in the manifest), so a rebuilt engine is a
new version. Loading opens ``instances`` runners with ``trtopt.load`` and runs each once on a
warm-up batch; the server reports ready only after every model did.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trtopt.backends.base import Runner
from trtopt.tensors import TensorInfo, check_tensor
from trtopt.errors import UsageError
from trtopt.repository import MANIFEST, load, read_manifest
from trtopt.serve.batcher import DynamicBatcher, Outputs, PendingRequest
from trtopt.serve.codec import InferenceRequest
from trtopt.serve.datatypes import v2_name
from trtopt.serve.errors import BadRequest, NotFound, Unavailable
from trtopt.serve.metrics import ModelStats, ServeMetrics
from trtopt.serve.triton_config import model_config, platform_of, tensor_dims
from trtopt.serve.settings import BatchingSettings, ServerSettings, effective_batching, engine_max_batch_size


def find_engines(paths: Iterable[str | os.PathLike[str]]) -> dict[str, Path]:
    """{served name: engine folder} from engine folders and folders of engine folders."""
    found: dict[str, Path] = {}
    for raw in paths:
        path = Path(raw)
        if (path / MANIFEST).is_file():
            folders = [path]
        elif path.is_dir():
            folders = sorted(
                p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file()
            )
            if not folders:
                raise UsageError(
                    f"{path} holds no engine folders (folders with {MANIFEST}); build one with `trtopt build`"
                )
        else:
            raise UsageError(f"{path} is not an engine folder or a folder of engines")
        for folder in folders:
            if folder.name in found and found[folder.name].resolve() != folder.resolve():
                raise UsageError(
                    f"two engines named {folder.name!r}: {found[folder.name]} and {folder}; serve one of them"
                )
            found[folder.name] = folder
    if not found:
        raise UsageError("no engines to serve; pass engine folders or a folder of engines")
    return found


def _warmup_feed(inputs: Sequence[TensorInfo], profile: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    """Zeros of the profile's smallest shape (1 for any dynamic dimension without a profile)."""
    low = (profile or {}).get("min", {})
    feed = {}
    for info in inputs:
        shape = low.get(info.name) or [d if isinstance(d, int) else 1 for d in info.shape]
        feed[info.name] = np.zeros(shape, dtype=info.dtype)
    return feed


@dataclass
class ServedModel:
    """One model version: its tensors, batching settings, runners and batcher."""

    name: str
    folder: Path
    manifest: dict[str, Any]
    requested: BatchingSettings
    stats: ModelStats
    settings: BatchingSettings = field(init=False)
    inputs: list[TensorInfo] = field(default_factory=list)
    outputs: list[TensorInfo] = field(default_factory=list)
    ready: bool = False
    _runners: list[Runner] = field(default_factory=list)
    _batcher: DynamicBatcher | None = None

    def __post_init__(self) -> None:
        self.settings = self.requested

    def require_ready(self) -> "ServedModel":
        if not self.ready:
            raise Unavailable(f"model {self.name!r} is not ready (loading, or shutting down)")
        return self

    @property
    def version(self) -> str:
        return self.stats.version

    @property
    def backend(self) -> str:
        return str(self.manifest["backend"].get("name"))

    @property
    def profile(self) -> Mapping[str, Any] | None:
        return (self.manifest.get("io") or {}).get("profile")

    def load(self) -> None:
        """Open the runner pool, run the warm-up on each runner, start the batcher."""
        options = (
            {"threads": self.requested.threads} if self.requested.threads and self.backend == "onnxruntime" else {}
        )
        for _ in range(self.requested.instances):
            self._runners.append(load(self.folder, **options))
        first = self._runners[0]
        self.inputs, self.outputs = first.inputs, first.outputs
        self.settings = effective_batching(
            self.requested, engine_max_batch_size(self.inputs, self.outputs, self.profile), self.name
        )
        warmup = _warmup_feed(self.inputs, self.profile)
        for runner in self._runners:
            runner.infer(warmup)
        self._batcher = DynamicBatcher(self.name, self._runners, self.settings, self.stats)
        self.ready = True

    def close(self) -> None:
        """Finish queued requests, then release the runners."""
        self.ready = False
        if self._batcher is not None:
            self._batcher.stop()
        for runner in self._runners:
            runner.close()

    def submit(self, request: InferenceRequest) -> Future[Outputs]:
        """Validate one request against this model and queue it; BadRequest/Unavailable raised here.

        The request's own `timeout` parameter (microseconds) wins over the model's default timeout.
        """
        self.require_ready()
        assert self._batcher is not None
        try:
            feed, rows = self._validate(request)
            timeout_us = request.timeout_us or self.settings.default_timeout_microseconds
            pending = PendingRequest(
                feed, rows, tuple((n, a.shape[1:]) for n, a in feed.items()), deadline=_deadline(timeout_us)
            )
            return self._batcher.submit(pending)
        except (BadRequest, Unavailable) as exc:
            self.stats.rejected(exc.http_status)
            raise

    def _validate(self, request: InferenceRequest) -> tuple[dict[str, np.ndarray], int]:
        expected = {info.name: info for info in self.inputs}
        missing = sorted(set(expected) - set(request.inputs))
        unknown = sorted(set(request.inputs) - set(expected))
        if missing or unknown:
            problem = "; ".join(
                ([f"unknown input(s) {unknown}"] if unknown else [])
                + ([f"missing input(s) {missing}"] if missing else [])
            )
            raise BadRequest(f"model {self.name!r}: {problem}; it takes {[self._describe(i) for i in self.inputs]}")
        for name, array in request.inputs.items():
            info = expected[name]
            want = v2_name(info.dtype)
            if request.datatypes.get(name, want) != want:
                raise BadRequest(
                    f"input {name!r}: datatype {request.datatypes[name]} given, model {self.name!r} expects {want}"
                )
            try:
                check_tensor(info, array.dtype, array.shape)
            except UsageError as exc:
                raise BadRequest(f"model {self.name!r}: {exc}") from exc
        rows = 1
        if self.settings.max_batch_size:
            batch_sizes = {array.shape[0] for array in request.inputs.values()}
            if len(batch_sizes) != 1:
                raise BadRequest(
                    f"model {self.name!r}: inputs disagree on the batch size (axis 0): {sorted(batch_sizes)}"
                )
            rows = batch_sizes.pop()
            if not 1 <= rows <= self.settings.max_batch_size:
                raise BadRequest(
                    f"model {self.name!r}: batch of {rows} outside [1, max_batch_size {self.settings.max_batch_size}]"
                )
        # np.require keeps a rank-0 input rank 0 (np.ascontiguousarray would make it shape [1])
        return {name: np.require(array, requirements="C") for name, array in request.inputs.items()}, rows

    def output_names(self, requested: Sequence[str] | None) -> list[str]:
        names = [info.name for info in self.outputs]
        if requested is None:
            return names
        unknown = sorted(set(requested) - set(names))
        if unknown:
            raise BadRequest(f"model {self.name!r} has no output(s) {unknown}; its outputs are {names}")
        return list(requested)

    def _describe(self, info: TensorInfo) -> str:
        return f"{info.name}: {v2_name(info.dtype)}{tensor_dims(info, batched=False)}"

    def metadata(self) -> dict[str, Any]:
        """The v2 model metadata response (shapes with the batch axis, -1 where dynamic)."""

        def tensors(infos: Sequence[TensorInfo]) -> list[dict[str, Any]]:
            return [
                {"name": i.name, "datatype": v2_name(i.dtype), "shape": tensor_dims(i, batched=False)} for i in infos
            ]

        return {
            "name": self.name,
            "versions": [self.version],
            "platform": platform_of(self.backend),
            "inputs": tensors(self.inputs),
            "outputs": tensors(self.outputs),
        }

    def config(self) -> dict[str, Any]:
        """Triton's model configuration for this model as served."""
        return model_config(self.name, self.backend, self.inputs, self.outputs, self.settings)


def _deadline(timeout_us: int | None) -> float:
    return time.monotonic() + timeout_us / 1e6 if timeout_us else math.inf


class ModelRepository:
    """Every served model, looked up by name and optional version; loads them in the background."""

    def __init__(self, engines: Mapping[str, Path], settings: ServerSettings, metrics: ServeMetrics) -> None:
        unknown = sorted(set(settings.models) - set(engines))
        if unknown:
            raise UsageError(
                f"the serve config names model(s) {unknown} that are not served; served: {sorted(engines)}"
            )
        self.models: dict[str, ServedModel] = {}
        for name, folder in engines.items():
            manifest = read_manifest(folder)
            version = str((manifest.get("engine") or {}).get("sha256", ""))[:12] or "1"
            self.models[name] = ServedModel(
                name, folder, manifest, settings.batching_for(name), ModelStats(metrics, name, version)
            )
        self.load_error: BaseException | None = None
        self._loaded = threading.Event()

    @property
    def ready(self) -> bool:
        return self._loaded.is_set() and all(m.ready for m in self.models.values())

    def load_all(self) -> None:
        """Load and warm up every model (called in a thread, so health endpoints answer meanwhile)."""
        try:
            for model in self.models.values():
                model.load()
        except BaseException as exc:  # noqa: BLE001 - reported by the server, which then exits 1
            self.load_error = exc
        finally:
            self._loaded.set()

    def get(self, name: str, version: str = "") -> ServedModel:
        model = self.models.get(name)
        if model is None:
            raise NotFound(f"unknown model {name!r}; served models: {sorted(self.models)}")
        if version and version != model.version:
            raise NotFound(f"model {name!r} has no version {version!r}; served version: {model.version!r}")
        return model

    def close(self) -> None:
        for model in self.models.values():
            model.close()
