"""v2 protocol tensors to numpy arrays and back: JSON `data`, Triton's binary extension, raw bytes.

HTTP request body with the binary tensor data extension: the JSON request header (its length in
the ``Inference-Header-Content-Length`` header), then the raw bytes of every input whose
``parameters.binary_data_size`` is set, in input order. Outputs are returned as raw bytes after the
JSON header when the request asks (per output ``parameters.binary_data``, or for all outputs
``parameters.binary_data_output``), otherwise as JSON ``data``. gRPC uses the same raw layout
(``raw_input_contents``), so both front ends share `tensor_from_bytes` / `tensor_from_values`.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trtopt.serve.datatypes import numpy_dtype, v2_name
from trtopt.serve.errors import BadRequest, PayloadTooLarge


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass
class InferenceRequest:
    """A decoded request: input arrays (already in the datatype the client named) and what to return."""

    inputs: dict[str, np.ndarray]
    datatypes: dict[str, str]
    outputs: list[RequestedOutput] | None  # None: every output
    binary_output: bool = False  # default for outputs not listed explicitly
    request_id: str | None = None
    timeout_us: int | None = None


def parse_shape(name: str, shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, (list, tuple)) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise BadRequest(f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}")
    return tuple(int(d) for d in shape)


def tensor_from_bytes(name: str, datatype: str, shape: Sequence[int], raw: bytes, source: str) -> np.ndarray:
    """The array of raw little-endian bytes, or BadRequest when their size disagrees with shape x datatype.

    `source` names where the bytes came from (binary_data_size, raw_input_contents) for the message.
    """
    dtype = numpy_dtype(datatype, name)
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise BadRequest(
            f"input {name!r}: {source} is {len(raw)} bytes, but shape {list(shape)} of {datatype} needs {expected}"
        )
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False).reshape(shape)


def tensor_from_values(name: str, datatype: str, shape: Sequence[int], values: Any) -> np.ndarray:
    """The array of JSON (or protobuf) values, flat or nested, checked against shape and datatype."""
    dtype = numpy_dtype(datatype, name)
    try:
        array = np.asarray(values)
    except ValueError as exc:  # ragged nested lists
        raise BadRequest(f"input {name!r}: data is not a regular array: {exc}") from exc
    if array.dtype.kind not in "biuf" or (array.dtype.kind == "b") != (dtype.kind == "b"):
        example = str(array.flat[0])[:20] if array.size else "none"
        raise BadRequest(f"input {name!r}: data holds values such as {example!r}, not {datatype} numbers")
    if array.dtype.kind == "f" and dtype.kind in "iu" and not np.all(np.isfinite(array) & (array == np.round(array))):
        raise BadRequest(f"input {name!r}: data holds non-integer values for datatype {datatype}")
    if array.size != math.prod(shape):
        raise BadRequest(f"input {name!r}: {array.size} values given, shape {list(shape)} needs {math.prod(shape)}")
    return array.astype(dtype).reshape(shape)


# zlib window bits per Content-Encoding: gzip framing, or zlib framing (what HTTP calls "deflate")
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """The body of a gzip/deflate request (tritonclient's request compression), at most `limit` bytes
    once inflated, so a small compressed body cannot expand past the size limit."""
    wbits = _WBITS.get(encoding.strip().lower())
    if wbits is None:
        raise BadRequest(f"Content-Encoding {encoding!r} is not supported; send gzip, deflate or uncompressed bodies")
    inflater = zlib.decompressobj(wbits)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"request body is not valid {encoding} data: {exc}") from exc
    if len(data) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"request body inflates beyond the limit of {limit} bytes (--max-body-mb)")
    return data


def _json_header(body: bytes, header_length: int | None) -> tuple[dict[str, Any], bytes]:
    if header_length is None:
        header_bytes, binary = body, b""
    elif not 0 < header_length <= len(body):
        raise BadRequest(f"Inference-Header-Content-Length {header_length} is outside the body's {len(body)} bytes")
    else:
        header_bytes, binary = body[:header_length], body[header_length:]
    try:
        header = json.loads(header_bytes)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list) or not header["inputs"]:
        raise BadRequest('request must be a JSON object with a non-empty "inputs" list')
    return header, binary


def _parameters(entry: Mapping[str, Any], what: str) -> dict[str, Any]:
    parameters = entry.get("parameters", {})
    if not isinstance(parameters, dict):
        raise BadRequest(f'{what}: "parameters" must be an object')
    return parameters


def decode_http(body: bytes, header_length: int | None) -> InferenceRequest:
    """Decode a v2 HTTP infer request body (JSON, optionally followed by binary tensor data)."""
    header, binary = _json_header(body, header_length)
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    offset = 0
    for entry in header["inputs"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise BadRequest(f'every input needs a "name", "shape" and "datatype"; got {str(entry)[:80]}')
        name = entry["name"]
        if name in inputs:
            raise BadRequest(f"input {name!r} given twice")
        datatype = entry.get("datatype")
        shape = parse_shape(name, entry.get("shape"))
        size = _parameters(entry, f"input {name!r}").get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise BadRequest(
                    f"input {name!r}: binary_data_size {size!r} runs past the {len(binary)} bytes "
                    "after the JSON header (check Inference-Header-Content-Length)"
                )
            inputs[name] = tensor_from_bytes(
                name, str(datatype), shape, binary[offset : offset + size], "binary_data_size"
            )
            offset += size
        elif "data" in entry:
            inputs[name] = tensor_from_values(name, str(datatype), shape, entry["data"])
        else:
            raise BadRequest(f'input {name!r}: no "data" and no "binary_data_size" parameter')
        datatypes[name] = str(datatype).upper()
    if offset != len(binary):
        raise BadRequest(
            f"{len(binary)} bytes follow the JSON header but the inputs' binary_data_size add up to {offset}"
        )
    parameters = _parameters(header, "request")
    outputs = None
    if "outputs" in header:
        if not isinstance(header["outputs"], list):
            raise BadRequest('"outputs" must be a list')
        outputs = [_requested_output(entry) for entry in header["outputs"]]
    timeout = parameters.get("timeout")
    if timeout is not None and (not isinstance(timeout, int) or timeout < 0):
        raise BadRequest(f"parameter timeout must be a non-negative integer of microseconds, got {timeout!r}")
    request_id = header.get("id")
    return InferenceRequest(
        inputs,
        datatypes,
        outputs,
        bool(parameters.get("binary_data_output", False)),
        str(request_id) if request_id is not None else None,
        timeout,
    )


def _requested_output(entry: Any) -> RequestedOutput:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise BadRequest(f'every requested output needs a "name"; got {str(entry)[:80]}')
    parameters = _parameters(entry, f"output {entry['name']!r}")
    if parameters.get("classification"):
        raise BadRequest(f"output {entry['name']!r}: the classification extension is not served")
    return RequestedOutput(entry["name"], bool(parameters.get("binary_data", False)))


def output_json(name: str, array: np.ndarray, binary: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "datatype": v2_name(array.dtype), "shape": list(array.shape)}
    if binary:
        entry["parameters"] = {"binary_data_size": int(array.nbytes)}
    else:
        entry["data"] = array.ravel().tolist()
    return entry


def encode_http(response: dict[str, Any], outputs: Sequence[tuple[str, np.ndarray, bool]]) -> tuple[bytes, int | None]:
    """Body and JSON header length (None when every output went as JSON) of an infer response."""
    response = {**response, "outputs": [output_json(name, array, binary) for name, array, binary in outputs]}
    header = json.dumps(response, separators=(",", ":")).encode()
    # tobytes() writes C order whatever the array's layout: no contiguous copy first
    blobs = [
        array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes() for _, array, binary in outputs if binary
    ]
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)
