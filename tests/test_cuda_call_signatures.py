"""The argument kinds trtopt passes to cuda-python are accepted by the installed bindings.

Without a GPU every call answers with a CUDA error code, which is enough: a wrong argument count or
type raises TypeError before CUDA is reached. This settles on the CPU that integer device pointers
and integer stream handles (the array interface's 1 = legacy default stream, a producer's stream)
marshal, for every call the CUDA layer makes.
"""
from __future__ import annotations

import pytest

runtime = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python not installed (it is in the dev extra)")

LEGACY = 1  # what trtopt.cuda.interop hands to Stream.wait_for_stream for a streamless interface
POINTER = 0x7F0000000100  # never dereferenced: sizes are 0 and frees get null


@pytest.fixture(scope="module", autouse=True)
def _no_gpu() -> None:
    from trtopt.cuda.device import probe_devices

    if probe_devices()[0]:
        pytest.skip("a GPU is present: tests/test_cuda_gpu.py makes these calls for real")


def _calls() -> dict[str, tuple]:
    rt = runtime
    return {
        "cudaStreamCreateWithFlags": (rt.cudaStreamNonBlocking,),
        "cudaStreamSynchronize": (rt.cudaStream_t(),),
        "cudaStreamDestroy": (rt.cudaStream_t(),),
        "cudaEventCreateWithFlags": (rt.cudaEventDisableTiming,),
        "cudaEventRecord": (rt.cudaEvent_t(), LEGACY),
        "cudaStreamWaitEvent": (rt.cudaStream_t(), rt.cudaEvent_t(), 0),
        "cudaEventSynchronize": (rt.cudaEvent_t(),),
        "cudaEventDestroy": (rt.cudaEvent_t(),),
        "cudaMalloc": (256,),
        "cudaMallocHost": (256,),
        "cudaFree": (0,),
        "cudaFreeHost": (0,),
        "cudaMemcpyAsync": (POINTER, POINTER + 256, 0, rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, rt.cudaStream_t()),
        "cudaMemsetAsync": (POINTER, 0, 0, rt.cudaStream_t()),
        "cudaStreamBeginCapture": (rt.cudaStream_t(), rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
        "cudaStreamEndCapture": (rt.cudaStream_t(),),
        "cudaGraphInstantiate": (rt.cudaGraph_t(), 0),
        "cudaGraphLaunch": (rt.cudaGraphExec_t(), rt.cudaStream_t()),
        "cudaGraphExecDestroy": (rt.cudaGraphExec_t(),),
        "cudaGraphDestroy": (rt.cudaGraph_t(),),
        "cudaGetLastError": (),
        "cudaGetDeviceCount": (),
        "cudaGetDeviceProperties": (0,),
    }


@pytest.mark.parametrize("name", sorted(_calls()))
def test_arguments_marshal(name: str) -> None:
    result = getattr(runtime, name)(*_calls()[name])
    result = result if isinstance(result, tuple) else (result,)
    assert isinstance(result[0], runtime.cudaError_t), f"{name} answered {result!r}"
