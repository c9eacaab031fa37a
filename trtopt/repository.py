"""The engine repository: ``engines/<name>/`` folders with a manifest, content-addressed reuse, load().

An engine folder holds the backend's engine file, the ONNX it was built from (Q/DQ or FP16 when
converted), the scale table for INT8, and ``manifest.json``. Folders are assembled in a staging
folder and published by replacing the ``engines/NAME`` symlink (trtopt.fileio.atomic_directory), so
a killed build never leaves a folder this module accepts and a reader never finds the name missing.

A manifest is data from whoever made the folder: file names in it must stay inside the folder,
and its text (name, recorded command) is printed escaped, never as terminal control or advice.

Reuse contract: the manifest carries a ``cache_key`` (sha256 over the source ONNX hash, every build
option, the calibration inputs, backend version and device). A build whose key matches an existing,
intact folder is a cache hit: nothing is recalibrated or rebuilt.

Manifest layout (schema version 2; version 1 recorded every build option and an ``extra`` dict in
``build_options``, version 2 records the backend's engine-affecting settings and a ``qdq`` part)::

    schema_version, name, cache_key, created, trtopt_version, command,
    backend: {name, version}, device: {...}, precision,
    source: {path, sha256}, model: {file, sha256, encoding[, float_layers: {precision, converted, kept_fp32}]
                                     [, int8_coverage: {weighted_layers, quantized_layers, quantized_weight_share,
                                       compute_share, macs_per_sample, quantized_macs_per_sample, float_layers,
                                       summary, warning} (INT8: trtopt.quantization.coverage)]},
    engine: {file, sha256, bytes},
    calibration: {table_id, method, file, data, samples[, seconds when calibrated by this build]} | null,
    io: {inputs: [...], outputs: [...], profile: {min, opt, max}},
    build_options: {precision, profile, encoding, <Backend.engine_fields>..., qdq: {...} | null}, build_seconds,
    accuracy: {...AccuracyReport.to_json(), data, budget} | null,
    timing: {batch, method, fastest_ms, median_ms, timing_rounds; ONNX Runtime INT8/FP16 also fp32_fastest_ms,
             fp32_median_ms, speedup, speed_vs_fp32, slower_than_fp32} (trtopt.latency),
    mixed_precision: {kept_float, float_precision, blocks, tried, evaluations, seconds, cost_vs_calibration,
                      latency_source, speedup} (budgeted INT8 only),
    <backend-specific sections, e.g. "onnxruntime" or "tensorrt">
"""
from __future__ import annotations

import os
import shlex
import time
from pathlib import Path
from typing import Any

from trtopt.backends.base import Runner
from trtopt.errors import TrtoptError, UsageError
from trtopt.fileio import lock_file, read_json, sha256_file

SCHEMA_VERSION = 2
MANIFEST = "manifest.json"


_LOAD_ATTEMPTS = 20
_RETRY_PAUSE_S = 0.01
_COMMAND_SHOWN = 300  # characters of a recorded build command shown in messages


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
        how = rebuild_hint(manifest) if isinstance(manifest, dict) else "rebuild the engine"
        raise UsageError(
            f"{path}: manifest schema version {printable(repr(found))}, this trtopt reads {SCHEMA_VERSION}; {how}"
        )
    for key, kind in (("backend", dict), ("device", dict), ("engine", dict), ("precision", str)):
        if not isinstance(manifest.get(key), kind):
            raise UsageError(
                f"{path}: manifest entry {key!r} is missing or not a {'mapping' if kind is dict else 'string'} "
                "(hand-edited?); rebuild the engine"
            )
    size = manifest["engine"].get("bytes")
    if size is not None and (type(size) is not int or size < 0):
        raise UsageError(f"{path}: manifest entry 'engine.bytes' is {printable(repr(size))}, not a byte count "
                         "(hand-edited?); rebuild the engine")
    problem = _io_problem(manifest.get("io"))
    if problem:
        raise UsageError(f"{path}: manifest entry 'io' {problem} (hand-edited?); rebuild the engine")
    return manifest


def _io_problem(io: Any) -> str | None:
    """What is wrong with the manifest's tensors and shape profile, or None (absent is fine: older builds)."""
    if io is None:
        return None
    if not isinstance(io, dict):
        return "is not a mapping"
    if any(not isinstance(io.get(key, []), list) for key in ("inputs", "outputs")):
        return "has inputs/outputs that are not lists"
    profile = io.get("profile")
    if profile is None:
        return None
    shapes_ok = isinstance(profile, dict) and all(
        isinstance(shapes, dict) and all(
            isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape) for shape in shapes.values())
        for shapes in profile.values())
    return None if shapes_ok else "has a profile that is not {min|opt|max: {input: [dims]}}"


def printable(text: str, limit: int = _COMMAND_SHOWN) -> str:
    """`text` with control characters (terminal escapes, newlines) shown as escapes, shortened to `limit`.

    Manifests may come from anyone: what they say is shown as data, never as terminal control.
    """
    shown = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(text))
    return shown if len(shown) <= limit else shown[:limit] + "..."


