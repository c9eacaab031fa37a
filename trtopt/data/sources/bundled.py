"""The bundled digits set as a data source: its own split decides the parts.

``calibration`` is the ``val`` split and ``heldout`` the ``test`` split, so calibrating on one and
checking accuracy on the other never share a sample; ``all`` is train, val and test in that order.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

from trtopt.tensors import TensorInfo
from trtopt.data.sources.base import Chunk, DataSource, single_input

_PART_SPLITS = {"calibration": ("val",), "heldout": ("test",), "all": ("train", "val", "test")}


class DigitsSource(DataSource):
    kind = "digits"

    def __init__(self, inputs: Sequence[TensorInfo], **kwargs: object) -> None:
        super().__init__(inputs, **kwargs)  # type: ignore[arg-type]
        self.input = single_input(self.inputs, "the digits set")

    def _applies_split(self) -> bool:
        return False

    def _splits(self) -> tuple[str, ...]:
        return _PART_SPLITS[self.part]

    def _what(self) -> str:
        return f"bundled digits ({'+'.join(self._splits())} split)"

    def _total(self) -> int:
        from trtopt.data.digits import load_digits_split

        return sum(load_digits_split(split)[1].shape[0] for split in self._splits())

    def _chunks(self) -> Iterator[Chunk]:
        from trtopt.data.digits import load_digits_split

        for split in self._splits():
            images, labels = load_digits_split(split)
            yield Chunk({self.input.name: images}, labels, f"digits {split} split")
