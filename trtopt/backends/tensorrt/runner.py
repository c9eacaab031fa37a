"""Run a TensorRT engine: numpy or device arrays in, numpy or device arrays out.

Thread-safety: a TensorRT execution context is not thread-safe, so the runner owns a small pool of
*slots* (execution context + stream + buffers + captured graphs) and every ``infer()`` takes one
for the duration of the call. One runner may therefore be shared by threads: up to ``contexts``
calls run concurrently, further callers wait. With dynamic shapes each context needs its own
optimization profile, so the number of contexts is capped by the profiles the engine was built
with (BuildOptions.extra["profiles"]).

Per call: input shapes are checked against the engine's profile (UsageError naming the tensor
outside it), numpy inputs are staged in pinned memory and copied asynchronously, device inputs
(``__cuda_array_interface__`` / DLPack) are used in place, TensorRT runs on the slot's stream, and
outputs come back as numpy (default) or as DeviceArrays (``infer_device``). Buffers are reused and
grown when a larger shape arrives. With ``cuda_graph=True`` a fixed-shape call is captured once and
replayed.
"""
from __future__ import annotations

import logging
import queue
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from trtopt.backends.base import Runner, TensorInfo, check_tensor, closed_runner, validate_feed
from trtopt.backends.tensorrt import compat
from trtopt.backends.tensorrt.builder import ENGINE_FILE
from trtopt.backends.tensorrt.dtypes import numpy_dtype
from trtopt.backends.tensorrt.logger import LogRouter, make_trt_logger
from trtopt.cuda.graph import CudaGraph
from trtopt.cuda.interop import DeviceArray, DeviceView, device_view
from trtopt.cuda.memory import BufferPool, DeviceBuffer, PinnedBuffer, copy_dtod_async, copy_dtoh_async, copy_htod_async
from trtopt.cuda.stream import Stream
from trtopt.errors import TrtoptError, UsageError

log = logging.getLogger("trtopt.tensorrt")

_MAX_GRAPHS = 16


def _nbytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


