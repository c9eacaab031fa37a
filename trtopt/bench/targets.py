"""What can be benchmarked: engine folders, ONNX files, zoo checkpoints and models on a v2 server, behind one `Target`.

A target spec on the command line is ``PATH`` or ``NAME=PATH``. The name keys the target in reports
and in the history, so the same name over time means "the same thing to watch" even when the file
behind it changes. Each call of ``Target.open()`` returns a fresh runner: concurrent callers and
server workers each get their own.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtopt.backends.base import Runner
from trtopt.bench.remote import ModelUrl, RemoteRunner, is_server_url
from trtopt.errors import UsageError

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
_EXPECTED = ("an engine folder (with manifest.json), an .onnx file, a zoo checkpoint (.pt), "
             "or a served model (http://HOST:PORT/MODEL, grpc://HOST:PORT/MODEL)")


@dataclass
class Target:
    name: str
    path: Path | str  # a URL for server targets
    kind: str  # engine | onnx | checkpoint | server
    backend: str
    precision: str
    size_bytes: int | None
    open: Callable[[], Runner] = field(repr=False)
    details: dict[str, Any] = field(default_factory=dict)

    def import_backend(self) -> None:
        """Import the backend's libraries, so their one-time cost is not charged to this target's memory."""
        module = {"onnx": "trtopt.backends.onnxruntime", "checkpoint": "trtopt.backends.torch_eager",
                  "server": "trtopt.bench.remote"}.get(self.kind)
        if module is None:
            from trtopt.backends.registry import BACKEND_MODULES

            module = BACKEND_MODULES.get(self.backend)
        if module is not None:
            importlib.import_module(module)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "path": os.fspath(self.path), "kind": self.kind, "backend": self.backend,
                "precision": self.precision, "engine_size_bytes": self.size_bytes, **self.details}


def onnx_precision(path: Path) -> str:
    """int8 when the graph has QuantizeLinear nodes, fp16 when it computes in float16, else fp32."""
    import onnx

    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends for files that are not ONNX
        raise UsageError(f"target {path} is not a readable ONNX model: {exc}") from exc
    ops = {node.op_type for node in model.graph.node}
    if "QuantizeLinear" in ops or "DynamicQuantizeLinear" in ops:
        return "int8"
    if any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer):
        return "fp16"
    return "fp32"


def _onnx_target(name: str, path: Path, threads: int | None) -> Target:
    from trtopt.backends.onnxruntime import OnnxRuntimeRunner

    return Target(name, path, "onnx", "onnxruntime", onnx_precision(path), path.stat().st_size,
                  lambda: OnnxRuntimeRunner(path, threads=threads), {"threads": threads})


def _engine_target(name: str, path: Path, threads: int | None) -> Target:
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise UsageError(f"target {path} is a folder without manifest.json; expected {_EXPECTED}")
    from trtopt.repository import read_manifest

    manifest = read_manifest(path)  # schema-checked: a hand-edited manifest is a usage error naming it
    backend = str(manifest["backend"].get("name", "unknown"))
    size = manifest["engine"].get("bytes")
    # only CPU backends take a thread count; TensorRT engines ignore it
    options = {"threads": threads} if threads and backend == "onnxruntime" else {}

    def open_engine() -> Runner:
        from trtopt.repository import load

        return load(path, **options)

    return Target(name, path, "engine", backend, str(manifest.get("precision", "unknown")), size, open_engine,
                  {"threads": options.get("threads")})


def _checkpoint_target(name: str, path: Path, threads: int | None, compile_mode: bool) -> Target:
    def open_checkpoint() -> Runner:
        from trtopt.backends.torch_eager import TorchRunner

        return TorchRunner(path, threads=threads, compile=compile_mode)

    backend = "torch.compile" if compile_mode else "torch-eager"
    return Target(name, path, "checkpoint", backend, "fp32", path.stat().st_size, open_checkpoint, {"threads": threads})


def _server_target(name: str | None, spec: str) -> Target:
    url = ModelUrl.parse(spec)
    return Target(name or url.model, str(url), "server", f"server-{url.scheme}", "served", None,
                  lambda: RemoteRunner(url), {"server": str(url)})


def split_spec(spec: str) -> tuple[str | None, str]:
    """``NAME=PATH`` -> (NAME, PATH); ``PATH`` -> (None, PATH). A path containing '=' wins if it exists."""
    name, sep, path = spec.partition("=")
    if sep and name and not Path(spec).exists():
        return name, path
    return None, spec


def resolve_target(spec: str, threads: int | None = None, torch_compile: bool = False) -> Target:
    """Turn a command-line target spec into a Target, or raise UsageError saying what was expected."""
    name, raw = split_spec(spec)
    if is_server_url(raw):
        return _server_target(name, raw)
    path = Path(raw)
    if not path.exists():
        raise UsageError(f"unknown target {spec!r}: {path} does not exist; expected {_EXPECTED}")
    if path.is_dir():
        return _engine_target(name or path.name, path, threads)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _onnx_target(name or path.stem, path, threads)
    if suffix in CHECKPOINT_SUFFIXES:
        default = f"{path.stem}-{'compile' if torch_compile else 'eager'}"
        return _checkpoint_target(name or default, path, threads, torch_compile)
    raise UsageError(f"unknown target {spec!r}: {path.name} has suffix {suffix or '(none)'}; expected {_EXPECTED}")


def resolve_targets(specs: list[str], baseline: str | None, threads: int | None = None,
                    torch_compile: bool = False) -> tuple[list[Target], Target | None]:
    """Resolve targets and the baseline; the baseline runs first (its outputs are the reference)."""
    if not specs and baseline is None:
        raise UsageError("no targets given; pass one or more TARGETs (engine folders, .onnx files, checkpoints)")
    targets = [resolve_target(spec, threads, torch_compile) for spec in specs]
    reference = None
    if baseline is not None:
        reference = next((t for t in targets if baseline in (t.name, os.fspath(t.path))), None)
        if reference is None:
            reference = resolve_target(baseline, threads, torch_compile)
            targets.insert(0, reference)
        else:
            targets.remove(reference)
            targets.insert(0, reference)
    names = [t.name for t in targets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UsageError(f"target name(s) {duplicates} given twice; name them apart with NAME=PATH")
    return targets, reference
