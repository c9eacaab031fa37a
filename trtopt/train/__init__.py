"""The distributed trainer: `train(TrainConfig) -> TrainResult`, checkpoints, distillation.

Importing this package does not import torch; the launcher and loop import it when a run starts.
"""
from __future__ import annotations

from trtopt.train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from trtopt.train.config import TrainConfig, TrainResult
from trtopt.train.launch import train

__all__ = ["TrainConfig", "TrainResult", "train", "save_checkpoint", "load_checkpoint", "model_from_checkpoint"]
