"""Resolve and check a training run before any process starts (torch-free).

Every problem a user can fix (unknown model, data that does not fit the model, a bad resume or
teacher checkpoint path, an unwritable output folder) is found here, in the launching process, so
it becomes one clear UsageError instead of N crashing workers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtopt.data import Dataset, load_dataset
from trtopt.errors import UsageError
from trtopt.fileio import ensure_writable_dir
from trtopt.models import InputSpec, model_input_spec, resolve_config
from trtopt.train.config import TrainConfig

# Model config keys that follow the data unless the user set them.
_DATA_KEYS = {"in_channels": lambda d: d.sample_shape[0], "input_size": lambda d: d.sample_shape[-1],
              "num_classes": lambda d: d.num_classes}


@dataclass(frozen=True)
class RunPlan:
    dataset: Dataset
    model_config: dict[str, Any]
    input_spec: InputSpec  # normalization is the dataset's


def plan_run(config: TrainConfig) -> RunPlan:
    config.validate()
    dataset = load_dataset(config.dataset)
    defaults = resolve_config(config.model)
    overrides = dict(config.model_config)
    for key, from_data in _DATA_KEYS.items():
        if key in defaults and key not in overrides:
            overrides[key] = from_data(dataset)
    model_config = resolve_config(config.model, **overrides)
    spec = model_input_spec(config.model, **model_config)
    if tuple(spec.shape) != tuple(dataset.sample_shape):
        raise UsageError(f"model {config.model!r} takes inputs {'x'.join(map(str, spec.shape))} but dataset "
                         f"{config.dataset!r} has samples {'x'.join(map(str, dataset.sample_shape))}")
    classes = model_config.get("num_classes", 10)
    if dataset.num_classes > classes:
        raise UsageError(f"dataset {config.dataset!r} has labels up to {dataset.num_classes - 1} but model "
                         f"{config.model!r} predicts {classes} classes")
    for flag, path in (("--resume", config.resume), ("--teacher", config.teacher)):
        if path is not None and not Path(path).is_file():
            raise UsageError(f"{flag}: checkpoint not found: {path}")
    ensure_writable_dir(config.out)
    return RunPlan(dataset, model_config, spec.with_normalization(dataset.mean, dataset.std))
