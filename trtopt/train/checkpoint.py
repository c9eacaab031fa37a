"""Checkpoint files: a plain dict saved with torch.save, loadable with `weights_only=True`.

Only tensors, numbers, strings, lists and dicts go in, so loading never unpickles arbitrary
objects. Keys: model_name, model_config, input_spec, dataset, state_dict, optimizer, epoch
(completed epochs), metrics (per-epoch history), best_val_accuracy, train_config, rng_state,
trtopt_version.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

from trtopt.errors import UsageError, first_line
from trtopt.fileio import atomic_write

REQUIRED_KEYS = ("model_name", "model_config", "state_dict")
# What each entry must be when present: a hand-edited or foreign file fails here, naming the entry.
_ENTRY_TYPES: dict[str, type] = {"model_name": str, "model_config": dict, "state_dict": dict, "input_spec": dict,
                                 "optimizer": dict, "epoch": int, "metrics": list, "train_config": dict}


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> Path:
    """Write atomically: a killed run leaves the previous checkpoint, never a truncated one."""
    import torch

    return atomic_write(path, lambda handle: torch.save(checkpoint, handle))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load on CPU with `weights_only=True`; UsageError (exit 2) for a missing or corrupt file."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"checkpoint not found: {file}")
    import torch

    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UsageError(f"{file} is not a readable trtopt checkpoint: {_refused_object(exc)}; trtopt loads only "
                         "tensors, numbers, strings, lists and dicts") from exc
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError) as exc:
        raise UsageError(f"{file} is not a readable trtopt checkpoint: {first_line(exc)}") from exc
    if not isinstance(checkpoint, dict) or any(key not in checkpoint for key in REQUIRED_KEYS):
        raise UsageError(f"{file} is not a trtopt checkpoint: expected a dict with keys {', '.join(REQUIRED_KEYS)}")
    for key, kind in _ENTRY_TYPES.items():
        value = checkpoint.get(key, kind())
        if not isinstance(value, kind) or isinstance(value, bool):
            raise UsageError(f"{file}: checkpoint entry {key!r} is {type(value).__name__}, expected "
                             f"{kind.__name__} (hand-edited, or written by another tool)")
    return checkpoint


def _refused_object(exc: pickle.UnpicklingError) -> str:
    """Why torch's weights-only unpickler refused the file, without its advice to retry unsafely
    (``weights_only=False``) or to allowlist the object: wrong for a file from someone else."""
    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return f"it holds a pickled Python object ({found.group(1)}), which the safe loader refuses"
    if "Unsupported operand" in text:
        return "its bytes are not a torch checkpoint (corrupt, or another format)"
    if "weights_only" in text or "Weights only" in text:
        return "it holds Python objects the safe loader refuses"
    return first_line(text, "not a pickle torch can read")


def model_from_checkpoint(checkpoint: dict[str, Any], source: str | Path = "checkpoint") -> Any:
    """The checkpoint's model with its weights, in eval mode; UsageError if they do not fit."""
    from trtopt.models import create_model

    model = create_model(checkpoint["model_name"], **checkpoint["model_config"])
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except (RuntimeError, TypeError, ValueError) as exc:
        raise UsageError(f"{source}: weights do not fit model {checkpoint['model_name']!r}: "
                         f"{first_line(exc, lines=2)}") from exc
    return model.eval()
