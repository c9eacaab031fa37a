"""Calibration and evaluation data sources, shared by calibrate, build and bench.

``open_source(spec, inputs)`` picks the source from the spec:

=================================  =============================================================
``digits``                         the bundled digits set (parts follow its val/test splits)
``random``                         random data, only by name (warns: scales meaningless)
``file.py:function`` / ``file.py``  a Python loader yielding feed dicts (Polygraphy's convention)
``data.npz`` / ``data.npy``        saved arrays, keys matched to input names
a folder of ``.npy``/``.npz``       per-input files (``input.npy``) or per-chunk files
a folder of images                 decoded, resized, normalized (``layout``, ``image_size``, ...)
=================================  =============================================================

Every source is an iterable of :class:`Batch` checked against the model's inputs; see
:mod:`trtopt.data.sources.base` for the batching rules and the held-out split.

A ``file.py[:function]`` spec imports and runs that file (see :mod:`trtopt.usercode`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trtopt.usercode import runs_code
from trtopt.tensors import TensorInfo
from trtopt.data.sources.base import PARTS, Batch, DataSource
from trtopt.errors import UsageError

__all__ = ["PARTS", "Batch", "DataSource", "open_source"]

_IMAGE_OPTIONS = {"layout", "image_size", "mean", "std", "scale"}


def open_source(spec: str, inputs: Sequence[TensorInfo], *, batch_size: int = 16, max_samples: int | None = None,
                part: str = "all", seed: int = 0, constants: Mapping[str, TensorInfo] | None = None,
                **options: Any) -> DataSource:
    """Open the data source ``spec`` for a model with ``inputs`` (e.g. ``OnnxRuntimeRunner(m).inputs``).

    ``constants`` are the model's initializer-backed inputs (old IR): data may give their value once
    (see :meth:`DataSource.constant_feeds`); ``random`` never does.
    """
    common: dict[str, Any] = {"batch_size": batch_size, "max_samples": max_samples, "part": part,
                              "constants": constants}
    spec = str(spec)
    if spec == "digits":
        from trtopt.data.sources.bundled import DigitsSource

        return DigitsSource(inputs, **common, **_only(options, set(), spec))
    if spec == "random":
        from trtopt.data.sources.synthetic import RandomSource

        return RandomSource(inputs, seed=seed, **common, **_only(options, {"shapes", "ranges"}, spec))
    if runs_code(spec):
        from trtopt.data.sources.loader import LoaderSource

        return LoaderSource(spec, inputs, **common, **_only(options, set(), spec))
    path = Path(spec)
    if not path.exists():
        raise UsageError(f"calibration data not found: {spec} (expected 'digits', 'random', an .npz/.npy file, "
                         f"a folder of arrays or images, or file.py:function)")
    if path.is_dir():
        from trtopt.data.sources.images import image_files

        if not any(p.suffix in (".npy", ".npz") for p in path.iterdir()) and image_files(path):
            from trtopt.data.sources.images import ImageFolderSource

            return ImageFolderSource(path, inputs, **common, **_only(options, _IMAGE_OPTIONS, spec))
    from trtopt.data.sources.arrays import open_arrays

    return open_arrays(path, inputs, **common, **_only(options, set(), spec))


def _only(options: dict[str, Any], allowed: set[str], spec: str) -> dict[str, Any]:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise UsageError(f"option(s) {unknown} do not apply to data source {spec!r}"
                         + (f" (it takes {sorted(allowed)})" if allowed else ""))
    return options
