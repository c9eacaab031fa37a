"""`trtopt serve ENGINES...`: engines behind the KServe v2 / Triton protocol (HTTP, gRPC, metrics)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve engines over the KServe v2 / Triton protocol (HTTP + gRPC) with dynamic batching",
        description="Serve every engine folder given (or found in a folder of engines) by name, version = the engine "
        "build, over HTTP/REST (JSON and binary tensors) and gRPC, with Triton-style dynamic batching, "
        "Prometheus metrics, and graceful shutdown on SIGTERM. Needs the serve extra: pip install 'trtopt[serve]'.",
    )
    p.add_argument("engines", nargs="+", metavar="ENGINES_DIR|ENGINE_DIR", help="engine folders or folders of engines")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--http-port", type=int, default=8000, help="HTTP/REST port (default 8000; 0 picks a free one)")
    p.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default 8001; 0 picks a free one)")
    p.add_argument(
        "--metrics-port", type=int, default=8002, help="Prometheus /metrics port (default 8002; 0 picks a free one)"
    )
    p.add_argument("--config", metavar="TOML", help="per-model batching: [defaults] and [models.NAME] tables")
    p.add_argument("--max-body-mb", type=float, default=64.0, help="largest request body accepted (default 64 MiB)")
    p.add_argument(
        "--drain-seconds",
        type=float,
        default=30.0,
        help="on SIGTERM, how long in-flight requests may take to finish (default 30)",
    )
    p.add_argument("--no-access-log", action="store_true", help="do not write the JSON access log to stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trtopt.errors import UsageError

    for flag in ("http_port", "grpc_port", "metrics_port"):
        if not 0 <= getattr(args, flag) <= 65535:
            raise UsageError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: expected a port in 0..65535")
    if args.max_body_mb <= 0 or args.drain_seconds <= 0:
        raise UsageError("--max-body-mb and --drain-seconds must be positive")
    try:
        from trtopt.serve.server import serve
        from trtopt.serve.settings import ServerSettings, read_config
    except ImportError as exc:
        raise UsageError(
            f"trtopt serve needs the serve extra ({exc.name} is missing): pip install 'trtopt[serve]'"
        ) from exc

    defaults, models = read_config(args.config) if args.config else (None, {})
    settings = ServerSettings(
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        max_body_bytes=int(args.max_body_mb * (1 << 20)),
        drain_seconds=args.drain_seconds,
        models=models,
        access_log=not args.no_access_log,
        **({"defaults": defaults} if defaults else {}),
    )
    return serve(args.engines, settings)
