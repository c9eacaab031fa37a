"""The DataSource contract and the batching/validation every source shares.

A source only knows how to produce *chunks*: dicts of arrays with a leading sample axis (one file,
one loader yield, one decoded image). Everything else is done here once, so every source behaves
the same: dtypes are cast within their kind (float64 data for a float32 model is fine, floats for
an int input are not), single samples get a batch axis, the held-out split is applied, chunks are
re-cut into batches of ``batch_size`` (never mixing samples of different shapes, so inputs whose
spatial size varies stay batchable), and every batch is checked with
:func:`trtopt.tensors.validate_feed` so errors name the input and what was expected.

Held-out split for sources without a natural one: the sample with global index ``k`` (in source
order, before ``max_samples``) belongs to the ``heldout`` part when ``k % 5 == 4`` and to the
``calibration`` part otherwise. The rule needs no length and no shuffling, so it also works for
streams of unknown length and is identical for every batch size.
"""
from __future__ import annotations

import abc
import hashlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from trtopt.tensors import TensorInfo, validate_feed
from trtopt.errors import UsageError

log = logging.getLogger("trtopt.data")

PARTS = ("all", "calibration", "heldout")
HELDOUT_EVERY = 5  # sample k is held out when k % HELDOUT_EVERY == HELDOUT_EVERY - 1


@dataclass(frozen=True)
class Batch:
    """One batch: a feed for ``Runner.infer`` and, when the source has them, integer labels."""

    feed: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    rows: int | None = None  # samples in the batch (None: axis 0 of the first array)

    @property
    def size(self) -> int:
        if self.rows is not None:
            return self.rows
        return int(next(iter(self.feed.values())).shape[0]) if self.feed else 0


@dataclass
class Chunk:
    """Raw arrays from a source, with a leading sample axis (or one sample without it)."""

    feed: dict[str, np.ndarray]
    labels: np.ndarray | None
    origin: str  # file name or loader call, used in error messages


def part_count(total: int, part: str) -> int:
    """How many of ``total`` samples fall into ``part`` under the every-fifth rule."""
    heldout = (total + 1) // HELDOUT_EVERY
    return {"all": total, "heldout": heldout, "calibration": total - heldout}[part]


def whole_inputs(inputs: Sequence[TensorInfo]) -> set[str]:
    """Inputs fed whole with every batch instead of sample by sample: scalars (a sample rate), and,
    when some input has a dynamic batch axis, inputs whose axis 0 is fixed (a recurrent state
    ``[2, batch, 128]`` keeps its batch elsewhere)."""
    dynamic_batch = any(info.shape and not (isinstance(info.shape[0], int) and info.shape[0] > 0) for info in inputs)
    return {info.name for info in inputs
            if not info.shape or (dynamic_batch and isinstance(info.shape[0], int) and info.shape[0] > 0)}


def _same_kind(given: np.dtype, wanted: np.dtype) -> bool:
    kinds = {"f": "f", "i": "i", "u": "i", "b": "b"}
    return kinds.get(given.kind, given.kind) == kinds.get(wanted.kind, wanted.kind)


