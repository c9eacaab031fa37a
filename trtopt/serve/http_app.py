"""The v2 HTTP/REST front end (Starlette): health, metadata, config, statistics and infer.

Routes follow the KServe v2 protocol with Triton's extensions (binary tensor data, model
configuration, statistics). Every error is ``{"error": "..."}`` with the status of its ServeError
class. Two pure-ASGI wrappers sit outside the routes: the body-size limit and the access log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from trtopt.serve.access_log import log_access
from trtopt.serve.codec import decode_http, decompress, encode_http
from trtopt.serve.errors import BadRequest, PayloadTooLarge, ServeError
from trtopt.serve.state import ServerState

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
HEADER_LENGTH = "inference-header-content-length"


def error_response(error: ServeError) -> JSONResponse:
    return JSONResponse({"error": str(error)}, status_code=error.http_status)


def _endpoint(
    handler: Callable[[Request, ServerState], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler: ServeErrors become their status, anything else a 500 that names the exception."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request, request.app.state.serve)
        except ServeError as exc:
            return error_response(exc)
        except Exception as exc:  # noqa: BLE001 - one bad request must not take the server down
            return error_response(ServeError(f"internal error: {type(exc).__name__}: {exc}"))

    return endpoint


def _model(request: Request, state: ServerState):  # noqa: ANN202 - ServedModel, kept out of the import graph
    return state.repository.get(request.path_params["name"], request.path_params.get("version", ""))


async def live(request: Request, state: ServerState) -> Response:
    return Response(status_code=200 if state.live else 503)


async def ready(request: Request, state: ServerState) -> Response:
    return Response(status_code=200 if state.ready else 503)


async def server_metadata(request: Request, state: ServerState) -> Response:
    return JSONResponse(state.server_metadata())


async def model_metadata(request: Request, state: ServerState) -> Response:
    return JSONResponse(_model(request, state).require_ready().metadata())


async def model_ready(request: Request, state: ServerState) -> Response:
    ready = state.model_ready(request.path_params["name"], request.path_params.get("version", ""))
    return Response(status_code=200 if ready else 503)


async def model_config(request: Request, state: ServerState) -> Response:
    return JSONResponse(_model(request, state).require_ready().config())


async def model_stats(request: Request, state: ServerState) -> Response:
    return JSONResponse(state.statistics(request.path_params.get("name", ""), request.path_params.get("version", "")))


def _header_length(request: Request) -> int | None:
    raw = request.headers.get(HEADER_LENGTH)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"Inference-Header-Content-Length must be an integer, got {raw!r}") from None


async def _body(request: Request, limit: int) -> bytes:
    body = await request.body()
    encoding = request.headers.get("content-encoding", "identity")
    return body if encoding.strip().lower() in ("", "identity") else decompress(body, encoding, limit)


async def infer(request: Request, state: ServerState) -> Response:
    model = state.model_to_infer(request.path_params["name"], request.path_params.get("version", ""))
    with state.metrics.in_flight.labels("http").track_inprogress():
        decoded = decode_http(await _body(request, state.settings.max_body_bytes), _header_length(request))
        names = model.output_names([o.name for o in decoded.outputs] if decoded.outputs is not None else None)
        binary = {o.name: o.binary for o in decoded.outputs or []}
        outputs = await asyncio.wrap_future(model.submit(decoded))
    head = {
        "model_name": model.name,
        "model_version": model.version,
        **({"id": decoded.request_id} if decoded.request_id else {}),
    }
    body, header_length = encode_http(head, [(n, outputs[n], binary.get(n, decoded.binary_output)) for n in names])
    if header_length is None:
        return Response(body, media_type="application/json")
    return Response(
        body, media_type="application/octet-stream", headers={"Inference-Header-Content-Length": str(header_length)}
    )


def _routes() -> list[Route]:
    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    routes = [
        Route("/v2/health/live", _endpoint(live)),
        Route("/v2/health/ready", _endpoint(ready)),
        Route("/v2", _endpoint(server_metadata)),
        Route("/v2/models/stats", _endpoint(model_stats)),
    ]
    for prefix in (model, versioned):
        routes += [
            Route(prefix, _endpoint(model_metadata)),
            Route(prefix + "/ready", _endpoint(model_ready)),
            Route(prefix + "/config", _endpoint(model_config)),
            Route(prefix + "/stats", _endpoint(model_stats)),
            Route(prefix + "/infer", _endpoint(infer), methods=["POST"]),
        ]
    return routes


class BodyLimit:
    """Refuse bodies above `limit` bytes with 413, by Content-Length or while streaming.

    An over-long body is still read to its end and discarded, so the client sees the 413 instead
    of a connection reset while it is still sending.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            more = True
            while more:
                more = (await receive()).get("more_body", False)
            await error_response(
                PayloadTooLarge(
                    f"request body of {int(declared)} bytes exceeds the limit of {self.limit} bytes (--max-body-mb)"
                )
            )(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {self.limit} bytes (--max-body-mb)")
            return message

        await self.app(scope, limited, send)


class AccessLog:
    """One structured access-log line per HTTP request: method, path, status, bytes, duration."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        seen: dict[str, int] = {"status": 500, "bytes_out": 0}

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            elif message["type"] == "http.response.body":
                seen["bytes_out"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            client = scope.get("client") or ("", 0)
            log_access(
                protocol="http",
                client=f"{client[0]}:{client[1]}",
                method=scope["method"],
                path=scope["path"],
                status=seen["status"],
                bytes_out=seen["bytes_out"],
                ms=round((time.perf_counter() - started) * 1e3, 3),
            )


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods answer in the protocol's error shape too."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return JSONResponse(
        {"error": f"{request.method} {request.url.path}: {getattr(exc, 'detail', exc)}"}, status_code=status
    )


def create_app(state: ServerState) -> ASGIApp:
    app = Starlette(routes=_routes(), exception_handlers={HTTPException: _http_error})
    app.state.serve = state
    return AccessLog(BodyLimit(app, state.settings.max_body_bytes))