class _Slot:
    """One execution context with its own stream, buffers and graphs (used by one thread at a time)."""

    def __init__(self, engine: Any, profile: int | None, router: LogRouter, cuda_graph: bool) -> None:
        self.context = engine.create_execution_context()
        if self.context is None:
            raise TrtoptError(router.explain("TensorRT could not create an execution context (out of device memory?)"))
        self.stream = Stream()
        self.router = router
        self.cuda_graph = cuda_graph
        if profile is not None:
            self.context.set_optimization_profile_async(profile, self.stream.ptr)
            self.stream.synchronize()
        self.device = BufferPool(DeviceBuffer)
        self.pinned = BufferPool(PinnedBuffer)
        self.graphs: dict[tuple, CudaGraph] = {}

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.stream.ptr):
            raise TrtoptError(self.router.explain("TensorRT execution failed"))

    def _execute(self, key: tuple) -> None:
        if not self.cuda_graph:
            self._enqueue()
            return
        graph = self.graphs.get(key)
        if graph is None:
            self._enqueue()  # the first run after a shape change does setup work that must not be captured
            try:
                graph = CudaGraph(self.stream, self._enqueue)
            except TrtoptError as exc:
                log.warning("CUDA graph capture failed, running without a graph: %s", exc)
                self.cuda_graph = False
                return
            if len(self.graphs) >= _MAX_GRAPHS:  # keys include addresses: bound the cache, drop the oldest
                self.graphs.pop(next(iter(self.graphs))).close()
            self.graphs[key] = graph
        graph.launch(self.stream)

    def run(self, inputs: list[TensorInfo], host: Mapping[str, np.ndarray], dev: Mapping[str, DeviceView],
            outputs: list[TensorInfo], out: Mapping[str, DeviceView] | None, to_device: bool) -> dict[str, Any]:
        addresses: list[int] = []
        shapes: list[tuple[int, ...]] = []
        for info in inputs:
            array = host.get(info.name)
            shape = tuple(array.shape) if array is not None else dev[info.name].shape
            if not self.context.set_input_shape(info.name, shape):
                raise UsageError(self.router.explain(f"input {info.name!r}: TensorRT rejected shape {list(shape)}"))
            nbytes = _nbytes(shape, info.dtype)
            if array is not None:
                staging = self.pinned.get(info.name, nbytes)
                np.copyto(staging.view(shape, info.dtype), array)
                target = self.device.get(info.name, nbytes)
                copy_htod_async(target.ptr, staging.ptr, nbytes, self.stream.handle)
                ptr = target.ptr
            else:
                view = dev[info.name]
                if view.stream not in (None, 0):
                    self.stream.wait_for_stream(view.stream)  # CAI v3: order after the producer's work
                ptr = view.ptr
                if self.cuda_graph:  # graphs bake in addresses: copy into our own buffer
                    target = self.device.get(info.name, nbytes)
                    copy_dtod_async(target.ptr, ptr, nbytes, self.stream.handle)
                    ptr = target.ptr
            self.context.set_tensor_address(info.name, ptr)
            addresses.append(ptr)
            shapes.append(shape)

        results: dict[str, Any] = {}
        pending: list[tuple[str, tuple[int, ...], np.dtype, int]] = []
        for info in outputs:
            shape = tuple(self.context.get_tensor_shape(info.name))
            if any(d < 0 for d in shape):
                raise TrtoptError(f"output {info.name!r} has a data-dependent shape {list(shape)}; trtopt's runner does not support those yet")
            nbytes = _nbytes(shape, info.dtype)
            if out is not None and info.name in out:
                view = out[info.name]
                if view.shape != shape or view.dtype != info.dtype:
                    raise UsageError(f"output {info.name!r}: the array given holds {view.dtype}{list(view.shape)}, the engine produces {np.dtype(info.dtype).name}{list(shape)}")
                ptr = view.ptr  # the caller's array is returned by _run
            elif to_device:
                array = DeviceArray(shape, info.dtype)
                ptr = array.ptr
                results[info.name] = array
            else:
                ptr = self.device.get(info.name, nbytes).ptr
                pending.append((info.name, shape, info.dtype, nbytes))
            self.context.set_tensor_address(info.name, ptr)
            addresses.append(ptr)

        self._execute((tuple(shapes), tuple(addresses)))
        for name, shape, dtype, nbytes in pending:
            staging = self.pinned.get(name, nbytes)
            copy_dtoh_async(staging.ptr, self.device.get(name, nbytes).ptr, nbytes, self.stream.handle)
        self.stream.synchronize()
        for name, shape, dtype, nbytes in pending:
            results[name] = np.array(self.pinned.get(name, nbytes).view(shape, dtype))
        return results

    def close(self) -> None:
        for graph in self.graphs.values():
            graph.close()
        self.graphs.clear()
        self.device.close()
        self.pinned.close()
        self.context = None
        self.stream.close()


