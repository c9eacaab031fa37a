"""Run a TensorRT engine: numpy or device arrays in, numpy or device arrays out.

Thread-safety: a TensorRT execution context is not thread-safe, so the runner owns a small pool of
*slots* (execution context + stream + buffers + captured graphs) and every ``infer()`` takes one
for the duration of the call. One runner may therefore be shared by threads: up to ``contexts``
calls run concurrently, further callers wait. With dynamic shapes each context needs its own
optimization profile, so the number of contexts is capped by the profiles the engine was built
with (``--contexts``, EngineSettings.contexts; load() opens that many by default).

Per call: input shapes are checked against the engine's profile (UsageError naming the tensor
outside it), numpy inputs are staged in pinned memory and copied asynchronously, device inputs
(``__cuda_array_interface__`` / DLPack) are used in place after the slot's stream is ordered after
their producer (rules in :mod:`trtopt.cuda.interop`; ``out`` arrays likewise), TensorRT runs on the
slot's stream, and outputs come back as numpy (default) or as DeviceArrays (``infer_device``). The
stream is synchronized before a call returns, so outputs are complete for every stream. Buffers
are reused and grown when a larger shape arrives.

A caller address TensorRT cannot take as is (not 256-byte aligned, see
:data:`trtopt.cuda.memory.IO_ALIGNMENT`) is copied through the slot's own buffer instead; so is
every caller address with ``cuda_graph=True``, which keeps the graph keys (shapes, own addresses)
stable across calls. Graph capture and replay follow :class:`trtopt.cuda.graph.GraphCache`.

A runner dropped without ``close()`` releases its contexts, streams, buffers and graphs when it is
garbage-collected (``weakref.finalize``).

None of this has run on a GPU yet: it follows TensorRT's documented 10.x/11.x runtime API and was
reviewed; the pure rules it uses (alignment, graph steps, shape-tensor refusal) are CPU-tested.
"""
from __future__ import annotations

import logging
import queue
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trtopt.backends.base import Runner
from trtopt.backends.tensorrt import compat
from trtopt.backends.tensorrt.builder import ENGINE_FILE
from trtopt.backends.tensorrt.dtypes import numpy_dtype
from trtopt.backends.tensorrt.logger import LogRouter, make_trt_logger
from trtopt.backends.tensorrt.runtime import deserialize
from trtopt.cuda.graph import GraphCache, GraphKey, run_graphed
from trtopt.cuda.interop import DeviceArray, DeviceView, device_view, resolve_raw_dtype
from trtopt.cuda.memory import (
    BufferPool,
    DeviceBuffer,
    PinnedBuffer,
    copy_dtod_async,
    copy_dtoh_async,
    copy_htod_async,
    is_aligned,
)
from trtopt.cuda.stream import Stream
from trtopt.errors import TrtoptError, UsageError
from trtopt.tensors import TensorInfo, check_tensor, validate_feed

log = logging.getLogger("trtopt.tensorrt")

_MAX_GRAPHS = 16


