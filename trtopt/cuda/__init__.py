"""The CUDA layer: checked cuda-python calls, device/pinned buffers, streams, events, CUDA graphs.

Built on cuda-python alone (NVIDIA's TensorRT samples moved from pycuda to it), so the memory and
stream code is usable and testable without TensorRT. Nothing here is imported by ``import trtopt``;
the submodules import cuda-python lazily through :func:`trtopt.cuda.api.cudart`.

* ``api``: import of the runtime bindings and ``check()``, which turns every error code into CudaError
* ``device``: device count/name/compute capability probe (also used by backend selection)
* ``memory``: DeviceBuffer, PinnedBuffer, BufferPool (reused, grown on demand)
* ``stream``: Stream and Event
* ``interop``: device arrays in and out (``__cuda_array_interface__`` v3, DLPack)
* ``graph``: CUDA graph capture and replay
"""
