"""Errors a client caused or must retry, each carrying the HTTP status and gRPC code it maps to.

Both front ends answer the same failure the same way: HTTP ``{"error": "..."}`` with the status,
gRPC with the matching status code and the same message.
"""

from __future__ import annotations


class ServeError(Exception):
    """A request that cannot be answered; `http_status` and `grpc_code` (grpc.StatusCode name) say why."""

    http_status = 500
    grpc_code = "INTERNAL"


class BadRequest(ServeError):
    """Malformed request, wrong datatype or shape, unknown input: the client must change it."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"


class NotFound(ServeError):
    """Unknown model or version."""

    http_status = 404
    grpc_code = "NOT_FOUND"


class PayloadTooLarge(ServeError):
    """Request body above the server's limit."""

    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class Unavailable(ServeError):
    """Overloaded (queue full), timed out in the queue, not ready or shutting down: retry later."""

    http_status = 503
    grpc_code = "UNAVAILABLE"