def _nbytes(shape: tuple[int, ...], dtype: np.dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def needs_own_buffer(ptr: int, cuda_graph: bool) -> bool:
    """Whether a caller's device address goes through the slot's own buffer: when TensorRT cannot
    bind it (misaligned), or when graphs are on (a graph bakes in addresses; own buffers keep them
    fixed, so one graph serves every caller array of the same shapes)."""
    return cuda_graph or not is_aligned(ptr)


def shape_tensor_refusal(engine_path: Path, names: Sequence[str]) -> str | None:
    """The error for engines with shape-tensor inputs (host-side values that set shapes, which
    trtopt's device-array feed cannot provide), or None when there are none."""
    if not names:
        return None
    return (f"{engine_path}: input(s) {list(names)} are shape tensors (their values, set on the host, decide "
            "shapes); trtopt's TensorRT runner feeds execution tensors only. Export the model with those "
            "values folded into the graph as constants")


@dataclass
class _PostCopy:
    """A copy queued after the enqueue: an output into the caller's array or the host staging buffer."""

    name: str
    dst: int | None  # None: to the slot's pinned host buffer (numpy results)
    src: int
    nbytes: int


class _Slot:
    """One execution context with its own stream, buffers and graphs (used by one thread at a time)."""

    def __init__(self, engine: Any, profile: int | None, router: LogRouter, cuda_graph: bool) -> None:
        self.router = router
        self.context = engine.create_execution_context()
        if self.context is None:
            raise TrtoptError(router.explain("TensorRT could not create an execution context (out of device memory?)"))
        self.stream = Stream()
        self.device = BufferPool(DeviceBuffer)
        self.pinned = BufferPool(PinnedBuffer)
        self.graphs: GraphCache | None = GraphCache(_MAX_GRAPHS) if cuda_graph else None
        if profile is not None:
            if not self.context.set_optimization_profile_async(profile, self.stream.ptr):
                self.close()
                raise TrtoptError(router.explain(f"TensorRT refused optimization profile {profile} for a new execution "
                                                 "context (each concurrent context needs a profile of its own)"))
            self.stream.synchronize()

    def _bind(self, name: str, ptr: int) -> None:
        """set_tensor_address returns False when TensorRT refuses the address (the previous one
        would stay bound): never run with it."""
        if not self.context.set_tensor_address(name, ptr):
            raise TrtoptError(self.router.explain(f"TensorRT refused device address {ptr:#x} for tensor {name!r}"))

    def _order_after(self, view: DeviceView) -> None:
        if view.wait_stream is not None:
            self.stream.wait_for_stream(view.wait_stream)

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.stream.ptr):
            raise TrtoptError(self.router.explain("TensorRT execution failed"))

    def _execute(self, key: GraphKey) -> None:
        if self.graphs is None:
            self._enqueue()
            return
        failure = run_graphed(self.graphs, key, self.stream, self._enqueue)
        if failure is not None:
            log.warning("CUDA graph capture failed, running without graphs from now on: %s", failure)
            self.graphs.clear()
            self.graphs = None

    def _bind_input(
        self, info: TensorInfo, host: np.ndarray | None, view: DeviceView | None
    ) -> tuple[tuple[int, ...], int]:
        shape = tuple(host.shape) if host is not None else view.shape
        if not self.context.set_input_shape(info.name, shape):
            raise UsageError(self.router.explain(f"input {info.name!r}: TensorRT rejected shape {list(shape)}"))
        nbytes = _nbytes(shape, info.dtype)
        if host is not None:
            staging = self.pinned.get(info.name, nbytes)
            np.copyto(staging.view(shape, info.dtype), host)
            ptr = self.device.get(info.name, nbytes).ptr
            copy_htod_async(ptr, staging.ptr, nbytes, self.stream.handle)
        else:
            self._order_after(view)
            ptr = view.ptr
            if needs_own_buffer(ptr, self.graphs is not None):
                ptr = self.device.get(info.name, nbytes).ptr
                copy_dtod_async(ptr, view.ptr, nbytes, self.stream.handle)
        self._bind(info.name, ptr)
        return shape, ptr

    def _bind_output(self, info: TensorInfo, out: DeviceView | None, to_device: bool,
                     results: dict[str, Any], copies: list[_PostCopy]) -> int:
        shape = tuple(self.context.get_tensor_shape(info.name))
        if any(d < 0 for d in shape):
            raise TrtoptError(
                f"output {info.name!r} has a data-dependent shape {list(shape)}; trtopt's runner does not support "
                "those yet"
            )
        nbytes = _nbytes(shape, info.dtype)
        graphs_on = self.graphs is not None
        if out is not None:
            dtype = resolve_raw_dtype(out.dtype, info.dtype)
            if out.shape != shape or dtype != info.dtype:
                raise UsageError(
                    f"output {info.name!r}: the array given holds {dtype}{list(out.shape)}, the engine produces "
                    f"{np.dtype(info.dtype).name}{list(shape)}"
                )
            self._order_after(out)  # the caller's array may still be in use by its producer
            destination: int | None = out.ptr
            staged = needs_own_buffer(out.ptr, graphs_on)
        elif to_device:
            array = DeviceArray(shape, info.dtype)
            results[info.name] = array
            destination, staged = array.ptr, graphs_on
        else:
            destination, staged = None, True  # numpy out: through the own buffer to pinned memory
        ptr = self.device.get(info.name, nbytes).ptr if staged else destination
        if staged:
            copies.append(_PostCopy(info.name, destination, ptr, nbytes))
        self._bind(info.name, ptr)
        return ptr

    def run(self, inputs: list[TensorInfo], host: Mapping[str, np.ndarray], dev: Mapping[str, DeviceView],
            outputs: list[TensorInfo], out: Mapping[str, DeviceView] | None, to_device: bool) -> dict[str, Any]:
        out = out or {}
        shapes: list[tuple[int, ...]] = []
        addresses: list[int] = []
        for info in inputs:
            shape, ptr = self._bind_input(info, host.get(info.name), dev.get(info.name))
            shapes.append(shape)
            addresses.append(ptr)
        results: dict[str, Any] = {}
        copies: list[_PostCopy] = []
        for info in outputs:
            addresses.append(self._bind_output(info, out.get(info.name), to_device, results, copies))

        self._execute(GraphKey(tuple(shapes), tuple(addresses)))
        for copy in copies:
            if copy.dst is None:
                copy_dtoh_async(self.pinned.get(copy.name, copy.nbytes).ptr, copy.src, copy.nbytes, self.stream.handle)
            else:
                copy_dtod_async(copy.dst, copy.src, copy.nbytes, self.stream.handle)
        self.stream.synchronize()
        for info in outputs:
            if info.name not in results and info.name not in out:
                shape = tuple(self.context.get_tensor_shape(info.name))
                results[info.name] = np.array(
                    self.pinned.get(info.name, _nbytes(shape, info.dtype)).view(shape, info.dtype)
                )
        return results

    def close(self) -> None:
        if self.graphs is not None:
            self.graphs.clear()
        self.device.close()
        self.pinned.close()
        self.context = None  # destroyed before the engine (the runner's finalizer holds the engine until after)
        self.stream.close()


