"""A Triton model repository from engine folders: ``NAME/config.pbtxt`` and ``NAME/1/model.plan|model.onnx``.

TensorRT engines go as the serialized plan (``tensorrt_plan``; Triton's TensorRT must be the version
that built it, as for `trtopt.load`). ONNX Runtime engines go as the engine's ONNX model, the FP32,
FP16 or Q/DQ graph the build checked (``onnxruntime_onnx``): Triton's ONNX Runtime optimizes it again
for its own machine, where trtopt's saved optimized graph would be tied to this CPU. The
configuration is `triton_config.model_config`, written through Triton's own ``ModelConfig``
protobuf, so a field Triton does not know cannot slip in.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from trtopt.errors import UsageError
from trtopt.fileio import atomic_directory
from trtopt.repository import read_manifest, verify_engine_file
from trtopt.serve.settings import BatchingSettings, effective_batching, engine_max_batch_size
from trtopt.serve.triton_config import TENSORRT_PLATFORM, model_config, platform_of
from trtopt.tensors import TensorInfo

CONFIG_FILE = "config.pbtxt"


@dataclass(frozen=True)
class ExportedModel:
    name: str
    folder: Path
    platform: str
    model_file: Path


def config_text(config: Mapping[str, object]) -> str:
    """The config dict as protobuf text (config.pbtxt), via Triton's ModelConfig message."""
    return text_format.MessageToString(json_format.ParseDict(config, model_config_pb2.ModelConfig()))


def export_model(
    name: str, engine_dir: Path, repository: Path, settings: BatchingSettings, version: int = 1, force: bool = False
) -> ExportedModel:
    """Write ``repository/NAME`` for one engine folder (atomically; an existing folder needs `force`)."""
    manifest = read_manifest(engine_dir)
    backend = str(manifest["backend"].get("name"))
    io = manifest.get("io") or {}
    inputs = [TensorInfo.from_json(t) for t in io.get("inputs", [])]
    outputs = [TensorInfo.from_json(t) for t in io.get("outputs", [])]
    if not inputs or not outputs:
        raise UsageError(f"{engine_dir}: the manifest lists no inputs/outputs under 'io'; rebuild the engine")
    batching = effective_batching(settings, engine_max_batch_size(inputs, outputs, io.get("profile")), name)
    platform = platform_of(backend)
    if platform == TENSORRT_PLATFORM:
        source, file_name = verify_engine_file(engine_dir, manifest), "model.plan"
    else:
        source, file_name = verify_engine_file(engine_dir, manifest, part="model"), "model.onnx"
    target = repository / name
    if target.exists() and not force:
        raise UsageError(f"{target} already exists; pass --force to replace it")
    text = config_text(model_config(name, backend, inputs, outputs, batching))
    with atomic_directory(target) as staging:
        (staging / str(version)).mkdir()
        shutil.copyfile(source, staging / str(version) / file_name)
        (staging / CONFIG_FILE).write_text(text)
    return ExportedModel(name, target, platform, target / str(version) / file_name)


def export_repository(
    engines: Mapping[str, Path],
    repository: str | os.PathLike[str],
    defaults: BatchingSettings,
    models: Mapping[str, BatchingSettings],
    force: bool = False,
) -> list[ExportedModel]:
    """Export every engine (by served name) into one Triton model repository."""
    unknown = sorted(set(models) - set(engines))
    if unknown:
        raise UsageError(f"the config names model(s) {unknown} that are not exported; exported: {sorted(engines)}")
    root = Path(repository)
    return [
        export_model(name, folder, root, models.get(name, defaults), force=force) for name, folder in engines.items()
    ]