class TensorRTRunner(Runner):
    """A deserialized TensorRT engine with a pool of execution contexts (thread-safe, see module doc)."""

    backend = "tensorrt"
    thread_safe = True

    def __init__(self, engine_path: Path, *, contexts: int = 1, cuda_graph: bool = False,
                 version_compatible: bool = False) -> None:
        import tensorrt as trt

        if contexts < 1:
            raise UsageError(f"contexts must be >= 1, got {contexts}")
        engine_path = Path(engine_path)
        if not engine_path.is_file():
            raise UsageError(f"TensorRT engine not found: {engine_path}")
        self._router = LogRouter()
        self._logger = make_trt_logger(self._router)
        self._runtime = trt.Runtime(self._logger)
        if version_compatible:
            self._runtime.engine_host_code_allowed = True  # version-compatible plans embed the lean runtime
        self._engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self._engine is None:
            raise TrtoptError(self._router.explain(
                f"TensorRT {trt.__version__} cannot deserialize {engine_path}; it was probably built with another "
                "TensorRT version or for another GPU: rebuild it here with `trtopt build ... --backend tensorrt`"))
        engine = self._engine
        self._inputs: list[TensorInfo] = []
        self._outputs: list[TensorInfo] = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            dtype = numpy_dtype(engine.get_tensor_dtype(name).name, name)
            shape = tuple(None if d < 0 else int(d) for d in engine.get_tensor_shape(name))
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                bounds = None
                if any(d is None for d in shape):
                    low, _opt, high = engine.get_tensor_profile_shape(name, 0)
                    bounds = tuple((int(lo), int(hi)) if d is None else None for d, lo, hi in zip(shape, low, high))
                self._inputs.append(TensorInfo(name, dtype, shape, bounds))
            else:
                self._outputs.append(TensorInfo(name, dtype, shape))
        dynamic = any(not info.is_static for info in self._inputs)
        if dynamic and contexts > engine.num_optimization_profiles:
            log.warning("%d contexts requested but the engine has %d optimization profile(s); using %d "
                        "(build with more profiles for more concurrency)", contexts,
                        engine.num_optimization_profiles, engine.num_optimization_profiles)
            contexts = engine.num_optimization_profiles
        self._slots: queue.Queue[_Slot] = queue.Queue()
        self._all_slots = [_Slot(engine, i if dynamic else None, self._router, cuda_graph) for i in range(contexts)]
        for slot in self._all_slots:
            self._slots.put(slot)
        self.engine_path = engine_path

    @classmethod
    def from_engine_dir(cls, engine_dir: Path, manifest: Mapping[str, Any], device: Mapping[str, Any],
                        **options: Any) -> "TensorRTRunner":
        """Check the manifest against this TensorRT and GPU first: refuse with how to rebuild."""
        import tensorrt as trt

        compat.check_engine_compatible(manifest, trt.__version__, device)
        record = manifest.get("tensorrt") or {}
        engine_file = (manifest.get("engine") or {}).get("file") or ENGINE_FILE
        options.setdefault("version_compatible", bool(record.get("version_compatible")))
        return cls(Path(engine_dir) / engine_file, **options)

    @property
    def device_memory_bytes(self) -> int:
        return int(self._engine.device_memory_size_v2) * len(self._all_slots)

    def _split_feed(self, feed: Mapping[str, Any], slot: _Slot) -> tuple[dict[str, np.ndarray], dict[str, DeviceView]]:
        if not isinstance(feed, Mapping):
            validate_feed(feed, self._inputs)  # raises the shared not-a-dict message
        views = {}
        for name, value in feed.items():
            view = device_view(value, slot.stream.ptr, f"input {name!r}")
            if view is not None:
                views[name] = view
        host_feed = {k: v for k, v in feed.items() if k not in views}
        by_name = {info.name: info for info in self._inputs}
        host_infos = [info for info in self._inputs if info.name not in views]
        for name, view in views.items():
            if name not in by_name:
                validate_feed(feed, self._inputs)  # raises the shared unknown-input message
            check_tensor(by_name[name], view.dtype, view.shape)
        return validate_feed(host_feed, host_infos), views

    def _run(self, feed: Mapping[str, Any], out: Mapping[str, Any] | None, to_device: bool) -> dict[str, Any]:
        if not self._all_slots:
            raise closed_runner(self.backend)
        slot = self._slots.get()
        try:
            host, dev = self._split_feed(feed, slot)
            out_views = None
            if out:
                out_views = {}
                for name, value in out.items():
                    view = device_view(value, slot.stream.ptr, f"output {name!r}")
                    if view is None:
                        raise UsageError(f"output {name!r}: `out` arrays must be CUDA device arrays")
                    out_views[name] = view
            results = slot.run(self._inputs, host, dev, self._outputs, out_views, to_device)
            results.update({name: out[name] for name in out_views or {}})
            return results
        finally:
            self._slots.put(slot)

    def infer(self, feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """numpy (or device arrays) in, numpy out."""
        return self._run(feed, None, to_device=False)

    def infer_device(self, feed: Mapping[str, Any], out: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Outputs stay on the GPU: DeviceArrays (``__cuda_array_interface__``), or written into the
        caller's device arrays given in `out` (returned as given)."""
        return self._run(feed, out, to_device=True)

    def close(self) -> None:
        slots, self._all_slots = self._all_slots, []
        for slot in slots:
            slot.close()
        self._engine = None
        self._runtime = None
