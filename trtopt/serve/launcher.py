"""Start `trtopt serve` as a child process and learn its ports (tests, load benchmarks, scripts).

The server prints ``trtopt serve: listening http=... grpc=... metrics=...`` once its sockets are
bound (ports 0 pick free ones), then ``trtopt serve: ready (...)`` after the warm-up; this reads
those lines instead of guessing ports or sleeping.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from trtopt.errors import TrtoptError

_LISTENING = re.compile(r"trtopt serve: listening http=(\S+) grpc=(\S+) metrics=(\S+)")


def serve_command(engines: Sequence[str | os.PathLike[str]], *options: str) -> list[str]:
    """The `trtopt serve` command line on free ports (port 0), with this interpreter; `options` come last."""
    return [
        sys.executable,
        "-m",
        "trtopt",
        "serve",
        *map(os.fspath, engines),
        "--http-port",
        "0",
        "--grpc-port",
        "0",
        "--metrics-port",
        "0",
        *options,
    ]


@dataclass
class ServerProcess:
    """A running `trtopt serve` child: its addresses, stderr lines so far, and how to stop it."""

    process: subprocess.Popen[str]
    http: str = ""
    grpc: str = ""
    metrics: str = ""
    lines: list[str] = field(default_factory=list)
    _ready: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def start(
        cls,
        engines: Sequence[str | os.PathLike[str]],
        *options: str,
        timeout_s: float = 120.0,
        env: dict[str, str] | None = None,
    ) -> "ServerProcess":
        """Launch on free loopback ports and wait until it reports ready (TrtoptError on failure)."""
        process = subprocess.Popen(
            serve_command(engines, *options),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        server = cls(process)
        threading.Thread(target=server._read_stderr, daemon=True).start()
        if not server._ready.wait(timeout_s) or not server.http:
            server.stop(signal.SIGKILL)
            raise TrtoptError("trtopt serve did not become ready:\n" + "\n".join(server.lines[-20:]))
        return server

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            match = _LISTENING.search(line)
            if match:
                self.http, self.grpc, self.metrics = match.groups()
            if line.startswith(("trtopt serve: ready", "trtopt serve: error")):
                self._ready.set()
        self._ready.set()  # exited

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        """Send `sig` and wait for the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
