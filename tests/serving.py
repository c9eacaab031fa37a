"""Helpers for the serving tests: a small real engine built with trtopt, and a served repository."""

from __future__ import annotations

from pathlib import Path

from conftest import make_residual_convnet

import trtopt

MAX_BATCH = 8


def build_engine(folder: Path, name: str = "convnet") -> Path:
    """A real ONNX Runtime engine of the residual convnet, batch profile 1..8 (about a second to build)."""
    onnx_path = make_residual_convnet(folder / f"{name}.onnx")
    result = trtopt.build(
        onnx_path,
        name=name,
        engines_dir=folder / "engines",
        max_shapes=f"input:{MAX_BATCH}x3x16x16",
        accuracy_samples=8,
        threads=1,
    )
    return Path(result.engine_dir)
