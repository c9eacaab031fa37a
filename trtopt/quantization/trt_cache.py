"""The legacy TensorRT calibration cache (``TRT-<version>-EntropyCalibration2``), both ways.

Format: a header line, then one ``<tensor name>: <8 hex digits>`` line per tensor, the hex digits
being the big-endian IEEE-754 float32 bits of the *scale* (amax / 127). TensorRT <= 10 ignores a
cache whose header does not name its own version, hence ``--trt-version``. The version field is
``major*10000 + minor*100 + patch`` from TensorRT 10 on (100900 for 10.9.0) and
``major*1000 + minor*100 + patch`` before (8601 for 8.6.1).

Importing a cache (users moving to TensorRT 11) produces a scale table keyed to the model the user
names: the cache itself does not record which model it came from.
"""
from __future__ import annotations

import logging
import math
import os
import re
import struct
from pathlib import Path

from trtopt.errors import UsageError
from trtopt.fileio import atomic_write_text, sha256_file
from trtopt.quantization.table import ScaleTable, TensorStats

log = logging.getLogger("trtopt.calibrate")

ALGORITHM = "EntropyCalibration2"
DEFAULT_TRT_VERSION = "10.9.0"
_HEADER = re.compile(r"^TRT-(\d+)-(\w+)$")


def version_code(version: str) -> int:
    """"10.9.0" -> 100900, "8.6.1" -> 8601; a plain number is taken as already encoded."""
    text = str(version).strip()
    if text.isdigit():
        return int(text)
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(p.isdigit() for p in parts):
        raise UsageError(f"--trt-version {version!r} is not a version like 10.9.0")
    major, minor, patch = (int(p) for p in (parts + ["0", "0"])[:3])
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def scale_hex(amax: float) -> str:
    return struct.pack(">f", amax / 127.0).hex()


def write_trt_cache(table: ScaleTable, path: str | os.PathLike[str], version: str = DEFAULT_TRT_VERSION) -> Path:
    """Write ``table`` as a TensorRT calibration cache, atomically."""
    lines = [f"TRT-{version_code(version)}-{ALGORITHM}"]
    for name, stats in table.tensors.items():
        if "\n" in name:
            raise UsageError(f"tensor name {name!r} contains a newline; it cannot be written to a TensorRT cache")
        lines.append(f"{name}: {scale_hex(stats.amax)}")
    return atomic_write_text(path, "\n".join(lines) + "\n")


def read_trt_cache(path: str | os.PathLike[str], model_path: str | os.PathLike[str]) -> ScaleTable:
    """A scale table from a TensorRT cache, for the model at ``model_path`` (hashed here)."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"TensorRT calibration cache not found: {file}")
    if not Path(model_path).is_file():
        raise UsageError(f"ONNX model not found: {model_path}")
    try:
        lines = file.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read TensorRT calibration cache {file}: {exc}") from exc
    header = _HEADER.match(lines[0].strip()) if lines else None
    if header is None:
        raise UsageError(f"{file}: first line {lines[0] if lines else ''!r} is not a TensorRT cache header "
                         f"like 'TRT-100900-{ALGORITHM}'")
    tensors: dict[str, TensorStats] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        name, separator, digits = line.rpartition(": ")
        try:
            if not separator or len(digits.strip()) != 8:
                raise ValueError("expected '<tensor name>: <8 hex digits>'")
            scale = struct.unpack(">f", bytes.fromhex(digits.strip()))[0]
        except ValueError as exc:
            raise UsageError(f"{file} line {number}: {line!r}: {exc}") from exc
        if not math.isfinite(scale) or scale < 0:
            raise UsageError(f"{file} line {number}: tensor {name!r} has scale {scale}, not a finite positive number")
        if scale == 0:
            log.warning("%s line %d: tensor %r has scale 0; left out of the table", file, number, name)
            continue
        try:
            tensors[name] = TensorStats(amax=scale * 127.0)
        except UsageError as exc:  # a scale float32 cannot hold (subnormal): name the line, not just the value
            raise UsageError(f"{file} line {number}: tensor {name!r}: {exc}") from exc
    _warn_unknown_tensors(file, model_path, tensors)
    params = {"trt_cache": file.name, "trt_version_code": int(header.group(1)), "algorithm": header.group(2)}
    return ScaleTable(sha256_file(model_path), "trt-cache", params, 0, tensors)


def _warn_unknown_tensors(file: Path, model_path: str | os.PathLike[str], tensors: dict[str, TensorStats]) -> None:
    """A cache names tensors, not the model: names the model lacks mean it came from another model (or export)."""
    import onnx

    try:
        graph = onnx.load(os.fspath(model_path), load_external_data=False).graph
    except Exception as exc:  # protobuf/onnx raise several types for a corrupt file
        raise UsageError(f"cannot read ONNX model {model_path}: {exc}") from exc
    known = {v.name for v in graph.input} | {v.name for v in graph.output} | {i.name for i in graph.initializer}
    known |= {name for node in graph.node for name in node.output}
    unknown = [name for name in tensors if name not in known]
    if unknown:
        log.warning("%s names %d tensor(s) that %s does not have (%s%s); was it written for another model or "
                    "export? Those scales are ignored by quantize", file, len(unknown), model_path,
                    ", ".join(repr(n) for n in unknown[:5]), ", ..." if len(unknown) > 5 else "")
