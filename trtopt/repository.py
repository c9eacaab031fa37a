"""The engine repository: ``engines/<name>/`` folders with a manifest, content-addressed reuse, load().

An engine folder holds the backend's engine file, the ONNX it was built from (Q/DQ or FP16 when
converted), the scale table for INT8, and ``manifest.json``. Folders are assembled in a staging
folder and renamed into place (trtopt.fileio.atomic_directory), so a killed build never leaves a
folder this module accepts.

Reuse contract: the manifest carries a ``cache_key`` (sha256 over the source ONNX hash, every build
option, the calibration inputs, backend version and device). A build whose key matches an existing,
intact folder is a cache hit: nothing is recalibrated or rebuilt.

Manifest layout (schema version 1)::

    schema_version, name, cache_key, created, trtopt_version, command,
    backend: {name, version}, device: {...}, precision,
    source: {path, sha256}, model: {file, sha256, encoding},
    engine: {file, sha256, bytes},
    calibration: {table_id, method, file, data, samples} | null,
    io: {inputs: [...], outputs: [...], profile: {min, opt, max}},
    build_options: {...}, build_seconds,
    accuracy: {...AccuracyReport.to_json(), data, budget} | null,
    timing: {batch, median_ms},
    <backend-specific sections, e.g. "onnxruntime" or "tensorrt">
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from trtopt.backends.base import Runner
from trtopt.errors import TrtoptError, UsageError
from trtopt.fileio import read_json, sha256_file

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def read_manifest(engine_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of an engine folder, schema-checked; UsageError when the folder is not an engine."""
    folder = Path(engine_dir)
    if not folder.is_dir():
        raise UsageError(
            f"engine folder not found: {folder} (build one with `trtopt build MODEL.onnx --name {folder.name}`)"
        )
    path = folder / MANIFEST
    if not path.is_file():
        raise UsageError(
            f"{folder} is not an engine folder: no {MANIFEST} (an interrupted build leaves none; rebuild it)"
        )
    manifest = read_json(path, "engine manifest")
    if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
        found = manifest.get("schema_version") if isinstance(manifest, dict) else None
        raise UsageError(
            f"{path}: manifest schema version {found!r}, this trtopt reads {SCHEMA_VERSION}; rebuild the engine"
        )
    for key in ("backend", "device", "engine", "precision"):
        if key not in manifest:
            raise UsageError(f"{path}: manifest lacks {key!r}; rebuild the engine")
    return manifest


def rebuild_hint(manifest: dict[str, Any]) -> str:
    command = manifest.get("command")
    if command:
        return f"rebuild it here with: {command} --force"
    source = manifest.get("source", {}).get("path", "MODEL.onnx")
    return f"rebuild it here with `trtopt build {source} --name {manifest.get('name', 'NAME')} --force`"


def verify_engine_file(engine_dir: Path, manifest: dict[str, Any]) -> Path:
    """The engine file, after checking it still has the bytes the build wrote."""
    engine = manifest["engine"]
    path = Path(engine_dir) / str(engine.get("file", ""))
    if not path.is_file():
        raise TrtoptError(f"engine {manifest.get('name')!r}: engine file {path} is missing; {rebuild_hint(manifest)}")
    digest = sha256_file(path)
    if digest != engine.get("sha256"):
        raise TrtoptError(f"engine {manifest.get('name')!r}: {path} has sha256 {digest[:16]}..., the manifest recorded "
                          f"{str(engine.get('sha256'))[:16]}... (modified or corrupt); {rebuild_hint(manifest)}")
    return path


def load(engine_dir: str | os.PathLike[str], **runner_options: Any) -> Runner:
    """Open ``engines/NAME`` with its backend's Runner, refusing engines that do not belong here.

    Refused (TrtoptError, with how to rebuild): a different backend version or device than the
    build recorded, or an engine file whose sha256 differs from the manifest. `runner_options` go
    to the backend's load (e.g. ``threads=`` for ONNX Runtime).
    """
    from trtopt.backends.registry import get_backend

    folder = Path(engine_dir)
    manifest = read_manifest(folder)
    backend = get_backend(str(manifest["backend"].get("name")))
    usable, why = backend.availability()
    if not usable:
        raise TrtoptError(
            f"engine {manifest.get('name')!r} needs the {backend.name} backend, which cannot run here: {why}"
        )
    problems = backend.compatibility_problems(manifest)
    if problems:
        raise TrtoptError(
            f"cannot load engine {manifest.get('name')!r}: " + "; ".join(problems) + f"; {rebuild_hint(manifest)}"
        )
    verify_engine_file(folder, manifest)
    return backend.load(folder, manifest, **runner_options)


def cached_manifest(engine_dir: Path, cache_key: str) -> dict[str, Any] | None:
    """The manifest of an intact engine built from identical inputs, or None (then build)."""
    try:
        manifest = read_manifest(engine_dir)
        if manifest.get("cache_key") != cache_key:
            return None
        verify_engine_file(engine_dir, manifest)
    except TrtoptError:  # missing, stale schema or modified file: not reusable, build again
        return None
    return manifest
