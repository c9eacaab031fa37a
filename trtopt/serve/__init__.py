"""`trtopt serve`: engines behind the KServe v2 / Triton inference protocol (HTTP and gRPC).

Imported only by the serve CLI verb (and the network bench target), never by ``import trtopt`` or
the runners, so the serving stack (Starlette, uvicorn, grpcio, prometheus-client, tritonclient's
protocol stubs) stays an optional extra: ``pip install trtopt[serve]``.

Modules, one job each: ``errors`` (protocol errors with their HTTP status), ``datatypes`` (v2
datatype names), ``settings`` (per-model batching from the engine and a TOML file), ``batcher``
(Triton-style dynamic batching over a pool of runners), ``models`` (the loaded model registry),
``codec`` (v2 JSON/binary tensors to arrays and back), ``http_app``/``grpc_service`` (the two
front ends), ``metrics``, ``access_log``, ``server`` (start, readiness, graceful drain), and
``triton_export`` (a Triton model repository from engine folders).
"""
