"""The bundled model zoo, looked up by name.

The registry (names, default configs, input specs) is torch-free so that serving and build code can
ask what a model expects; only :func:`create_model` imports torch, and only the one model module
that is asked for.
"""
from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trtopt.errors import UsageError
from trtopt.models.spec import InputSpec

__all__ = ["InputSpec", "list_models", "resolve_config", "model_input_spec", "create_model", "parse_config_overrides"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_IMAGENET_LIKE = {"in_channels": 3, "num_classes": 1000, "input_size": 224}


@dataclass(frozen=True)
class _Entry:
    module: str  # trtopt.models.<module> with build(**fixed, **config) -> torch.nn.Module
    defaults: Mapping[str, Any]  # what users may configure
    fixed: Mapping[str, Any] = field(default_factory=dict)  # set by the architecture (resnet18 vs resnet50)


_REGISTRY: dict[str, _Entry] = {
    "lenet": _Entry("lenet", {}),
    "resnet18": _Entry("resnet", {**_IMAGENET_LIKE, "width": 64}, {"depth": 18}),
    "resnet50": _Entry("resnet", {**_IMAGENET_LIKE, "width": 64}, {"depth": 50}),
    "mobilenetv2": _Entry("mobilenetv2", {**_IMAGENET_LIKE, "width_mult": 1.0}),
}


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UsageError(f"unknown model {name!r}; expected one of: {', '.join(list_models())}") from None


def resolve_config(name: str, **overrides: Any) -> dict[str, Any]:
    """Defaults of `name` updated with `overrides`, each checked against the default's type."""
    defaults = dict(_entry(name).defaults)
    config = dict(defaults)
    for key, value in overrides.items():
        if key not in defaults:
            allowed = sorted(defaults)
            raise UsageError(f"model {name!r} has no config key {key!r}; "
                             f"expected one of: {', '.join(allowed) or '(none: the model is fixed)'}")
        default = defaults[key]
        if isinstance(default, int) and not isinstance(default, bool):
            if isinstance(value, bool) or not float(value).is_integer():
                raise UsageError(f"model {name!r}: {key} must be an integer, got {value!r}")
            value = int(value)
            if value <= 0:
                raise UsageError(f"model {name!r}: {key} must be positive, got {value}")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise UsageError(f"model {name!r}: {key} must be a positive number, got {value!r}")
            value = float(value)
        config[key] = value
    return config


def parse_config_overrides(items: list[str] | None) -> dict[str, Any]:
    """Parse CLI `key=value` pairs; values are read as JSON numbers/booleans where they parse."""
    overrides: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--model-config expects key=value, got {item!r}")
        try:
            overrides[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key.strip()] = raw
    return overrides


def model_input_spec(name: str, **config: Any) -> InputSpec:
    """Input spec of the model with its default normalization (ImageNet for 3 channels).

    Training on another dataset replaces the normalization (the checkpoint records the one used).
    """
    if name == "lenet":
        from trtopt.data.digits import DIGITS_MEAN, DIGITS_STD

        resolve_config(name, **config)
        return InputSpec("input", (1, 16, 16), mean=(DIGITS_MEAN,), std=(DIGITS_STD,))
    cfg = resolve_config(name, **config)
    channels, size = cfg["in_channels"], cfg["input_size"]
    if channels == 3:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        mean, std = (0.0,) * channels, (1.0,) * channels
    return InputSpec("input", (channels, size, size), mean=mean, std=std)


def create_model(name: str, **config: Any) -> Any:
    """Build an untrained `torch.nn.Module` (imports torch)."""
    cfg = resolve_config(name, **config)
    entry = _entry(name)
    module = importlib.import_module(f"trtopt.models.{entry.module}")
    return module.build(**entry.fixed, **cfg)
