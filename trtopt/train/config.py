"""Training options and results as plain dataclasses (no torch), shared by the API, CLI and workers.

The config travels to spawned workers as JSON and is stored in every checkpoint, so a resumed run
can check it continues the same model and data.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, TypeVar

from trtopt.errors import UsageError

OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("cosine", "step", "none")


T = TypeVar("T", bound="_JsonFields")


class _JsonFields:
    """JSON round trip for the dataclasses here; unknown keys (from a newer trtopt) are ignored."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_json(cls: type[T], data: dict[str, Any]) -> T:
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class TrainConfig(_JsonFields):
    """Everything one training run needs. `batch_size` is per process, as in torchrun scripts."""

    model: str = "lenet"
    dataset: str = "digits"
    out: str = "runs/lenet"
    epochs: int = 5
    nproc: int = 1
    batch_size: int = 32
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    scheduler: str = "cosine"
    accum_steps: int = 1
    seed: int = 0
    model_config: dict[str, Any] = field(default_factory=dict)
    resume: str | None = None  # checkpoint to continue from
    stop_after_epoch: int | None = None  # end this run early (preemptible slots); continue with resume
    teacher: str | None = None  # checkpoint of a teacher for knowledge distillation
    distill_temperature: float = 4.0
    distill_weight: float = 0.5
    amp: bool = False  # CUDA automatic mixed precision
    device: str = "auto"  # auto | cpu | cuda
    threads: int | None = None  # torch intra-op threads per process; default: cores / processes
    timeout_s: float = 120.0  # bound on process-group setup and every collective

    def validate(self) -> None:
        """Reject bad values before any process starts, naming the flag."""
        checks = [
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.nproc >= 1, f"--nproc must be >= 1, got {self.nproc}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.lr > 0 and math.isfinite(self.lr), f"--lr must be a positive number, got {self.lr}"),
            (
                self.optimizer in OPTIMIZERS,
                f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}",
            ),
            (
                self.scheduler in SCHEDULERS,
                f"--scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}",
            ),
            (self.accum_steps >= 1, f"--accum-steps must be >= 1, got {self.accum_steps}"),
            (self.distill_temperature > 0, f"--distill-temperature must be > 0, got {self.distill_temperature}"),
            (0.0 <= self.distill_weight <= 1.0, f"--distill-weight must be in [0, 1], got {self.distill_weight}"),
            (self.device in ("auto", "cpu", "cuda"), f"--device must be auto, cpu or cuda, got {self.device!r}"),
            (self.timeout_s > 0, f"timeout must be > 0 s, got {self.timeout_s}"),
            (self.stop_after_epoch is None or self.stop_after_epoch >= 1,
             f"--stop-after-epoch must be >= 1, got {self.stop_after_epoch}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)

    def dumps(self) -> str:
        return json.dumps(self.to_json())


@dataclass
class TrainResult(_JsonFields):
    """What a finished run produced; rank 0 also writes it to OUT/summary.json."""

    out_dir: str
    checkpoint: str  # OUT/last.pt
    best_checkpoint: str  # OUT/best.pt (highest validation accuracy)
    epochs_done: int
    test_accuracy: float
    test_loss: float
    best_val_accuracy: float
    world_size: int
    wall_time_s: float
    metrics: list[dict[str, Any]] = field(default_factory=list)
