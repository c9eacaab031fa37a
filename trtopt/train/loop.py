"""The training loop one rank runs: DDP when the world has more than one process.

Reproducibility is by construction: the model is initialised from the seed, DistributedSampler
shuffles from (seed, epoch), and the learning rate is a closed-form function of the epoch. A resumed
run therefore replays exactly the batches and learning rates an uninterrupted run would have seen.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from trtopt import __version__
from trtopt.errors import TrtoptError, UsageError, first_line
from trtopt.fileio import atomic_write_json, atomic_write_text
from trtopt.models import create_model
from trtopt.progress import progress
from trtopt.train.checkpoint import load_checkpoint, save_checkpoint
from trtopt.train.config import TrainConfig, TrainResult
from trtopt.train.plan import RunPlan

log = logging.getLogger("trtopt.train")

EVAL_BATCH = 256


def lr_at(config: TrainConfig, epoch: int) -> float:
    """Learning rate of `epoch` (0-based) under the configured schedule."""
    if config.scheduler == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / config.epochs))
    if config.scheduler == "step":
        return config.lr * 0.1 ** (epoch // max(1, config.epochs // 3))
    return config.lr


def _make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def _device(config: TrainConfig, local_rank: int) -> torch.device:
    if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available")
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if config.amp:
        raise UsageError("--amp needs a CUDA device; this run is on the CPU")
    return torch.device("cpu")


def _reduce(values: list[float], device: torch.device, world: int) -> list[float]:
    """Sum per-rank totals (loss sums, correct counts, sample counts) over all ranks."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(tensor)
    return tensor.tolist()


def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, rank: int, world: int,
             device: torch.device) -> tuple[float, float]:
    """(mean loss, accuracy) over the whole split: each rank takes every world-th sample."""
    model.eval()
    loss_sum = correct = 0.0
    shard_x, shard_y = x[rank::world], y[rank::world]
    with torch.no_grad():
        for start in range(0, shard_x.shape[0], EVAL_BATCH):
            xb, yb = shard_x[start:start + EVAL_BATCH].to(device), shard_y[start:start + EVAL_BATCH].to(device)
            logits = model(xb).float()
            loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
            correct += float((logits.argmax(1) == yb).sum())
    loss_sum, correct, count = _reduce([loss_sum, correct, float(shard_x.shape[0])], device, world)
    return loss_sum / max(count, 1.0), correct / max(count, 1.0)


def _accumulation_groups(batches: int, accum: int) -> Iterator[int]:
    """For each micro-batch, the size of the accumulation group it belongs to (last may be short)."""
    for index in range(batches):
        start = index - index % accum
        yield min(accum, batches - start)


