"""Run the HTTP, gRPC and metrics listeners over one model repository, and shut down gracefully.

Start: listen first (so clients can ask for liveness), load and warm up the models in a thread,
report ready when all are. Port 0 picks a free port; the line ``trtopt serve: listening http=HOST:PORT
grpc=HOST:PORT metrics=HOST:PORT`` on stderr says which. SIGTERM or SIGINT: readiness turns false,
both listeners stop accepting, requests already accepted are answered (up to `drain_seconds`),
queued batches finish, runners close, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Sequence

import uvicorn
from prometheus_client import start_http_server

from trtopt.errors import TrtoptError, UsageError
from trtopt.serve.access_log import configure_access_log
from trtopt.serve.grpc_service import create_grpc_server
from trtopt.serve.http_app import create_app
from trtopt.serve.metrics import ServeMetrics
from trtopt.serve.models import ModelRepository, find_engines
from trtopt.serve.settings import ServerSettings
from trtopt.serve.state import ServerState

log = logging.getLogger("trtopt.serve")


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling: the server as a whole decides how to drain."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listen(host: str, port: int, what: str) -> socket.socket:
    try:
        return socket.create_server(
            (host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET, backlog=1024
        )
    except OSError as exc:
        raise UsageError(f"cannot listen for {what} on {_address(host, port)}: {exc.strerror or exc}") from exc


def serve(engine_paths: Sequence[str], settings: ServerSettings) -> int:
    """Serve every engine found under `engine_paths` until SIGTERM/SIGINT; returns the exit status."""
    metrics = ServeMetrics()
    state = ServerState(ModelRepository(find_engines(engine_paths), settings, metrics), metrics, settings)
    configure_access_log(settings.access_log)
    return asyncio.run(_run(state))


async def _run(state: ServerState) -> int:
    settings = state.settings
    http_socket = _listen(settings.host, settings.http_port, "HTTP")
    try:
        grpc_server, grpc_port = create_grpc_server(state, _address(settings.host, settings.grpc_port))
    except (OSError, RuntimeError) as exc:
        raise UsageError(f"cannot listen for gRPC on {_address(settings.host, settings.grpc_port)}: {exc}") from exc
    try:
        metrics_server, _ = start_http_server(
            settings.metrics_port, addr=settings.host, registry=state.metrics.registry
        )
    except OSError as exc:
        raise UsageError(
            f"cannot listen for metrics on {_address(settings.host, settings.metrics_port)}: {exc.strerror or exc}"
        ) from exc
    http = _HttpServer(
        uvicorn.Config(
            create_app(state),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=math.ceil(settings.drain_seconds),
        )
    )
    grpc_server.start()
    grpc_stopped: threading.Event | None = None

    def shutdown() -> None:
        nonlocal grpc_stopped
        if state.draining:
            return
        log.warning("shutting down: draining in-flight requests (at most %.0f s)", settings.drain_seconds)
        state.draining = True
        http.should_exit = True
        grpc_stopped = grpc_server.stop(grace=settings.drain_seconds)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, shutdown)
    http_port = http_socket.getsockname()[1]
    print(
        f"trtopt serve: listening http={_address(settings.host, http_port)} grpc={_address(settings.host, grpc_port)} "
        f"metrics={_address(settings.host, metrics_server.server_port)}",
        file=sys.stderr,
        flush=True,
    )
    serving = asyncio.create_task(http.serve(sockets=[http_socket]))
    await asyncio.to_thread(state.repository.load_all)  # in a worker thread: health endpoints answer meanwhile
    if state.repository.load_error is None and not state.draining:
        print(f"trtopt serve: ready ({', '.join(sorted(state.repository.models))})", file=sys.stderr, flush=True)
    else:
        shutdown()
    await serving
    if grpc_stopped is not None:
        await asyncio.to_thread(grpc_stopped.wait)
    await asyncio.to_thread(state.repository.close)
    metrics_server.shutdown()
    error = state.repository.load_error
    if error is not None:
        raise (
            error
            if isinstance(error, TrtoptError)
            else TrtoptError(f"loading the models failed: {type(error).__name__}: {error}")
        )
    print("trtopt serve: stopped", file=sys.stderr, flush=True)
    return 0
