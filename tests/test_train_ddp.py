"""Multi-process training through the CLI: local DDP, two torchrun nodes on loopback, a dying rank."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="training needs torch")

FAST = ["--threads", "1", "--batch-size", "32", "--lr", "0.1"]


def _env():
    return dict(os.environ, TRTOPT_NO_PROGRESS="1", OMP_NUM_THREADS="1")


def _port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _start_long_training(out, stderr=subprocess.PIPE, env=None):
    """Two local ranks training far longer than any test waits: each test stops or kills the run itself."""
    return subprocess.Popen([sys.executable, "-m", "trtopt", "-q", "train", "--epochs", "500", "--nproc", "2",
                             "--out", str(out), *FAST], stderr=stderr, text=True, env=env or _env())


def test_local_ddp_two_processes(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "trtopt", "-q", "train", "--model", "lenet", "--dataset", "digits",
                           "--epochs", "3", "--nproc", "2", "--out", str(out), "--json", *FAST],
                          capture_output=True, text=True, env=_env(), timeout=240)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["world_size"] == 2 and result["epochs_done"] == 3
    assert result["test_accuracy"] >= 0.85  # the full demo run (10 epochs) reaches >= 97%
    metrics = _lines(out / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == [1, 2, 3] and metrics[-1]["loss"] < metrics[0]["loss"]
    assert all(m["samples_per_s"] > 0 for m in metrics)
    assert {p.name for p in out.iterdir()} == {"last.pt", "best.pt", "metrics.jsonl", "summary.json"}


def test_two_torchrun_nodes_on_loopback(tmp_path):
    port = _port()
    out = tmp_path / "run"
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--node-rank",
                str(rank),
                "--nproc-per-node",
                "1",
                "--master-addr",
                "127.0.0.1",
                "--master-port",
                str(port),
                "-m",
                "trtopt",
                "-q",
                "train",
                "--model",
                "resnet18",
                "--model-config",
                "width=4",
                "--epochs",
                "1",
                "--out",
                str(out),
                "--json",
                *FAST,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for rank in range(2)
    ]
    try:
        outputs = [node.communicate(timeout=240) for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    for node, (_, err) in zip(nodes, outputs):
        assert node.returncode == 0, err
    summary = json.loads(outputs[0][0])  # node 0 hosts rank 0, which prints and writes the result
    assert summary["world_size"] == 2 and summary["epochs_done"] == 1  # BatchNorm buffers synced across ranks
    assert summary["metrics"][0]["val_accuracy"] > 0.2
    assert outputs[1][0].strip() == ""  # the other rank trained silently
    assert json.loads((out / "summary.json").read_text())["world_size"] == 2


def test_a_dying_rank_stops_the_run(tmp_path):
    out = tmp_path / "run"
    proc = _start_long_training(out)
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.jsonl").exists():  # both ranks are past setup and training
            assert proc.poll() is None and time.monotonic() < deadline, "training did not start"
            time.sleep(0.2)
        children = psutil.Process(proc.pid).children()
        assert len(children) == 2
        victim = next(c for c in children if c.environ().get("RANK") == "1")
        survivor = next(c for c in children if c is not victim)
        victim.send_signal(signal.SIGKILL)
        started = time.monotonic()
        _, err = proc.communicate(timeout=60)
        assert time.monotonic() - started < 30
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    last = err.strip().splitlines()[-1]
    assert "training rank 1 of 2 failed: killed by SIGKILL" in last
    assert not survivor.is_running() or survivor.status() == psutil.STATUS_ZOMBIE
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]


def test_sigterm_to_the_launcher_stops_its_ranks(tmp_path):
    """A scheduler's SIGTERM must not orphan the worker processes."""
    proc = _start_long_training(tmp_path / "run")
    try:
        deadline = time.monotonic() + 60
        while len(children := psutil.Process(proc.pid).children()) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "workers did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "interrupted" in err
    gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive


def test_sigkill_to_the_launcher_stops_its_ranks_and_leaves_no_temp_files(tmp_path):
    """SIGKILL cannot be handled: the workers' parent-death signal must end them, and no temp folder stays."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = _start_long_training(tmp_path / "run", stderr=subprocess.DEVNULL, env={**_env(), "TMPDIR": str(scratch)})
    children = []
    try:
        deadline = time.monotonic() + 60
        while len(children := psutil.Process(proc.pid).children()) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "workers did not start"
            time.sleep(0.05)
        while not (tmp_path / "run" / "metrics.jsonl").exists():  # training, not still importing torch
            assert proc.poll() is None and time.monotonic() < deadline + 60, "no epoch finished"
            time.sleep(0.1)
        proc.kill()
        proc.wait(timeout=10)
        gone, alive = psutil.wait_procs(children, timeout=10)
    finally:
        for child in children:
            if child.is_running():
                child.kill()
    assert not alive, "workers outlived their killed launcher"
    assert not [p.name for p in scratch.iterdir() if p.name.startswith("trtopt-")]
