"""`trtopt train`: train a zoo model with the DDP trainer (local processes or under torchrun)."""
from __future__ import annotations

import argparse
import json
import os

from trtopt.models import list_models


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a zoo model (DDP: --nproc local processes, or under torchrun)",
                              description="Train a zoo model on the bundled digits or an .npz with x and y. "
                                          "Writes OUT/last.pt, OUT/best.pt, OUT/metrics.jsonl, OUT/summary.json.")
    p.add_argument("--model", default="lenet", help=f"zoo model: {', '.join(list_models())} (default lenet)")
    p.add_argument("--model-config", action="append", metavar="KEY=VALUE",
                   help="model option, repeatable (e.g. width=16, width_mult=0.25, num_classes=10)")
    p.add_argument("--dataset", default="digits", help="'digits' (bundled) or PATH.npz with arrays x and y")
    p.add_argument("--out", help="output folder (default runs/MODEL)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--nproc", type=int, default=1, help="local processes (ignored under torchrun)")
    p.add_argument("--batch-size", type=int, default=32, help="per process")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--scheduler", choices=("cosine", "step", "none"), default="cosine", help="per-epoch LR schedule")
    p.add_argument("--accum-steps", type=int, default=1, help="gradient accumulation steps per optimizer step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--resume",
        nargs="?",
        const="",
        metavar="CKPT",
        help="continue from CKPT (default OUT/last.pt); --epochs is the total to reach",
    )
    p.add_argument(
        "--stop-after-epoch", type=int, metavar="N", help="end this run after epoch N (continue later with --resume)"
    )
    p.add_argument("--teacher", metavar="CKPT", help="distill from this teacher checkpoint's soft targets")
    p.add_argument("--distill-temperature", type=float, default=4.0)
    p.add_argument("--distill-weight", type=float, default=0.5, help="weight of the soft-target loss (0..1)")
    p.add_argument("--amp", action="store_true", help="automatic mixed precision (CUDA only)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=int, help="torch threads per process (default: cores / processes)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds a rank waits for the others before failing")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trtopt.models import parse_config_overrides
    from trtopt.train import TrainConfig, train

    out = args.out or os.path.join("runs", args.model)
    resume = args.resume if args.resume else (os.path.join(out, "last.pt") if args.resume == "" else None)
    if args.quiet:
        os.environ["TRTOPT_LOG_LEVEL"] = "ERROR"  # inherited by spawned ranks
        os.environ["TRTOPT_NO_PROGRESS"] = "1"
    config = TrainConfig(
        model=args.model, dataset=args.dataset, out=out, epochs=args.epochs, nproc=args.nproc,
        batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer, momentum=args.momentum,
        weight_decay=args.weight_decay, scheduler=args.scheduler, accum_steps=args.accum_steps, seed=args.seed,
        model_config=parse_config_overrides(args.model_config), resume=resume, stop_after_epoch=args.stop_after_epoch,
        teacher=args.teacher, distill_temperature=args.distill_temperature, distill_weight=args.distill_weight,
        amp=args.amp, device=args.device, threads=args.threads, timeout_s=args.timeout,
    )
    result = train(config)
    if os.environ.get("RANK", "0") != "0":
        return 0
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    elif not args.quiet:
        print(f"trained {args.model} on {args.dataset}: {result.epochs_done} epochs on {result.world_size} process(es) "
              f"in {result.wall_time_s:.1f} s; test accuracy {100 * result.test_accuracy:.2f}% "
              f"(best val {100 * result.best_val_accuracy:.2f}%)")
        print(f"checkpoint: {result.checkpoint}")
    return 0