class DataSource(abc.ABC):
    """An iterable of :class:`Batch` conforming to a model's inputs; iterating again restarts it.

    Calibration and the accuracy checks of a build iterate the same source, so every source must be
    re-iterable and yield the same samples in the same order each time.
    """

    kind = "abstract"

    def __init__(self, inputs: Sequence[TensorInfo], *, batch_size: int = 16, max_samples: int | None = None,
                 part: str = "all", constants: Mapping[str, TensorInfo] | None = None) -> None:
        if not inputs:
            raise UsageError("the model has no inputs to feed")
        if batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {batch_size}")
        if max_samples is not None and max_samples < 1:
            raise UsageError(f"--max-samples must be at least 1, got {max_samples}")
        if part not in PARTS:
            raise UsageError(f"data part {part!r} is not one of {list(PARTS)}")
        self.inputs = list(inputs)
        # initializer-backed inputs (old IR): data may give their value, once, not per sample
        self.constants = dict(constants or {})
        self.max_samples = max_samples
        self.part = part
        self.whole = whole_inputs(self.inputs)
        first = next((info for info in self.inputs if info.name not in self.whole), self.inputs[0])
        fixed = first.shape[0] if first.shape and first.name not in self.whole else None
        self.fixed_batch = fixed if isinstance(fixed, int) and fixed > 0 else None
        if self.fixed_batch is not None and self.fixed_batch != batch_size:
            log.info("input %r has a fixed batch of %d; using it instead of batch size %d",
                     first.name, self.fixed_batch, batch_size)
        self.batch_size = self.fixed_batch or batch_size
        self.first_batched = first.name
        # chunks may hold any number of samples; the batcher enforces a fixed batch dim
        self._chunk_inputs = [info if info.name in self.whole else
                              replace(info, shape=(None, *info.shape[1:]),
                                      bounds=(None, *info.bounds[1:]) if info.bounds else None)
                              for info in self.inputs]

    # --- what a concrete source provides -------------------------------------------------------
    @abc.abstractmethod
    def _chunks(self) -> Iterator[Chunk]:
        """Yield raw chunks in a stable order (the held-out rule counts samples in this order)."""

    def _total(self) -> int | None:
        """Samples in the whole source (before part and max_samples), when known without reading it."""
        return None

    @abc.abstractmethod
    def _what(self) -> str:
        """Short human description of where the data comes from."""

    # --- shared behaviour ----------------------------------------------------------------------
    def constant_feeds(self) -> dict[str, np.ndarray]:
        """Values the data gives for initializer-backed inputs (read from the first chunk, checked)."""
        if not self.constants:
            return {}
        for chunk in self._chunks():
            return {name: check_initializer_feed(self.constants[name], value, chunk.origin)
                    for name, value in chunk.feed.items() if name in self.constants}
        return {}

    def _applies_split(self) -> bool:
        """Sources with a natural split (digits) select their part themselves."""
        return True

    @property
    def num_samples(self) -> int | None:
        total = self._total()
        if total is None:
            return None
        count = part_count(total, self.part) if self._applies_split() else total
        if self.max_samples is not None:
            count = min(count, self.max_samples)
        if self.fixed_batch is not None:
            count -= count % self.fixed_batch
        return count

    def describe(self) -> str:
        count = self.num_samples
        samples = f"{count} samples" if count is not None else "samples: unknown until read"
        part = "" if self.part == "all" else f", {self.part} part"
        return f"{self._what()} ({samples}{part}, batch {self.batch_size})"

    def __iter__(self) -> Iterator[Batch]:
        batcher = _Batcher(self.batch_size, self.fixed_batch, self.first_batched)
        for feed, labels, whole in self._selected():
            yield from batcher.push(feed, labels, whole)
        yield from batcher.flush()

    def _selected(self) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray | None, dict[str, np.ndarray]]]:
        """Conformed chunks restricted to the requested part and to ``max_samples`` (whole inputs apart)."""
        index = 0  # global sample index in source order, for the held-out rule
        taken = 0
        for chunk in self._chunks():
            feed, labels = self._conform(chunk)
            whole = {name: feed.pop(name) for name in self.whole}
            rows = _rows(feed)
            keep: np.ndarray | slice = slice(None)
            if self.part != "all" and self._applies_split():
                held = (np.arange(index, index + rows) % HELDOUT_EVERY) == HELDOUT_EVERY - 1
                keep = np.flatnonzero(held if self.part == "heldout" else ~held)
            index += rows
            if self.max_samples is not None:
                room = self.max_samples - taken
                if room <= 0:
                    return
                keep = keep[:room] if isinstance(keep, np.ndarray) else slice(0, room)
            if not (isinstance(keep, slice) and keep == slice(None)):
                feed = {name: array[keep] for name, array in feed.items()}
                labels = labels[keep] if labels is not None else None
            taken += _rows(feed)
            if _rows(feed):
                yield feed, labels, whole

    def _conform(self, chunk: Chunk) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """Cast within dtype kinds, add a batch axis to single samples, validate; errors name the origin."""
        feed: dict[str, np.ndarray] = {}
        expected = {info.name: info for info in self.inputs}
        for name, value in chunk.feed.items():
            if name in self.constants:
                continue  # a model constant, given once: see constant_feeds()
            array = np.asarray(value)
            info = expected.get(name)
            if info is not None:
                wanted = np.dtype(info.dtype)
                if array.dtype != wanted:
                    if not _same_kind(array.dtype, wanted):
                        raise UsageError(f"{chunk.origin}: input {name!r} has dtype {array.dtype}, expected "
                                         f"{wanted.name} ({info.describe()}); convert the data before calibrating")
                    array = array.astype(wanted)
                if array.ndim == len(info.shape) - 1 and name not in self.whole:
                    array = array[np.newaxis]
            feed[name] = array
        try:
            feed = validate_feed(feed, self._chunk_inputs)
        except UsageError as exc:
            raise UsageError(f"{chunk.origin}: {exc}") from exc
        counts = {n: a.shape[0] for n, a in feed.items() if n not in self.whole}
        rows = set(counts.values()) or {1}
        if len(rows) != 1:
            raise UsageError(f"{chunk.origin}: inputs have different sample counts {counts}")
        labels = None
        if chunk.labels is not None:
            labels = np.asarray(chunk.labels).reshape(-1)
            if labels.shape[0] != (count := rows.pop()):
                raise UsageError(f"{chunk.origin}: {labels.shape[0]} labels for {count} samples")
        return feed, labels