class _Trainer:
    def __init__(self, config: TrainConfig, plan: RunPlan, rank: int, world: int, local_rank: int) -> None:
        self.config, self.plan, self.rank, self.world = config, plan, rank, world
        self.device = _device(config, local_rank)
        self.out = Path(config.out)
        torch.manual_seed(config.seed)
        net = create_model(config.model, **plan.model_config).to(self.device)
        self.net = net
        self.model: torch.nn.Module = net
        if world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(net, device_ids=ids)
        self.optimizer = _make_optimizer(config, net)
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.amp)
        self.teacher = None
        if config.teacher:
            from trtopt.train.distill import load_teacher

            self.teacher = load_teacher(
                config.teacher, plan.dataset.num_classes, plan.dataset.sample_shape, self.device
            )
        splits = {name: (torch.from_numpy(x), torch.from_numpy(y)) for name, (x, y) in plan.dataset.splits.items()}
        self.splits = splits
        train_set = TensorDataset(*splits["train"])
        self.sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=config.seed)
        self.loader = DataLoader(train_set, batch_size=config.batch_size, sampler=self.sampler)
        self.start_epoch = 0
        self.metrics: list[dict[str, Any]] = []
        self.best_val = -1.0
        if config.resume:
            self._resume(config.resume)

    def _resume(self, path: str) -> None:
        checkpoint = load_checkpoint(path)
        if checkpoint["model_name"] != self.config.model or checkpoint["model_config"] != self.plan.model_config:
            raise UsageError(f"--resume {path}: checkpoint is {checkpoint['model_name']} {checkpoint['model_config']}, "
                             f"this run is {self.config.model} {self.plan.model_config}")
        try:
            self.net.load_state_dict(checkpoint["state_dict"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            if checkpoint.get("scaler"):
                self.scaler.load_state_dict(checkpoint["scaler"])
            self.start_epoch = int(checkpoint["epoch"])
            self.best_val = float(checkpoint.get("best_val_accuracy", -1.0))
            if "rng_state" in checkpoint:
                torch.set_rng_state(checkpoint["rng_state"])
        except (KeyError, RuntimeError, TypeError, ValueError) as exc:  # torch says which tensors do not fit
            raise UsageError(f"--resume {path}: its weights or optimizer state do not fit this run's "
                             f"{self.config.model}: {first_line(exc, lines=2)}") from exc
        self.metrics = list(checkpoint.get("metrics", []))
        if self.start_epoch >= self.config.epochs:
            raise UsageError(f"--resume {path}: checkpoint already completed {self.start_epoch} epochs; "
                             f"ask for more with --epochs (now {self.config.epochs})")

    def _loss(self, logits: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        if self.teacher is None:
            return F.cross_entropy(logits, yb)
        from trtopt.train.distill import distillation_loss

        with torch.no_grad():
            teacher_logits = self.teacher(xb).float()
        return distillation_loss(
            logits, teacher_logits, yb, self.config.distill_temperature, self.config.distill_weight
        )

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        self.sampler.set_epoch(epoch)
        lr = lr_at(self.config, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = correct = seen = 0.0
        started = time.perf_counter()
        groups = _accumulation_groups(len(self.loader), self.config.accum_steps)
        quiet_rank = {} if self.rank == 0 else {"disable": True}
        bar = progress(
            self.loader, total=len(self.loader), desc=f"epoch {epoch + 1}/{self.config.epochs}", **quiet_rank
        )
        self.optimizer.zero_grad(set_to_none=True)
        for index, ((xb, yb), group_size) in enumerate(zip(bar, groups)):
            xb, yb = xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)
            step_now = (index % self.config.accum_steps) + 1 == group_size
            sync = contextlib.nullcontext() if step_now or self.world == 1 else self.model.no_sync()
            with sync:
                with torch.autocast("cuda", dtype=torch.float16, enabled=self.config.amp):
                    logits = self.model(xb)
                    loss = self._loss(logits.float(), xb, yb)
                self.scaler.scale(loss / group_size).backward()
            if step_now:
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
            loss_sum += float(loss.detach()) * yb.shape[0]
            correct += float((logits.detach().argmax(1) == yb).sum())
            seen += yb.shape[0]
        bar.close()
        loss_sum, correct, seen = _reduce([loss_sum, correct, seen], self.device, self.world)
        elapsed = time.perf_counter() - started
        self._sync_buffers()
        val_loss, val_acc = evaluate(self.net, *self.splits["val"], self.rank, self.world, self.device)
        return {"epoch": epoch + 1, "lr": lr, "loss": loss_sum / seen, "train_accuracy": correct / seen,
                "val_loss": val_loss, "val_accuracy": val_acc, "samples_per_s": seen / elapsed, "epoch_time_s": elapsed}

    def _sync_buffers(self) -> None:
        """Give every rank rank 0's BatchNorm statistics (each rank's last batch moved its own copy)."""
        if self.world > 1:
            for buffer in self.net.buffers():
                dist.broadcast(buffer, 0)

    def _checkpoint(self, epochs_done: int) -> dict[str, Any]:
        return {
            "format": 1, "model_name": self.config.model, "model_config": dict(self.plan.model_config),
            "input_spec": self.plan.input_spec.to_json(), "dataset": self.plan.dataset.name,
            "state_dict": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.config.amp else {},
            "epoch": epochs_done, "metrics": list(self.metrics), "best_val_accuracy": self.best_val,
            "train_config": self.config.to_json(), "world_size": self.world,
            "rng_state": torch.get_rng_state(), "trtopt_version": __version__,
        }

    def _save(self, epochs_done: int, improved: bool) -> None:
        checkpoint = self._checkpoint(epochs_done)
        save_checkpoint(self.out / "last.pt", checkpoint)
        if improved or not (self.out / "best.pt").exists():
            save_checkpoint(self.out / "best.pt", checkpoint)
        atomic_write_text(self.out / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in self.metrics))

    def run(self) -> TrainResult:
        started = time.perf_counter()
        end = self.config.epochs
        if self.config.stop_after_epoch is not None:
            end = min(end, self.config.stop_after_epoch)
        for epoch in range(self.start_epoch, end):
            record = self.train_epoch(epoch)
            if not math.isfinite(record["loss"]):  # the same reduced value on every rank: all stop together
                raise TrtoptError(f"training diverged: the loss is {record['loss']} in epoch {epoch + 1} "
                                  f"(lower --lr, or check {self.config.dataset} for extreme values); the last good "
                                  f"checkpoint is kept")
            self.metrics.append(record)
            improved = record["val_accuracy"] > self.best_val
            self.best_val = max(self.best_val, record["val_accuracy"])
            if self.rank == 0:
                self._save(epoch + 1, improved)
                log.info("epoch %d/%d  loss %.4f  val accuracy %.2f%%  %.0f samples/s", epoch + 1, self.config.epochs,
                         record["loss"], 100 * record["val_accuracy"], record["samples_per_s"])
        test_loss, test_acc = evaluate(self.net, *self.splits["test"], self.rank, self.world, self.device)
        result = TrainResult(out_dir=str(self.out), checkpoint=str(self.out / "last.pt"),
                             best_checkpoint=str(self.out / "best.pt"), epochs_done=max(end, self.start_epoch),
                             test_accuracy=test_acc, test_loss=test_loss, best_val_accuracy=self.best_val,
                             world_size=self.world, wall_time_s=time.perf_counter() - started, metrics=self.metrics)
        if self.rank == 0:
            atomic_write_json(self.out / "summary.json", result.to_json())
            log.info("test accuracy %.2f%% after %d epochs", 100 * test_acc, result.epochs_done)
        return result


def run_rank(config: TrainConfig, plan: RunPlan, rank: int, world: int, local_rank: int) -> TrainResult:
    """Train as `rank` of `world`; joins (and leaves) the process group when world > 1."""
    if config.threads:
        torch.set_num_threads(config.threads)
    if world == 1:
        return _Trainer(config, plan, rank, world, local_rank).run()
    from datetime import timedelta

    backend = "nccl" if config.device != "cpu" and torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(seconds=config.timeout_s))
    try:
        result = _Trainer(config, plan, rank, world, local_rank).run()
        dist.barrier()  # rank 0 has written its files; leave together (gloo aborts when a peer vanishes mid-teardown)
        return result
    finally:
        dist.destroy_process_group()
