"""Start a training run: in this process, under torchrun, or as N local worker processes.

The local launcher starts `python -m trtopt.train.worker` once per rank with the same environment
torchrun would set (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), so one code path serves
both. It watches the children: when one exits non-zero the others are terminated at once (they
would otherwise block in a collective until the timeout), and the error names the failed rank.

Nothing outlives the launcher: SIGTERM/Ctrl-C stop the workers (trtopt.signals), a SIGKILLed
launcher's workers get SIGTERM from the kernel (parent-death signal), and each rank reports its
failure through an already-unlinked temporary file inherited as a descriptor, so no temp folder
is ever left behind.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

from trtopt.errors import TrtoptError, UsageError, first_line
from trtopt.fileio import read_json
from trtopt.signals import die_with_parent, sigterm_as_interrupt
from trtopt.train.config import TrainConfig, TrainResult
from trtopt.train.plan import plan_run

log = logging.getLogger("trtopt.train")

CONFIG_ENV = "TRTOPT_TRAIN_CONFIG"
ERROR_FD_ENV = "TRTOPT_TRAIN_ERROR_FD"
LAUNCHER_PID_ENV = "TRTOPT_TRAIN_LAUNCHER_PID"
_ERROR_BYTES = 4096
_POLL_S = 0.1
_TERMINATE_GRACE_S = 10.0
_OTHER_REASON_CHARS = 120  # each other failed rank's reason, cut so the error stays one readable line


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every live child, then SIGKILL whatever is still alive after a grace period."""
    for proc in processes:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _TERMINATE_GRACE_S
    for proc in processes:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _failure_reason(error_file: IO[bytes], code: int) -> str:
    with contextlib.suppress(OSError):
        text = os.pread(error_file.fileno(), _ERROR_BYTES, 0).decode(errors="replace").strip()
        if text:
            return text
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def _spawn(config: TrainConfig) -> TrainResult:
    started = time.perf_counter()
    world = config.nproc
    base_env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(world),
                    LOCAL_WORLD_SIZE=str(world), **{CONFIG_ENV: config.dumps()})
    if not config.threads:
        base_env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // world)))
    with contextlib.ExitStack() as files, sigterm_as_interrupt():
        errors = [files.enter_context(tempfile.TemporaryFile(prefix="trtopt-rank-")) for _ in range(world)]
        processes: list[subprocess.Popen[bytes]] = []
        try:
            for rank in range(world):
                env = dict(base_env, RANK=str(rank), LOCAL_RANK=str(rank),
                           **{ERROR_FD_ENV: str(errors[rank].fileno()), LAUNCHER_PID_ENV: str(os.getpid())})
                processes.append(subprocess.Popen([sys.executable, "-m", "trtopt.train.worker"], env=env,
                                                  pass_fds=(errors[rank].fileno(),)))
            while True:
                codes = [proc.poll() for proc in processes]
                failed = [(rank, code) for rank, code in enumerate(codes) if code not in (None, 0)]
                if failed:
                    # A rank killed by a signal is the likely cause; peers then fail on the broken connection.
                    rank, code = min(failed, key=lambda item: (item[1] >= 0, item[0]))
                    survivors = sum(code is None for code in codes)
                    _stop(processes)
                    reason = _failure_reason(errors[rank], code)
                    # How each other failed rank ended: when no rank was killed, this tells a crash from its echo.
                    others = [f"rank {r}: {_failure_reason(errors[r], c)[:_OTHER_REASON_CHARS]}"
                              for r, c in failed if r != rank]
                    cls = UsageError if code == UsageError.exit_code else TrtoptError
                    raise cls(f"training rank {rank} of {world} failed: {reason}"
                              + (f" (stopped the {survivors} other running rank(s))" if survivors else "")
                              + (f" (also failed: {'; '.join(others)})" if others else ""))
                if all(code == 0 for code in codes):
                    break
                time.sleep(_POLL_S)
        except BaseException:
            _stop(processes)
            raise
    summary = read_json(Path(config.out) / "summary.json", "training summary")
    result = TrainResult.from_json(summary)
    result.wall_time_s = time.perf_counter() - started
    return result


def rank_from_env() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when started by torchrun or our launcher, else None."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError as exc:
        raise UsageError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers: {exc}") from exc
    return rank, world, local


def train(config: TrainConfig) -> TrainResult:
    """Train `config.model` on `config.dataset`; checkpoints and metrics land in `config.out`.

    Under torchrun (RANK/WORLD_SIZE set) this process is one rank and `nproc` is ignored; otherwise
    `nproc == 1` trains in this process and `nproc > 1` starts that many local workers.
    """
    plan = plan_run(config)
    ranks = rank_from_env()
    if ranks is not None or config.nproc == 1:
        from trtopt.train.loop import run_rank  # torch: only in processes that train

        return run_rank(config, plan, *(ranks or (0, 1, 0)))
    log.info("starting %d training processes", config.nproc)
    return _spawn(config)


def worker_main() -> int:
    """Entry of one spawned rank: report failures as one line in the launcher's error file."""
    error_fd = os.environ.get(ERROR_FD_ENV)
    launcher = os.environ.get(LAUNCHER_PID_ENV)
    if launcher:
        die_with_parent(int(launcher))
    try:
        config = TrainConfig.from_json(json.loads(os.environ[CONFIG_ENV]))
        from trtopt.train.loop import run_rank

        rank, world, local_rank = rank_from_env() or (0, 1, 0)
        run_rank(config, plan_run(config), rank, world, local_rank)
        return 0
    except Exception as exc:  # noqa: BLE001 - whatever ends a rank becomes one line and an exit status
        message = f"{exc}" if isinstance(exc, TrtoptError) else f"{type(exc).__name__}: {exc}"
        if error_fd:
            line = first_line(message, type(exc).__name__)
            with contextlib.suppress(OSError, ValueError):
                os.pwrite(int(error_fd), line.encode()[:_ERROR_BYTES], 0)
        print(f"trtopt train rank {os.environ.get('RANK', '?')}: error: {message}", file=sys.stderr)
        return exc.exit_code if isinstance(exc, TrtoptError) else 1
