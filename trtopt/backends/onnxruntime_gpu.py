"""ONNX Runtime's CUDA and TensorRT execution providers as backends "onnxruntime-cuda" and
"onnxruntime-tensorrt" (needs the ``onnxruntime-gpu`` package).

Useful where a GPU exists but TensorRT is not installed as a Python package: the same FP32, FP16
or Q/DQ ONNX runs on the GPU through ONNX Runtime. The "build" keeps the source ONNX unchanged
(GPU providers optimize at session creation; an offline-optimized CPU graph may contain CPU-only
fused ops) plus the provider settings; the runner is the ONNX Runtime runner with these providers.
The TensorRT provider caches its engines and timing cache in the engine folder, so the second
load does not rebuild. It is also given the build's optimization profile
(``trt_profile_min_shapes`` / ``_opt_`` / ``_max_``, ONNX Runtime's TensorRT EP options since
onnxruntime PR 15546, for every dynamic input, in trtexec's ``name:1x3x16x16`` spelling): without
them it builds for the shapes it first sees and rebuilds whenever a call falls outside them, at
run time. They are stored in ``session.json`` and passed on every load, as the EP compares them
with its cached engine's profile to decide whether to rebuild. For Q/DQ INT8 models it gets
``trt_int8_enable``: ONNX Runtime's TensorRT EP builds weakly typed networks, where TensorRT 10
refuses INT8 Q/DQ layers unless the builder's INT8 flag is set ("int8 is not configured in the
builder", onnxruntime issue 13381); with Q/DQ nodes present the EP uses their scales and needs no
calibration table (onnxruntime PR 8969).

None of this has run on a GPU yet: it follows ONNX Runtime's documented provider options and was
reviewed; the option spelling is CPU-tested (docs/TENSORRT.md, "Verification status").
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import onnxruntime as ort

from trtopt.backends.base import Runner
from trtopt.backends.onnxruntime import OnnxRuntimeRunner
from trtopt.backends.registry import BuildOptions, BuiltEngine, exact_match_problems
from trtopt.errors import TrtoptError, UsageError
from trtopt.fileio import atomic_write, atomic_write_json, read_json
from trtopt.ortsession import make_session_options

ENGINE_FILE = "model.onnx"
SESSION_FILE = "session.json"
TRT_EP_CACHE = "trt-ep-cache"


def _shape_list(shapes: Mapping[str, Sequence[int]]) -> str:
    """``input:1x3x16x16,mask:1x16``: the TensorRT EP's shape-list spelling."""
    for name in shapes:
        if any(ch in name for ch in ",:"):
            raise UsageError(f"input {name!r}: the onnxruntime-tensorrt backend cannot pass a profile for a name "
                             "containing ',' or ':' (ONNX Runtime's shape-list format); rename the input")
    return ",".join(f"{name}:{'x'.join(str(int(d)) for d in shape)}" for name, shape in sorted(shapes.items()))


def tensorrt_ep_options(options: BuildOptions) -> dict[str, Any]:
    """The TensorRT execution provider's options for a build (see the module doc for why)."""
    settings: dict[str, Any] = {}
    if options.engine.workspace_bytes:
        settings["trt_max_workspace_size"] = int(options.engine.workspace_bytes)
    profile = options.profile
    if profile.min or profile.opt or profile.max:
        if not (set(profile.min) == set(profile.opt) == set(profile.max)):
            raise UsageError("the optimization profile must give min, opt and max shapes for the same inputs, got "
                             f"min {sorted(profile.min)}, opt {sorted(profile.opt)}, max {sorted(profile.max)}")
        settings.update({"trt_profile_min_shapes": _shape_list(profile.min),
                         "trt_profile_opt_shapes": _shape_list(profile.opt),
                         "trt_profile_max_shapes": _shape_list(profile.max)})
    if options.precision == "int8":
        settings["trt_int8_enable"] = True
    return settings


def provider_list(provider: str, options: dict[str, Any], engine_dir: Path) -> list[Any]:
    """Providers for InferenceSession in priority order; the TensorRT EP gets its cache folder
    (inside the engine folder, known only once the folder is in place) and falls back to CUDA."""
    chain: list[Any] = []
    if provider == "TensorrtExecutionProvider":
        cache = os.fspath(Path(engine_dir) / TRT_EP_CACHE)
        chain.append((provider, {**options, "trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
                                 "trt_timing_cache_enable": True, "trt_timing_cache_path": cache}))
    chain.append(("CUDAExecutionProvider", {} if provider == "TensorrtExecutionProvider" else dict(options)))
    return chain


