"""CPU tests for matching cuda-python, the TensorRT wheel and the driver by CUDA major version."""
from __future__ import annotations

from trtopt.cuda.stack import CudaStack, detect_stack, driver_cuda_text, stack_problems, tensorrt_cuda_majors


def test_tensorrt_wheel_names_give_the_cuda_major() -> None:
    names = ["tensorrt", "tensorrt-cu12", "tensorrt_cu12_libs", "tensorrt-cu12-bindings", "numpy", "tensorrt-lean-cu12"]
    assert tensorrt_cuda_majors(names) == {12}
    assert tensorrt_cuda_majors(["tensorrt_cu13_bindings", "tensorrt-dispatch-cu13"]) == {13}
    assert tensorrt_cuda_majors(["tensorrt", "cuda-python"]) == set()  # tarball/Debian TensorRT: unknown


def test_matching_stack_has_no_problems() -> None:
    assert stack_problems(CudaStack("12.9.0", frozenset({12}), 12080)) == []
    assert stack_problems(CudaStack("13.4.4", frozenset({13}), 13000)) == []
    assert stack_problems(CudaStack("12.6.2", frozenset(), None)) == []  # too little known to object


def test_cuda_python_13_with_a_cu12_wheel_on_a_cuda_12_driver() -> None:
    problems = stack_problems(CudaStack("13.0.1", frozenset({12}), 12040))
    assert len(problems) == 2
    assert "cuda-python 13.0.1 is for CUDA 13 but the TensorRT wheel is tensorrt-cu12" in problems[0]
    assert "pip install 'cuda-python==12.*'" in problems[0] and "trtopt[tensorrt-cu12]" in problems[0]
    assert "needs a CUDA 13 driver and this driver supports CUDA 12.4" in problems[1]


def test_other_problems() -> None:
    assert "cuda-python is not installed" in stack_problems(CudaStack(None, frozenset({12}), 12040))[0]
    assert "several CUDA majors" in stack_problems(CudaStack("12.9.0", frozenset({12, 13}), 13000))[0]
    assert driver_cuda_text(12040) == "12.4" and driver_cuda_text(13000) == "13.0"


def test_detection_here_reads_the_installed_packages() -> None:
    stack = detect_stack()
    from importlib.metadata import version

    assert stack.cuda_python == version("cuda-bindings")  # the dev extra installs cuda-python
    assert stack.driver_cuda_version is None or stack.driver_cuda_version >= 10000  # None without a driver
