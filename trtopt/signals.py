"""Signals: SIGTERM handled like Ctrl-C, and child processes that do not outlive their parent.

A scheduler (Slurm, Kubernetes, systemd) stops a job with SIGTERM. Python's default for SIGTERM is
to die on the spot, skipping every ``finally``: a build would leave its staging folder and a
training launcher its workers. Inside :func:`sigterm_as_interrupt` SIGTERM raises
:class:`Terminated`, a ``KeyboardInterrupt``, so the same cleanup as for Ctrl-C runs and the CLI
reports it the same way (exit 130).

SIGKILL cannot be caught, so a killed launcher cannot stop its workers; each worker therefore asks
the kernel for a signal when its parent dies (:func:`die_with_parent`, Linux ``prctl``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: unwinds like Ctrl-C so staging folders and child processes are cleaned up."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (only in the main thread, which owns signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def die_with_parent(parent_pid: int) -> bool:
    """Have the kernel send this process SIGTERM when `parent_pid` (its parent) dies; False off Linux.

    The signal keeps its default action in worker processes, so they end at once; nothing of theirs
    needs cleaning (their outputs are atomic). A parent that died before the request is caught by
    comparing ``getppid()`` afterwards.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        return False
    if os.getppid() != parent_pid:  # the parent is already gone: we were re-parented before the request
        os.kill(os.getpid(), signal.SIGTERM)
    return True
