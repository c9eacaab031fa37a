"""Backends by name, loaded lazily, each implementing the Backend protocol.

A backend module (``trtopt.backends.onnxruntime``, ``trtopt.backends.tensorrt``, ...) exposes a
module-level ``BACKEND`` object satisfying :class:`Backend`. The engine repository and the build
pipeline talk only to this protocol, so adding a backend touches no pipeline code.
"""
from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from trtopt.backends.base import Runner
from trtopt.errors import UsageError
from trtopt.settings import EngineSettings
from trtopt.tensors import ShapeProfile

# name -> module that defines BACKEND (or "module:ATTRIBUTE" when one module serves several)
BACKEND_MODULES: dict[str, str] = {
    "onnxruntime": "trtopt.backends.onnxruntime",
    "tensorrt": "trtopt.backends.tensorrt",
    "onnxruntime-cuda": "trtopt.backends.onnxruntime_gpu:CUDA_BACKEND",
    "onnxruntime-tensorrt": "trtopt.backends.onnxruntime_gpu:TENSORRT_EP_BACKEND",
}
# `--backend auto` takes the first of these whose availability() says yes; the last one always can.
AUTO_ORDER: tuple[str, ...] = ("tensorrt", "onnxruntime")


@dataclass(frozen=True)
class BuildOptions:
    """What a backend's build() is asked for: the precision the ONNX already encodes, the shape
    profile, the Q/DQ encoding of an INT8 model, and the engine settings (the backend reads the
    fields it understands and declares the engine-affecting ones in ``engine_fields``)."""

    precision: str = "fp32"  # fp32 | fp16 | int8 (the ONNX handed to the backend already encodes it)
    profile: ShapeProfile = field(default_factory=ShapeProfile)
    encoding: str | None = None  # Q/DQ encoding of an int8 model (a name in quantization.encodings.ENCODINGS)
    engine: EngineSettings = field(default_factory=EngineSettings)

    def to_json(self, engine_fields: Sequence[str]) -> dict[str, Any]:
        """Recorded in the manifest and hashed into the cache key: only `engine_fields` of the engine settings."""
        return {"precision": self.precision, "profile": self.profile.to_json(), "encoding": self.encoding,
                **self.engine.to_json(engine_fields)}


@dataclass
class BuiltEngine:
    """What a backend's build() leaves in the staging folder."""

    engine_file: str  # file name inside the engine folder
    manifest_fields: dict[str, Any] = field(default_factory=dict)  # backend-specific manifest entries


class Backend(Protocol):
    name: str
    title: str  # how messages name it, e.g. "ONNX Runtime on the CPU"
    default_encoding: str  # Q/DQ encoding an INT8 build writes for this backend unless --encoding says otherwise
    float_precision: str  # what layers an INT8 build keeps float run in: fp16 where the device runs it fast, else fp32
    # EngineSettings fields that change the engine this backend builds (cache key and manifest take only these)
    engine_fields: tuple[str, ...]

    def availability(self) -> tuple[bool, str]:
        """(usable here?, one-line reason naming what is missing when not)."""

    def version(self) -> str: ...

    def device(self) -> dict[str, Any]:
        """Where engines run: {"kind": "cpu"|"cuda", "name": ..., "compute_capability": ...}."""

    def compatibility_problems(self, manifest: dict[str, Any]) -> list[str]:
        """Why the engine a manifest describes cannot run here (empty when it can)."""

    def check_options(self, options: BuildOptions) -> None:
        """UsageError naming the flag when this backend cannot build with `options` (called while planning)."""

    def build(self, onnx_path: Path, staging_dir: Path, options: BuildOptions) -> BuiltEngine: ...

    def load(self, engine_dir: Path, manifest: dict[str, Any], **runner_options: Any) -> Runner: ...


def exact_match_problems(manifest: dict[str, Any], version: str, device: dict[str, Any]) -> list[str]:
    """The default rule: an engine runs only with the backend version and on the device it was built for."""
    problems = []
    built_version = manifest["backend"].get("version")
    if built_version != version:
        problems.append(
            f"it was built with {manifest['backend'].get('name')} {built_version}, this machine has {version}"
        )
    if manifest["device"] != device:
        problems.append(f"it was built for device {_describe(manifest['device'])}, this machine is {_describe(device)}")
    return problems


def _describe(device: dict[str, Any]) -> str:
    extras = {k: v for k, v in device.items() if k not in ("kind", "name")}
    return f"{device.get('kind', '?')} {device.get('name', '?')!r}" + (f" {extras}" if extras else "")


def get_backend(name: str) -> Backend:
    module_name = BACKEND_MODULES.get(name)
    if module_name is None:
        raise UsageError(f"unknown backend {name!r}; choose one of {sorted(BACKEND_MODULES)} or auto")
    module_name, _, attribute = module_name.partition(":")  # "module" or "module:ATTRIBUTE"
    return getattr(importlib.import_module(module_name), attribute or "BACKEND")
