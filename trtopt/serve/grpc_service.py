"""The v2 gRPC front end: Triton's GRPCInferenceService (the stubs tritonclient ships).

Requests carry tensors as ``raw_input_contents`` (what tritonclient sends) or typed ``contents``;
responses always use ``raw_output_contents``, as Triton does. Errors abort the call with the gRPC
code of their ServeError class and the same message the HTTP front end gives.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from trtopt.serve.access_log import log_access
from trtopt.serve.codec import InferenceRequest, RequestedOutput, parse_shape, tensor_from_bytes, tensor_from_values
from trtopt.serve.datatypes import v2_name
from trtopt.serve.errors import BadRequest, ServeError
from trtopt.serve.state import ServerState

# InferTensorContents field holding each datatype's typed values (FP16 travels as raw bytes only)
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


def decode_grpc(request: service_pb2.ModelInferRequest) -> InferenceRequest:
    """A ModelInferRequest as the same InferenceRequest the HTTP front end decodes."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; send one per input or none")
    inputs, datatypes = {}, {}
    for index, tensor in enumerate(request.inputs):
        if tensor.name in inputs:
            raise BadRequest(f"input {tensor.name!r} given twice")
        shape = parse_shape(tensor.name, list(tensor.shape))
        if raw:
            inputs[tensor.name] = tensor_from_bytes(
                tensor.name, tensor.datatype, shape, raw[index], "raw_input_contents"
            )
        else:
            field = _CONTENTS_FIELD.get(tensor.datatype.upper())
            if field is None:
                raise BadRequest(f"input {tensor.name!r}: datatype {tensor.datatype!r} needs raw_input_contents")
            inputs[tensor.name] = tensor_from_values(
                tensor.name, tensor.datatype, shape, list(getattr(tensor.contents, field))
            )
        datatypes[tensor.name] = tensor.datatype.upper()
    timeout = request.parameters["timeout"].int64_param if "timeout" in request.parameters else None
    outputs = [RequestedOutput(o.name, True) for o in request.outputs] or None
    return InferenceRequest(inputs, datatypes, outputs, True, request.id or None, timeout or None)


class InferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):
    """Health, metadata, config, statistics and infer over gRPC; the rest stays UNIMPLEMENTED."""

    def __init__(self, state: ServerState) -> None:
        self._state = state

    def _call(self, context: grpc.ServicerContext, method: str, answer: Callable[[], Any]) -> Any:
        """Run `answer`, map errors to status codes, and write the access-log line."""
        started = time.perf_counter()
        code, message = grpc.StatusCode.OK, ""
        try:
            return answer()
        except ServeError as exc:
            code, message = getattr(grpc.StatusCode, exc.grpc_code), str(exc)
        except Exception as exc:  # noqa: BLE001 - one bad call must not take the server down
            code, message = grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
        finally:
            log_access(
                protocol="grpc",
                client=context.peer(),
                method=method,
                status=code.name,
                ms=round((time.perf_counter() - started) * 1e3, 3),
            )
        context.abort(code, message)

    def ServerLive(self, request: Any, context: grpc.ServicerContext) -> Any:
        return service_pb2.ServerLiveResponse(live=self._state.live)

    def ServerReady(self, request: Any, context: grpc.ServicerContext) -> Any:
        return service_pb2.ServerReadyResponse(ready=self._state.ready)

    def ModelReady(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._call(
            context,
            "ModelReady",
            lambda: service_pb2.ModelReadyResponse(ready=self._state.model_ready(request.name, request.version)),
        )

    def ServerMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        return json_format.ParseDict(self._state.server_metadata(), service_pb2.ServerMetadataResponse())

    def ModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._call(
            context,
            "ModelMetadata",
            lambda: json_format.ParseDict(
                self._state.repository.get(request.name, request.version).require_ready().metadata(),
                service_pb2.ModelMetadataResponse(),
            ),
        )

    def ModelConfig(self, request: Any, context: grpc.ServicerContext) -> Any:
        def answer() -> Any:
            config = self._state.repository.get(request.name, request.version).require_ready().config()
            return service_pb2.ModelConfigResponse(config=json_format.ParseDict(config, model_config_pb2.ModelConfig()))

        return self._call(context, "ModelConfig", answer)

    def ModelStatistics(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._call(
            context,
            "ModelStatistics",
            lambda: json_format.ParseDict(
                self._state.statistics(request.name, request.version), service_pb2.ModelStatisticsResponse()
            ),
        )

    def ModelInfer(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._call(context, "ModelInfer", lambda: self._infer(request))

    def _infer(self, request: service_pb2.ModelInferRequest) -> service_pb2.ModelInferResponse:
        model = self._state.model_to_infer(request.model_name, request.model_version)
        with self._state.metrics.in_flight.labels("grpc").track_inprogress():
            decoded = decode_grpc(request)
            names = model.output_names([o.name for o in decoded.outputs] if decoded.outputs else None)
            outputs = model.submit(decoded).result()
        response = service_pb2.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
        for name in names:
            array = outputs[name]
            response.outputs.add(name=name, datatype=v2_name(array.dtype), shape=list(array.shape))
            response.raw_output_contents.append(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
        return response


def create_grpc_server(state: ServerState, address: str, workers: int = 32) -> tuple[grpc.Server, int]:
    """A started-ready (not yet started) gRPC server bound to `address`, and the port it got."""
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", state.settings.max_body_bytes),
            ("grpc.max_send_message_length", -1),
        ],
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(state), server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen for gRPC on {address}")
    return server, port