def _release(slots: list[_Slot], engine: Any, runtime: Any) -> None:
    """Close every slot, then let the engine and runtime go (in that order: contexts first)."""
    while slots:
        slots.pop().close()
    del engine, runtime


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
        self._version = str(trt.__version__)
        self._runtime, self._engine = deserialize(trt, self._logger, engine_path.read_bytes(), version_compatible)
        if self._engine is None:
            raise TrtoptError(self._router.explain(
                f"TensorRT {trt.__version__} cannot deserialize {engine_path}; it was probably built with another "
                "TensorRT version or for another GPU: rebuild it here with `trtopt build ... --backend tensorrt`"))
        engine = self._engine
        self._inputs: list[TensorInfo] = []
        self._outputs: list[TensorInfo] = []
        shape_tensors: list[str] = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            if is_input and engine.is_shape_inference_io(name):
                shape_tensors.append(name)
                continue
            dtype = numpy_dtype(engine.get_tensor_dtype(name).name, name)
            shape = tuple(None if d < 0 else int(d) for d in engine.get_tensor_shape(name))
            if is_input:
                bounds = None
                if any(d is None for d in shape):
                    low, _opt, high = engine.get_tensor_profile_shape(name, 0)
                    bounds = tuple((int(lo), int(hi)) if d is None else None for d, lo, hi in zip(shape, low, high))
                self._inputs.append(TensorInfo(name, dtype, shape, bounds))
            else:
                self._outputs.append(TensorInfo(name, dtype, shape))
        refusal = shape_tensor_refusal(engine_path, shape_tensors)
        if refusal:
            raise UsageError(refusal)
        dynamic = any(not info.is_static for info in self._inputs)
        if dynamic and contexts > engine.num_optimization_profiles:
            log.warning("%d contexts requested but the engine has %d optimization profile(s); using %d "
                        "(build with more profiles for more concurrency)", contexts,
                        engine.num_optimization_profiles, engine.num_optimization_profiles)
            contexts = engine.num_optimization_profiles
        self._all_slots: list[_Slot] = []
        # released on close() or, for a runner dropped without it, when it is garbage-collected
        self._finalizer = weakref.finalize(self, _release, self._all_slots, self._engine, self._runtime)
        self._finalizer.atexit = False  # at interpreter exit the CUDA context goes away with the process
        try:
            for i in range(contexts):
                self._all_slots.append(_Slot(engine, i if dynamic else None, self._router, cuda_graph))
        except BaseException:
            self._finalizer()
            raise
        self._slots: queue.Queue[_Slot] = queue.Queue()
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
        return compat.pool_device_memory_bytes(self._engine, self._version, len(self._all_slots))

    def _split_feed(self, feed: Mapping[str, Any], slot: _Slot) -> tuple[dict[str, np.ndarray], dict[str, DeviceView]]:
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
            view.dtype = resolve_raw_dtype(view.dtype, by_name[name].dtype)
            check_tensor(by_name[name], view.dtype, view.shape)
        return validate_feed(host_feed, host_infos), views

    def _run(self, feed: Mapping[str, Any], out: Mapping[str, Any] | None, to_device: bool) -> dict[str, Any]:
        self._ensure_open()
        slot = self._slots.get()
        try:
            host, dev = self._split_feed(feed, slot)
            out_views = None
            if out:
                unknown = sorted(set(out) - {info.name for info in self._outputs})
                if unknown:
                    raise UsageError(f"`out` names unknown output(s) {unknown}; the engine's outputs are "
                                     f"{[info.name for info in self._outputs]}")
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

    @property
    def closed(self) -> bool:
        return not self._all_slots

    def _checked_feed(self, feed: Mapping[str, Any]) -> Mapping[str, Any]:
        """Passed through: device arrays are read on the stream of the context that runs them, so the
        feed is checked (host and device arrays alike) in ``_split_feed`` once a context is taken."""
        if not isinstance(feed, Mapping):
            validate_feed(feed, self._inputs)  # raises the shared not-a-dict message
        return feed

    def _infer(self, feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """numpy (or device arrays) in, numpy out."""
        return self._run(feed, None, to_device=False)

    def infer_device(self, feed: Mapping[str, Any], out: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Outputs stay on the GPU: DeviceArrays (``__cuda_array_interface__``), or written into the
        caller's device arrays given in `out` (returned as given)."""
        return self._run(feed, out, to_device=True)

    def close(self) -> None:
        """Release contexts, streams, buffers and graphs (idempotent; must not race with running calls)."""
        self._finalizer()
        self._engine = None
        self._runtime = None
