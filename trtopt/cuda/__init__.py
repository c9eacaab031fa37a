"""The CUDA layer: checked cuda-python calls, device/pinned buffers, streams, events, CUDA graphs.

Built on cuda-python alone (NVIDIA's TensorRT samples moved from pycuda to it), so the memory and
stream code is usable and testable without TensorRT. Nothing here is imported by ``import trtopt``;
the submodules import cuda-python lazily through :func:`trtopt.cuda.api.cudart`.

* ``api``: import of the runtime bindings and ``check()``, which turns every error code into CudaError
* ``device``: device count/name/compute capability probe (also used by backend selection)
* ``memory``: DeviceBuffer, PinnedBuffer, BufferPool (reused, grown on demand)
* ``stream``: Stream and Event
* ``interop``: device arrays in and out (``__cuda_array_interface__`` v3, DLPack)
* ``graph``: CUDA graph capture and replay, and the rule for when a graph may be replayed
* ``stack``: whether cuda-python, the TensorRT wheel and the driver agree on the CUDA major

Nothing here has run on a GPU yet: the calls follow cuda-python's documented API and were
reviewed, the pure rules are CPU-tested (docs/TENSORRT.md, "Verification status").
"""
