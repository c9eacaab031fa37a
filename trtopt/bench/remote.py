"""A model behind a KServe v2 server (`trtopt serve`, Triton, KServe) as a benchmark target.

``http://HOST:PORT/MODEL`` or ``grpc://HOST:PORT/MODEL``: each runner is one tritonclient client,
so concurrent callers and server-scenario workers each hold their own connection, like separate
users. Inputs and outputs come from the server's model metadata; the batch axis is bounded by the
model's ``max_batch_size``, so offline batch sizes the server would refuse are skipped with a note.
Tensors travel as binary (HTTP binary extension, gRPC raw contents): what is measured is the
network path a production client takes, queueing and dynamic batching included.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from trtopt.backends.base import Runner
from trtopt.errors import UsageError
from trtopt.tensors import TensorInfo

SCHEMES = ("http", "grpc")


@dataclass(frozen=True)
class ModelUrl:
    """``SCHEME://HOST:PORT/MODEL`` split into its parts."""

    scheme: str
    address: str
    model: str

    @classmethod
    def parse(cls, text: str) -> ModelUrl:
        parts = urlsplit(text)
        model = parts.path.strip("/")
        if parts.scheme not in SCHEMES or not parts.netloc or not parts.port or not model or "/" in model:
            raise UsageError(f"server target {text!r}: expected http://HOST:PORT/MODEL or grpc://HOST:PORT/MODEL")
        return cls(parts.scheme, parts.netloc, model)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.address}/{self.model}"


def is_server_url(spec: str) -> bool:
    return spec.split("://", 1)[0] in SCHEMES and "://" in spec


class RemoteRunner(Runner):
    """Runs queries on a v2 server through tritonclient, one client per runner and thread.

    tritonclient's HTTP client runs on gevent, whose connections belong to the thread that made
    them; the benchmark opens runners in one thread and drives them from worker threads, so each
    thread that calls `infer` gets its own client.
    """

    backend = "server"
    thread_safe = False

    def __init__(self, url: ModelUrl) -> None:
        try:
            if url.scheme == "grpc":
                import tritonclient.grpc as client_module
            else:
                import tritonclient.http as client_module
            from tritonclient.utils import InferenceServerException, triton_to_np_dtype
        except ImportError as exc:
            raise UsageError(f"server targets need tritonclient: pip install 'trtopt[serve]' ({exc})") from exc
        self.url = url
        self._module = client_module
        self._local = threading.local()
        self._clients: list[Any] = []
        self._clients_lock = threading.Lock()
        as_json = {"as_json": True} if url.scheme == "grpc" else {}
        try:
            metadata = self._client().get_model_metadata(url.model, **as_json)
            config = self._client().get_model_config(url.model, **as_json)
        except InferenceServerException as exc:
            raise UsageError(f"server target {url}: {exc.message() or exc}") from exc
        except OSError as exc:
            raise UsageError(f"server target {url}: cannot reach the server: {exc}") from exc
        config = config.get("config", config)
        max_batch = int(config.get("max_batch_size", 0))
        self.platform = str(metadata.get("platform", ""))

        def tensor(entry: Mapping[str, Any]) -> TensorInfo:
            shape = tuple(int(d) for d in entry["shape"])
            dims = tuple(("batch" if axis == 0 and max_batch else None) if d < 0 else d for axis, d in enumerate(shape))
            bounds = ((1, max_batch), *([None] * (len(dims) - 1))) if max_batch and dims else None
            return TensorInfo(entry["name"], np.dtype(triton_to_np_dtype(entry["datatype"])), dims, bounds)

        self._inputs = [tensor(entry) for entry in metadata["inputs"]]
        self._outputs = [tensor(entry) for entry in metadata["outputs"]]
        self._datatypes = {entry["name"]: entry["datatype"] for entry in metadata["inputs"]}
        self._requested = [self._module.InferRequestedOutput(o.name) for o in self._outputs]

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._module.InferenceServerClient(self.url.address)
            with self._clients_lock:
                self._clients.append(client)
        return client

    def _infer(self, feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        tensors = []
        for name, array in feed.items():
            tensor = self._module.InferInput(name, list(array.shape), self._datatypes[name])
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        result = self._client().infer(self.url.model, tensors, outputs=self._requested)
        return {o.name: result.as_numpy(o.name) for o in self._outputs}

    def close(self) -> None:
        """Close every thread's client (a gevent client closed from another thread only drops its pool)."""
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()