def rebuild_hint(manifest: dict[str, Any]) -> str:
    """How to rebuild, from the manifest's source path and name (quoted); its recorded command only as information."""
    recorded_source = manifest.get("source")
    source = recorded_source.get("path", "MODEL.onnx") if isinstance(recorded_source, dict) else "MODEL.onnx"
    hint = (f"rebuild it here with `trtopt build {printable(shlex.quote(str(source)))} "
            f"--name {printable(shlex.quote(str(manifest.get('name', 'NAME'))))} --force` plus the original options")
    command = manifest.get("command")
    if command:
        hint += f" (the manifest records the build command as: {printable(repr(str(command)))})"
    return hint


def engine_member(engine_dir: Path, relative: Any, what: str) -> Path:
    """``engine_dir/relative``, refusing names that leave the folder (absolute, ``..``, links outside).

    Manifests are data from whoever made the folder: a hash that matches a file elsewhere on disk
    proves nothing about the folder, so only files inside it are ever opened.
    """
    folder = Path(engine_dir)
    name = str(relative) if isinstance(relative, str) else ""
    candidate = Path(name)
    if not name or candidate.is_absolute() or ".." in candidate.parts:
        raise UsageError(
            f"{folder / MANIFEST}: {what} {printable(repr(relative))} is not a file name inside the engine folder"
        )
    path = folder / candidate
    root = folder.resolve()
    if root not in path.resolve().parents:
        raise UsageError(f"{folder / MANIFEST}: {what} {printable(repr(relative))} leads outside the engine folder")
    return path


def verify_engine_file(engine_dir: Path, manifest: dict[str, Any], part: str = "engine") -> Path:
    """The file the manifest's `part` names, after checking it lies inside the folder and still has the bytes
    the build wrote.

    `part` is ``engine`` (what a backend loads) or ``model`` (the ONNX the engine was built from, which
    export-triton ships for ONNX Runtime engines): both are refused the same way when changed.
    """
    entry = manifest.get(part)
    recorded = entry if isinstance(entry, dict) else {}
    path = engine_member(Path(engine_dir), recorded.get("file"), f"{part} file")
    label = printable(repr(manifest.get("name")))
    if not path.is_file():
        raise TrtoptError(f"engine {label}: {part} file {path} is missing; {rebuild_hint(manifest)}")
    digest = sha256_file(path)
    if digest != recorded.get("sha256"):
        raise TrtoptError(
            f"engine {label}: {path} has sha256 {digest[:16]}..., the manifest recorded "
            f"{printable(str(recorded.get('sha256')))[:16]}... (modified or corrupt); {rebuild_hint(manifest)}"
        )
    return path


def load(engine_dir: str | os.PathLike[str], **runner_options: Any) -> Runner:
    """Open ``engines/NAME`` with its backend's Runner, refusing engines that do not belong here.

    Refused (TrtoptError, with how to rebuild): a different backend version or device than the
    build recorded, or an engine file whose sha256 differs from the manifest. `runner_options` go
    to the backend's load (e.g. ``threads=`` for ONNX Runtime).

    A rebuild may replace the folder while this runs (trtopt.fileio.atomic_directory): the name is
    resolved once, so manifest and engine come from one version, and when that version is replaced
    and removed mid-load, the load starts again on the new one.
    """
    folder = Path(engine_dir)
    attempts = 0
    while True:
        version = Path(os.path.realpath(folder))
        try:
            return _load_version(version, **runner_options)
        except Exception:
            attempts += 1
            if attempts == _LOAD_ATTEMPTS or not _replaced_meanwhile(folder, version):
                raise
            time.sleep(_RETRY_PAUSE_S)


def _replaced_meanwhile(folder: Path, version: Path) -> bool:
    """True when `folder` now points elsewhere, or is mid-replacement by a writer (a lock file exists)."""
    if Path(os.path.realpath(folder)) != version:
        return True
    return not version.exists() and lock_file(folder).exists()


def _load_version(folder: Path, **runner_options: Any) -> Runner:
    from trtopt.backends.registry import get_backend

    manifest = read_manifest(folder)
    backend = get_backend(str(manifest["backend"].get("name")))
    label = printable(repr(manifest.get("name")))
    usable, why = backend.availability()
    if not usable:
        raise TrtoptError(f"engine {label} needs the {backend.name} backend, which cannot run here: {why}")
    problems = backend.compatibility_problems(manifest)
    if problems:
        raise TrtoptError(
            f"cannot load engine {label}: " + "; ".join(printable(p) for p in problems) + f"; {rebuild_hint(manifest)}"
        )
    verify_engine_file(folder, manifest)
    return backend.load(folder, manifest, **runner_options)


def cached_manifest(engine_dir: Path, cache_key: str) -> dict[str, Any] | None:
    """The manifest of an intact engine built from identical inputs, or None (then build)."""
    folder = Path(os.path.realpath(engine_dir))
    try:
        manifest = read_manifest(folder)
        if manifest.get("cache_key") != cache_key:
            return None
        verify_engine_file(folder, manifest)
    except TrtoptError:  # missing, stale schema or modified file: not reusable, build again
        return None
    return manifest