def check_initializer_feed(info: TensorInfo, value: np.ndarray, origin: str) -> np.ndarray:
    """A user's value for an initializer-backed input: same dtype kind and exactly its shape."""
    array = np.asarray(value)
    if array.shape != tuple(info.shape) or array.dtype.kind != np.dtype(info.dtype).kind:
        raise UsageError(f"{origin}: input {info.name!r} is an initializer of the model ({info.describe()}); "
                         f"the data gives {array.dtype.name}{list(array.shape)}; feed exactly that shape, or leave "
                         "it out to use the model's value")
    return array.astype(info.dtype)


def single_input(inputs: Sequence[TensorInfo], what: str) -> TensorInfo:
    """The one input a single-tensor source (images, digits, a lone array) can feed."""
    if len(inputs) != 1:
        raise UsageError(f"{what} provides one tensor but the model has {len(inputs)} inputs "
                         f"{[i.describe() for i in inputs]}; use an .npz file or a Python loader")
    return inputs[0]


def take_labels(arrays: Mapping[str, np.ndarray], inputs: Sequence[TensorInfo]) -> str | None:
    """The key holding labels ("labels" or "y") unless the model has an input of that name."""
    names = {info.name for info in inputs}
    for key in ("labels", "y"):
        if key in arrays and key not in names:
            return key
    return None


def _rows(feed: Mapping[str, np.ndarray]) -> int:
    """Samples in a feed of batched arrays (an empty one, all inputs whole, is one sample)."""
    return int(next(iter(feed.values())).shape[0]) if feed else 1


class _Batcher:
    """Re-cuts same-shaped chunks into batches; a change of per-sample shape closes a batch early."""

    def __init__(self, batch_size: int, fixed_batch: int | None, first_input: str) -> None:
        self.batch_size = batch_size
        self.fixed_batch = fixed_batch
        self.first_input = first_input
        self.pieces: list[tuple[dict[str, np.ndarray], np.ndarray | None]] = []
        self.rows = 0
        self.key: tuple | None = None
        self.whole: dict[str, np.ndarray] = {}

    def push(self, feed: dict[str, np.ndarray], labels: np.ndarray | None,
             whole: dict[str, np.ndarray]) -> Iterator[Batch]:
        """Add a chunk; whole inputs go with every batch, so a change of their value closes a batch too."""
        key = (tuple((name, array.shape[1:]) for name, array in feed.items()),
               tuple((name, array.shape, hashlib.sha1(array.tobytes()).hexdigest()) for name, array in whole.items()))
        if self.pieces and key != self.key:
            yield from self.flush()
        self.key, self.whole = key, whole
        if not feed:  # every input is whole: each chunk is one sample, one batch
            yield Batch(dict(whole), labels, 1)
            return
        self.pieces.append((feed, labels))
        self.rows += _rows(feed)
        if self.rows >= self.batch_size:
            yield from self._cut(final=False)

    def flush(self) -> Iterator[Batch]:
        if self.pieces:
            yield from self._cut(final=True)

    def _cut(self, *, final: bool) -> Iterator[Batch]:
        if len(self.pieces) == 1:
            feed, labels = self.pieces[0]
        else:
            feed = {name: np.concatenate([p[0][name] for p in self.pieces]) for name in self.pieces[0][0]}
            labels = (np.concatenate([p[1] for p in self.pieces])
                      if all(p[1] is not None for p in self.pieces) else None)
        rows, start = _rows(feed), 0
        while rows - start >= self.batch_size:
            yield Batch({**{n: a[start:start + self.batch_size] for n, a in feed.items()}, **self.whole},
                        labels[start:start + self.batch_size] if labels is not None else None, self.batch_size)
            start += self.batch_size
        self.pieces, self.rows = [], 0
        if start == rows:
            return
        tail = ({n: a[start:] for n, a in feed.items()}, labels[start:] if labels is not None else None)
        if not final:
            self.pieces, self.rows = [tail], rows - start
        elif self.fixed_batch is not None:
            log.warning("dropping the last %d sample(s): input %r has a fixed batch of %d",
                        rows - start, self.first_input, self.fixed_batch)
        else:
            yield Batch({**tail[0], **self.whole}, tail[1], rows - start)
