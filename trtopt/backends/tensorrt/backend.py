"""The TensorRT ``Backend`` object the registry hands to the build pipeline and the repository."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from trtopt.backends.base import Runner
from trtopt.backends.registry import BuildOptions, BuiltEngine
from trtopt.backends.tensorrt.availability import tensorrt_availability, tensorrt_status
from trtopt.errors import TrtoptError


class TensorRTBackend:
    """Builds with TensorRT's builder and runs with TensorRT's runtime through cuda-python."""

    name = "tensorrt"
    title = "TensorRT"
    default_encoding = "tensorrt"
    float_precision = "fp16"  # strongly typed: layers kept out of INT8 run in the ONNX's type, FP16 is written
    # the timing cache only speeds a build up and threads only concern CPU backends: neither changes the engine
    engine_fields = ("workspace_bytes", "opt_level", "tf32", "version_compatible", "hardware_compat", "contexts")

    def availability(self) -> tuple[bool, str]:
        """TensorRT importable, a GPU present, and cuda-python built for the TensorRT wheel's CUDA major."""
        from trtopt.cuda.stack import detect_stack, stack_problems

        usable, why = tensorrt_availability()
        if not usable:
            return False, why  # a failed device probe already explains a driver mismatch
        problems = stack_problems(detect_stack())
        if problems:
            return False, f"{why}, but " + "; ".join(problems)
        return True, why

    def _require(self) -> None:
        usable, why = self.availability()
        if not usable:
            raise TrtoptError(f"the tensorrt backend cannot run here: {why}")

    def version(self) -> str:
        version, why = tensorrt_status()
        if version is None:
            raise TrtoptError(f"the tensorrt backend cannot run here: {why}")
        return version

    def device(self) -> dict[str, Any]:
        from trtopt.cuda.device import device_info

        self._require()
        return device_info(0).to_json()

    def compatibility_problems(self, manifest: dict[str, Any]) -> list[str]:
        """TensorRT's own rules: version-compatible and hardware-compatible engines may move."""
        from trtopt.backends.tensorrt.compat import engine_incompatibilities

        return engine_incompatibilities(manifest, self.version(), self.device())

    def check_options(self, options: BuildOptions) -> None:
        from trtopt.backends.tensorrt.builder import check_options

        check_options(options)

    def build(self, onnx_path: Path, staging_dir: Path, options: BuildOptions) -> BuiltEngine:
        self._require()
        builder = importlib.import_module("trtopt.backends.tensorrt.builder")
        return builder.build_engine(Path(onnx_path), Path(staging_dir), options, self.device())

    def load(self, engine_dir: Path, manifest: dict[str, Any], **runner_options: Any) -> Runner:
        """Open the engine in `engine_dir`; `runner_options` go to TensorRTRunner (contexts, cuda_graph).

        ``contexts`` defaults to the optimization profiles the engine was built with (``--contexts``),
        so a runner can serve that many callers at once without being told again."""
        self._require()
        profiles = (manifest.get("tensorrt") or {}).get("optimization_profiles") or 1
        runner_options.setdefault("contexts", max(1, int(profiles)))
        runner = importlib.import_module("trtopt.backends.tensorrt.runner")
        return runner.TensorRTRunner.from_engine_dir(Path(engine_dir), manifest, self.device(), **runner_options)


BACKEND = TensorRTBackend()
