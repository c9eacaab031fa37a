"""Where the calibration forward pass runs: ONNX Runtime's CUDA (or TensorRT) provider, or the CPU.

The forward pass is most of calibration's cost, so on a machine with a CUDA device and the
``onnxruntime-gpu`` package, ``auto`` runs it on ONNX Runtime's CUDA execution provider. ``auto``
never picks the TensorRT provider: it would build a TensorRT engine for a graph with every
target tensor marked as an output (slow to build, and fusion-breaking), to be run once; ask for it
with ``tensorrt``. Histograms are always counted on the host from the copied-back activations.
:func:`calibration_providers` is the pure decision (CPU-tested); :func:`select_providers` asks
ONNX Runtime and the CUDA driver what this machine has.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trtopt.errors import UsageError

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
_WANTED = {"cuda": CUDA, "tensorrt": TENSORRT}


@dataclass(frozen=True)
class ProviderChoice:
    """Providers for the InferenceSession in priority order, and one line saying why."""

    providers: tuple[str, ...]
    reason: str


def calibration_providers(device: str, available: Sequence[str], cuda_devices: int,
                          no_device_reason: str = "no CUDA device") -> ProviderChoice:
    """Pick the providers for ``device`` given ONNX Runtime's providers and the CUDA device count.

    An explicit ``cuda``/``tensorrt`` that cannot run here is a usage error; ``auto`` falls back
    to the CPU and says why.
    """
    if device not in DEVICES:
        raise UsageError(f"--calib-device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu":
        return ProviderChoice((CPU,), "CPU requested")
    wanted = _WANTED.get(device, CUDA)
    if wanted not in available:
        why = f"onnxruntime has no {wanted} (available: {', '.join(available)}; it comes with onnxruntime-gpu)"
    elif cuda_devices < 1:
        why = f"{wanted} is installed but {no_device_reason}"
    else:
        chain = (wanted, CUDA, CPU) if wanted == TENSORRT else (wanted, CPU)
        return ProviderChoice(chain, f"{wanted} on {cuda_devices} CUDA device(s)")
    if device == "auto":
        return ProviderChoice((CPU,), f"CPU: {why}")
    raise UsageError(f"--calib-device {device}: {why}")


def select_providers(device: str = "auto") -> ProviderChoice:
    """:func:`calibration_providers` for this machine; the CUDA driver is probed only when needed."""
    import onnxruntime as ort

    available = list(ort.get_available_providers())
    if device == "cpu" or not {CUDA, TENSORRT} & set(available):
        return calibration_providers(device, available, 0)
    from trtopt.cuda.device import probe_devices

    count, why = probe_devices()
    return calibration_providers(device, available, count, why or "no CUDA device")
