"""An image folder: decoded with Pillow, resized, laid out and normalized for the model's input.

Options (``open_source(..., **image_options)``): ``layout`` ("NCHW" or "NHWC"; default: guessed from
the input shape, channels being the axis of size 1 or 3), ``image_size`` ((height, width); default:
the input's fixed spatial dims), ``mean`` and ``std`` (per channel, applied after scaling pixels by
``scale``, default 1/255). Images in sub-folders get the sub-folder's index (sorted names) as label,
the usual class-folder convention; files are read in sorted path order, one batch at a time.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from trtopt.tensors import TensorInfo
from trtopt.data.sources.base import Chunk, DataSource, single_input
from trtopt.errors import UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".webp", ".tif", ".tiff")


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _per_channel(value: float | Sequence[float], channels: int, flag: str) -> np.ndarray:
    array = np.atleast_1d(np.asarray(value, dtype=np.float32))
    if array.shape[0] not in (1, channels):
        raise UsageError(f"{flag} has {array.shape[0]} values; the model's input has {channels} channel(s)")
    return np.broadcast_to(array, (channels,)).astype(np.float32)


class ImageFolderSource(DataSource):
    kind = "images"

    def __init__(self, folder: Path, inputs: Sequence[TensorInfo], *, layout: str | None = None,
                 image_size: Sequence[int] | None = None, mean: float | Sequence[float] = 0.0,
                 std: float | Sequence[float] = 1.0, scale: float = 1 / 255, **kwargs: object) -> None:
        super().__init__(inputs, **kwargs)  # type: ignore[arg-type]
        self.folder = folder
        self.files = image_files(folder)
        if not self.files:
            raise UsageError(f"image folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)})")
        self.input = info = single_input(self.inputs, f"image folder {folder}")
        if len(info.shape) != 4:
            raise UsageError(f"image folder {folder}: input {info.describe()} is not a 4-D image batch")
        self.layout = (layout or self._guess_layout(info)).upper()
        if self.layout not in ("NCHW", "NHWC"):
            raise UsageError(f"image layout {layout!r} is not NCHW or NHWC")
        channel_axis = 1 if self.layout == "NCHW" else 3
        spatial = [info.shape[a] for a in ((2, 3) if self.layout == "NCHW" else (1, 2))]
        channels = info.shape[channel_axis]
        if channels not in (1, 3):
            raise UsageError(
                f"input {info.describe()}: {self.layout} channel dim must be 1 or 3 for images, got {channels}"
            )
        self.channels = int(channels)  # type: ignore[arg-type]
        if image_size is not None:
            self.size = (int(image_size[0]), int(image_size[1]))
        elif all(isinstance(d, int) for d in spatial):
            self.size = (int(spatial[0]), int(spatial[1]))  # type: ignore[arg-type]
        else:
            raise UsageError(f"input {info.describe()} has dynamic height/width; give image_size=(H, W)")
        self.mean = _per_channel(mean, self.channels, "mean")
        self.std = _per_channel(std, self.channels, "std")
        if np.any(self.std == 0):
            raise UsageError("std must not contain 0")
        self.scale = float(scale)
        classes = sorted({p.parent for p in self.files} - {folder})
        self.class_index = {d: i for i, d in enumerate(classes)} if classes else None

    @staticmethod
    def _guess_layout(info: TensorInfo) -> str:
        if info.shape[1] in (1, 3):
            return "NCHW"
        if info.shape[3] in (1, 3):
            return "NHWC"
        raise UsageError(f"cannot tell the layout of input {info.describe()}; pass layout='NCHW' or 'NHWC'")

    def _what(self) -> str:
        return (f"images from {self.folder} ({self.layout}, {self.size[0]}x{self.size[1]}, "
                f"mean {self.mean.tolist()}, std {self.std.tolist()})")

    def _total(self) -> int:
        return len(self.files)

    def _decode(self, path: Path) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                image = image.convert("L" if self.channels == 1 else "RGB")
                image = image.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
                pixels = np.asarray(image, dtype=np.float32)
        except (OSError, UnidentifiedImageError) as exc:
            raise UsageError(f"cannot decode image {path}: {exc}") from exc
        pixels = pixels.reshape(self.size[0], self.size[1], self.channels)
        pixels = (pixels * self.scale - self.mean) / self.std
        return pixels.transpose(2, 0, 1) if self.layout == "NCHW" else pixels

    def _chunks(self) -> Iterator[Chunk]:
        dtype = np.dtype(self.input.dtype)
        if dtype.kind != "f":
            raise UsageError(f"image folder {self.folder}: input {self.input.describe()} is not floating point")
        for path in self.files:
            label = None
            if self.class_index is not None:
                label = np.array([self.class_index.get(path.parent, -1)], dtype=np.int64)
            yield Chunk({self.input.name: self._decode(path)[np.newaxis].astype(dtype)}, label, str(path))