class OnnxRuntimeGpuBackend:
    """One ONNX Runtime GPU execution provider behind the Backend protocol."""

    def __init__(self, name: str, provider: str) -> None:
        self.name = name
        self.provider = provider
        self.title = f"ONNX Runtime {provider}"
        self.default_encoding = "onnxruntime-cpu"
        self.float_precision = "fp16"  # CUDA and TensorRT execution providers run FP16 kernels
        # threads are recorded in session.json; the TensorRT EP also takes the workspace limit
        self.engine_fields: tuple[str, ...] = (
            ("threads", "workspace_bytes") if provider == "TensorrtExecutionProvider" else ("threads",)
        )

    def availability(self) -> tuple[bool, str]:
        available = ort.get_available_providers()
        if self.provider not in available:
            return False, (f"onnxruntime {ort.__version__} has no {self.provider} (install onnxruntime-gpu instead of "
                           f"onnxruntime; available: {', '.join(available)})")
        from trtopt.cuda.device import probe_devices

        count, why = probe_devices()
        if not count:
            return False, f"{self.provider} is installed but {why}"
        return True, f"onnxruntime {ort.__version__} {self.provider} on {count} CUDA device(s)"

    def version(self) -> str:
        return str(ort.__version__)

    def device(self) -> dict[str, Any]:
        from trtopt.cuda.device import device_info

        return device_info(0).to_json()

    def compatibility_problems(self, manifest: dict[str, Any]) -> list[str]:
        return exact_match_problems(manifest, self.version(), self.device())

    def check_options(self, options: BuildOptions) -> None:
        """The profile's shape lists must be expressible in the TensorRT EP's option format."""
        if self.provider == "TensorrtExecutionProvider":
            tensorrt_ep_options(options)

    def build(self, onnx_path: Path, staging_dir: Path, options: BuildOptions) -> BuiltEngine:
        usable, why = self.availability()
        if not usable:
            raise TrtoptError(f"the {self.name} backend cannot run here: {why}")
        source = Path(onnx_path)
        if not source.is_file():
            raise UsageError(f"ONNX model not found: {source}")
        staging = Path(staging_dir)
        with open(source, "rb") as handle:
            atomic_write(staging / ENGINE_FILE, lambda out: shutil.copyfileobj(handle, out))
        provider_options = tensorrt_ep_options(options) if self.provider == "TensorrtExecutionProvider" else {}
        session = {"provider": self.provider, "provider_options": provider_options, "threads": options.engine.threads}
        atomic_write_json(staging / SESSION_FILE, session)
        # the TensorRT EP builds its engine on first load; build here once so the folder holds it
        runner = self._runner(staging, session)
        runner.close()
        return BuiltEngine(engine_file=ENGINE_FILE, manifest_fields={"onnxruntime_gpu": session})

    def _runner(self, folder: Path, session: dict[str, Any]) -> OnnxRuntimeRunner:
        runner = OnnxRuntimeRunner(
            folder / ENGINE_FILE,
            session_options=make_session_options(session.get("threads")),
            providers=provider_list(session["provider"], session.get("provider_options") or {}, folder),
        )
        if runner.providers[0] != session["provider"]:
            raise TrtoptError(f"ONNX Runtime did not enable {session['provider']} (active: {runner.providers}); "
                              "check the CUDA/cuDNN/TensorRT libraries onnxruntime-gpu needs")
        return runner

    def load(self, engine_dir: Path, manifest: dict[str, Any], **runner_options: Any) -> Runner:
        if runner_options:
            raise UsageError(f"the {self.name} backend takes no runner options, got {sorted(runner_options)}")
        folder = Path(engine_dir)
        return self._runner(folder, read_json(folder / SESSION_FILE, "ONNX Runtime session options"))


CUDA_BACKEND = OnnxRuntimeGpuBackend("onnxruntime-cuda", "CUDAExecutionProvider")
TENSORRT_EP_BACKEND = OnnxRuntimeGpuBackend("onnxruntime-tensorrt", "TensorrtExecutionProvider")
