"""TensorRT backend: strongly typed engine builds (TensorRT 10.x and 11.x) and a CUDA runner.

``BACKEND`` implements :class:`trtopt.backends.registry.Backend`. Importing this package does not
import TensorRT or cuda-python: the modules that need them (builder, runner, logger's TensorRT
half) are imported inside ``build()`` / ``load()``, so the registry, backend selection and the CPU
test suite work where TensorRT is absent.

Modules: ``backend`` (the Backend object), ``builder`` (ONNX -> serialized engine), ``runner``
(engine -> Runner), ``logger`` (TensorRT log -> ``logging``), ``compat`` (version and device
rules), ``dtypes`` (TensorRT <-> numpy types), ``inspector`` (engine inspector JSON),
``timing_cache`` (per device + version cache files).

Nothing here has run on a GPU or with TensorRT yet: the code follows the documented 10.x/11.x API
and was reviewed, its pure rules are CPU-tested; docs/TENSORRT.md ("Verification status") says
which part was verified how.
"""
from trtopt.backends.tensorrt.backend import BACKEND, TensorRTBackend

__all__ = ["BACKEND", "TensorRTBackend"]
