"""Server and per-model batching settings: dataclasses, the engine's own limits, and the TOML file.

Names follow Triton's model configuration (``max_batch_size``, ``preferred_batch_size``,
``max_queue_delay_microseconds``, ``max_queue_size``, ``default_timeout_microseconds``,
``instance_group`` count as ``instances``) so a config moves between trtopt and Triton unchanged.

TOML layout::

    [defaults]                 # every model
    max_queue_delay_microseconds = 500
    [models.resnet18-fp32]     # one model, by its served name
    max_batch_size = 16        # at most the engine profile's batch maximum
    preferred_batch_size = [8, 16]
    max_queue_size = 64
    default_timeout_microseconds = 5000000
    instances = 2              # runners running batches concurrently
    threads = 1                # CPU backends: intra-op threads per instance
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtopt.tensors import TensorInfo
from trtopt.errors import UsageError
from trtopt.fileio import read_toml

# Largest batch a dynamic-batch engine without a recorded profile takes (trtopt builds always record one).
UNPROFILED_MAX_BATCH = 32


@dataclass(frozen=True)
class BatchingSettings:
    """How one model's requests are queued and batched. `max_batch_size` None: the engine's limit."""

    max_batch_size: int | None = None
    preferred_batch_size: tuple[int, ...] = ()
    max_queue_delay_microseconds: int = 0
    max_queue_size: int = 64
    default_timeout_microseconds: int = 60_000_000
    instances: int = 1
    threads: int | None = None


@dataclass(frozen=True)
class ServerSettings:
    """Where the server listens and how it guards itself."""

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_body_bytes: int = 64 << 20
    drain_seconds: float = 30.0
    access_log: bool = True
    models: Mapping[str, BatchingSettings] = field(default_factory=dict)
    defaults: BatchingSettings = field(default_factory=BatchingSettings)

    def batching_for(self, model: str) -> BatchingSettings:
        return self.models.get(model, self.defaults)


_INT_KEYS = (
    "max_batch_size",
    "max_queue_delay_microseconds",
    "max_queue_size",
    "default_timeout_microseconds",
    "instances",
    "threads",
)
_KEYS = (*_INT_KEYS, "preferred_batch_size")


def _batching(table: Mapping[str, Any], base: BatchingSettings, where: str) -> BatchingSettings:
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {unknown}; expected some of {list(_KEYS)}")
    values: dict[str, Any] = {}
    for key in _INT_KEYS:
        if key in table:
            value = table[key]
            low = 1 if key in ("instances", "threads") else 0
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise UsageError(f"{where}.{key}: expected an integer >= {low}, got {value!r}")
            values[key] = value
    if "preferred_batch_size" in table:
        sizes = table["preferred_batch_size"]
        if not isinstance(sizes, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes
        ):
            raise UsageError(f"{where}.preferred_batch_size: expected a list of positive integers, got {sizes!r}")
        values["preferred_batch_size"] = tuple(sorted(set(sizes)))
    return dataclasses.replace(base, **values)


def read_config(path: str | os.PathLike[str]) -> tuple[BatchingSettings, dict[str, BatchingSettings]]:
    """(defaults, per-model settings) from a TOML file; UsageError naming the file and key."""
    file = Path(path)
    data = read_toml(file, "serve config")
    unknown = sorted(set(data) - {"defaults", "models"})
    if unknown:
        raise UsageError(f"{file}: unknown section(s) {unknown}; expected [defaults] and [models.NAME]")
    defaults = _batching(data.get("defaults", {}), BatchingSettings(), f"{file} [defaults]")
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise UsageError(f"{file}: [models] must hold tables [models.NAME]")
    return defaults, {name: _batching(table, defaults, f"{file} [models.{name}]") for name, table in models.items()}


def engine_max_batch_size(
    inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo], profile: Mapping[str, Any] | None
) -> int:
    """Triton's max_batch_size for an engine: 0 when it cannot batch, else the profile's batch maximum.

    Batching needs a dynamic first axis on every input and output and a profile whose batch minimum
    is 1 (a profile pinned to batch 8 serves whole 8-sample tensors only, like Triton's 0).
    """
    tensors = [*inputs, *outputs]
    if not tensors or any(not t.shape or isinstance(t.shape[0], int) for t in tensors):
        return 0
    low = (profile or {}).get("min", {})
    high = (profile or {}).get("max", {})
    if not high:
        return UNPROFILED_MAX_BATCH
    if any(info.name not in high or low.get(info.name, [1])[0] != 1 for info in inputs):
        return 0
    return min(int(high[info.name][0]) for info in inputs)


def effective_batching(requested: BatchingSettings, engine_limit: int, model: str) -> BatchingSettings:
    """The settings a model runs with: max_batch_size defaults to (and may not exceed) the engine's limit."""
    wanted = engine_limit if requested.max_batch_size is None else requested.max_batch_size
    if wanted > engine_limit:
        raise UsageError(
            f"model {model!r}: max_batch_size {wanted} exceeds the engine's batch limit {engine_limit} "
            "(rebuild with a larger --max-shapes batch)"
        )
    if engine_limit > 0 and wanted == 0:
        raise UsageError(
            f"model {model!r}: max_batch_size 0 is for engines without a batch axis; use 1 to run one request at a time"
        )
    too_big = [s for s in requested.preferred_batch_size if s > max(wanted, 1)]
    if too_big:
        raise UsageError(f"model {model!r}: preferred_batch_size {too_big} above max_batch_size {wanted}")
    return dataclasses.replace(requested, max_batch_size=wanted)
