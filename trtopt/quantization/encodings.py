"""How one calibration (an amax per tensor) is written as Q/DQ parameters for a target runtime.

The scale table is target-neutral; the target decides the integer types:

* ``tensorrt``: TensorRT's explicit quantization is symmetric INT8 only. Activations and weights
  are int8 with all-zero zero points, scale = amax / 127. Biases stay float (TensorRT fuses them
  in its own precision). Q/DQ sits on inputs only (see placement.py).
* ``onnxruntime-cpu``: ONNX Runtime's x86 integer kernels are fast for uint8 activations times
  int8 weights (U8S8); symmetric int8 activations fall back to slower paths on AVX2 machines,
  slower than FP32. Activations are therefore uint8: a tensor known to be non-negative (after
  Relu / ReLU6) uses zero point 0 and scale amax / 255 (twice the resolution of int8). Any other
  tensor spends the 256 levels on the range calibration saw, ``[max(min, -amax), min(max, amax)]``
  widened to hold 0 (which stays exact): ONNX Runtime takes any uint8 zero point, and signed
  activations are often lopsided (a hardswish output lies in [-0.375, amax], many pre-activations
  lean one way), where a symmetric [-amax, amax] wastes up to half the levels. Measured on the
  PP-OCR detector (120 rendered pages apart from the benchmark's, ``auto`` scales, 8-bit weights):
  output SNR vs FP32 11.5 -> 12.8 dB, mask agreement 0.917 -> 0.936; recognizer (300 lines):
  lines decoded as FP32 decodes them 0.82 -> 0.86. Without a recorded range (a plain amax mapping,
  or a tensor that only inherits a neighbour's amax) zero point 128 and scale amax / 127 stay.
  TensorRT has no zero points: the ``tensorrt`` encoding stays symmetric. Weights stay
  int8 symmetric per channel but limited to 7 bits ([-63, 63]): the AVX2 U8S8 kernels add pairs
  of u8 x s8 products in int16 (``vpmaddubsw``), which saturates for full-range weights
  (255 x 127 x 2 > 32767) and was measured here to turn a 0.05 max error into 1.2 on a small
  ResNet. Biases become int32 with scale = input scale x weight scale, and outputs of weighted
  ops are quantized too, because ONNX Runtime only fuses complete "DQ -> op -> Q" node units into
  QLinearConv / QGemm / QLinearAdd.
* ``onnxruntime-vnni``: ``onnxruntime-cpu`` with full 8-bit weights ([-127, 127]), for CPUs whose
  int8 dot-product instructions (AVX512-VNNI, AVX-VNNI, AMX) accumulate u8 x s8 products in int32
  directly, so nothing saturates (checked on such a host: a u8 x s8 MatMul with every product at
  255 x 127 comes out exact). The 7-bit limit halves weight resolution for nothing there: on the
  PP-OCR detector and recognizer it cost about 1 and 7 points of FP32's task metric
  (``scripts/int8_accuracy_benchmark.py``). :func:`host_cpu_encoding` picks between the two for the
  CPU a build runs on; an engine built for one CPU is refused on another (see the ONNX Runtime
  backend), while a file written by ``trtopt quantize`` keeps the portable ``onnxruntime-cpu``.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from trtopt.errors import UsageError
from trtopt.hostinfo import cpu_isa_flags

# amax below this is treated as an all-zero tensor; its scale is clamped so that Q never divides by 0
_MIN_AMAX = 1e-8


@dataclass(frozen=True)
class QuantParams:
    """Scale and zero point for one per-tensor activation Q/DQ pair."""

    scale: float
    zero_point: int
    dtype: type  # np.int8 or np.uint8


@dataclass(frozen=True)
class Encoding:
    """The integer types and the extra placement one target runtime needs."""

    name: str
    activation_dtype: type  # np.int8 | np.uint8
    quantize_bias: bool  # int32 bias through DequantizeLinear
    quantize_weighted_outputs: bool  # Q/DQ on outputs of Conv/Gemm/MatMul (complete ORT node units)
    weight_qmax: int  # largest |int8| weight: 127, or 63 where int16 accumulation would saturate
    description: str

    def activation_params(self, amax: float, non_negative: bool,
                          observed: tuple[float, float] | None = None) -> QuantParams:
        """Per-tensor Q/DQ parameters from a calibrated |x| maximum (and the observed [min, max])."""
        amax = max(float(amax), _MIN_AMAX)
        if self.activation_dtype is np.int8:
            return QuantParams(amax / 127.0, 0, np.int8)
        if non_negative:
            return QuantParams(amax / 255.0, 0, np.uint8)
        # the observed range clipped at the calibrated amax on each side, widened to hold 0 exactly
        low, high = (-amax, amax) if observed is None else (max(observed[0], -amax), min(observed[1], amax))
        low, high = min(low, 0.0), max(high, 0.0)
        if observed is None or high - low < _MIN_AMAX:
            return QuantParams(amax / 127.0, 128, np.uint8)
        scale = (high - low) / 255.0
        return QuantParams(scale, int(np.clip(np.rint(-low / scale), 0, 255)), np.uint8)


TENSORRT = Encoding(
    name="tensorrt", activation_dtype=np.int8, quantize_bias=False, quantize_weighted_outputs=False, weight_qmax=127,
    description="symmetric int8 activations and weights, zero points zero (TensorRT explicit quantization)",
)
ONNXRUNTIME_CPU = Encoding(
    name="onnxruntime-cpu",
    activation_dtype=np.uint8,
    quantize_bias=True,
    quantize_weighted_outputs=True,
    weight_qmax=63,
    description="uint8 activations with zero point, int8 per-channel weights (ONNX Runtime U8S8 CPU kernels)",
)
ONNXRUNTIME_VNNI = replace(
    ONNXRUNTIME_CPU,
    name="onnxruntime-vnni",
    weight_qmax=127,
    description="onnxruntime-cpu with full 8-bit weights (CPUs whose int8 dot products sum in int32: VNNI, AMX)",
)
ENCODINGS: dict[str, Encoding] = {e.name: e for e in (TENSORRT, ONNXRUNTIME_CPU, ONNXRUNTIME_VNNI)}
# x86 ISA flags (as /proc/cpuinfo spells them) whose u8 x s8 dot products accumulate in int32
INT32_DOT_PRODUCT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def host_cpu_encoding(isa_flags: Iterable[str] | None = None) -> str:
    """The ONNX Runtime CPU encoding for a host (this one by default): full 8-bit weights where safe.

    Only the x86 flags above are trusted; any other CPU keeps the 7-bit weights, which are exact
    on every ONNX Runtime kernel.
    """
    flags = set(cpu_isa_flags() if isa_flags is None else isa_flags)
    return ONNXRUNTIME_VNNI.name if flags & INT32_DOT_PRODUCT_FLAGS else ONNXRUNTIME_CPU.name


def get_encoding(name: str | Encoding) -> Encoding:
    if isinstance(name, Encoding):
        return name
    try:
        return ENCODINGS[name]
    except KeyError:
        raise UsageError(f"unknown Q/DQ encoding {name!r}; choose one of {sorted(ENCODINGS)}") from None


def quantize_weight(weight: np.ndarray, axis: int | None, qmax: int = 127,
                    min_amax: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights in [-qmax, qmax], per channel along `axis` (or per tensor when axis is None).

    Returns (int8 weights, float32 scales); scales are 1-D per channel or a 0-d scalar. Weights are
    calibrated from the data they hold (amax = max |w| per channel), no activation data needed;
    `min_amax` (per channel, or its maximum per tensor) raises amax where an int32 bias needs it.
    """
    w = np.asarray(weight, dtype=np.float32)
    if axis is None:
        amax = np.array(np.abs(w).max() if w.size else 0.0, dtype=np.float32)
    else:
        reduce_axes = tuple(i for i in range(w.ndim) if i != axis)
        amax = np.abs(w).max(axis=reduce_axes) if w.size else np.zeros(w.shape[axis], np.float32)
    if min_amax is not None:
        floor = np.asarray(min_amax, np.float32)
        amax = np.maximum(amax, floor.max() if axis is None or floor.shape != np.shape(amax) else floor)
    scale = (np.maximum(amax, _MIN_AMAX) / qmax).astype(np.float32)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -qmax, qmax).astype(np.int8)
    return q, scale


def quantize_bias(bias: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """int32 bias for integer kernels: bias / (input scale x weight scale), round half to even."""
    limit = np.iinfo(np.int32).max
    return np.clip(np.rint(np.asarray(bias, np.float64) / scale), -limit, limit).astype(np.int32)
