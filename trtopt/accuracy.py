"""Accuracy of an engine's outputs against a reference (FP32) on the same inputs, output by output.

Shared by `build` (accuracy at build time, budgets, the far-off warning), `bench`, `sensitivity`
and the mixed-precision search, so every place reports the same numbers computed the same way.
Every output of the model is compared on its own; the report's top-level numbers are the worst
over the outputs (lowest agreement, cosine, SNR and IoU; largest errors).

Metrics per output, and why each fits:

* **agreement**: argmax over the *class axis* at every other position, compared with the
  reference's. The class axis is the last axis of outputs of rank 2 and 3 (``[N, C]`` logits,
  ``[N, T, C]`` per-time-step scores of a sequence recognizer) unless set (``--class-axis 1``, or
  per output ``--class-axis logits:1,maps:none``). Outputs of other ranks, and class axes of size 1,
  have no agreement: an argmax over the flattened sample (what a ``[N, T, C]`` output used to get)
  means nothing.
* **cosine similarity** (mean over samples, sample flattened), **SNR** in dB
  (``10 log10(sum ref^2 / sum (ref - cand)^2)`` over the whole set), max and mean absolute error:
  for every output, dense ones included.
* **IoU** at ``iou_threshold`` (0.5): for outputs without a class axis whose reference values all
  lie in [0, 1] (probability maps such as a text detector's): ``|ref > t AND cand > t| / |ref > t
  OR cand > t|`` summed over the whole set.
* **user metrics**: ``--metric file.py:fn`` imports the file (it runs the user's code) and calls
  ``fn(reference, candidate)`` once per batch with two dicts output name -> array; it returns named
  scores (higher is better), averaged over samples weighted by batch size (e.g. CTC-decoded text
  agreement).

Broken outputs never look good: a candidate NaN/Inf where the reference is finite counts as
maximal error (max/mean abs error inf, SNR -inf, cosine -1 for that sample, a disagreement at that
position, a mask mismatch) and is counted in ``nonfinite``. Two zero vectors have cosine 1 (they
match); a zero vector against a non-zero one has cosine 0, never 1.

**Far off** (the loud warning, :func:`far_off_problems`): a result is far off FP32 when any output
has non-finite values where FP32 is finite, SNR below 10 dB, agreement below 90%, or IoU below 0.8.
`build` prints this to stderr and records it in the manifest (``accuracy.far_off``) even without a
budget; ``--accept-accuracy-loss`` silences the terminal warning (the manifest keeps the record).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trtopt.errors import UsageError

FAR_OFF_SNR_DB = 10.0
FAR_OFF_AGREEMENT = 0.90
FAR_OFF_IOU = 0.80
DEFAULT_IOU_THRESHOLD = 0.5
DEFAULT_METRIC_FUNCTION = "metric"


@dataclass(frozen=True)
class MetricSettings:
    """How outputs are compared: class axes, the IoU threshold and user metric specs."""

    class_axis: int | None | str = "auto"  # "auto": last axis of rank-2/3 outputs; None: no class axis
    output_class_axes: Mapping[str, int | None] = field(default_factory=dict)
    iou_threshold: float = DEFAULT_IOU_THRESHOLD
    user_metrics: tuple[str, ...] = ()  # file.py:fn specs (imported: they run the user's code)

    def axis_for(self, name: str, rank: int) -> int | None:
        """The class axis of output ``name`` (non-negative), or None."""
        axis = self.output_class_axes[name] if name in self.output_class_axes else self.class_axis
        if axis == "auto":
            return rank - 1 if rank in (2, 3) else None
        if axis is None or rank < 2:
            return None
        if not -rank <= int(axis) < rank or int(axis) % rank == 0:
            raise UsageError(
                f"--class-axis {axis} does not fit output {name!r} of rank {rank} "
                f"(axis 0 is the batch; use 1..{rank - 1} or -1..-{rank - 1}, or 'none')"
            )
        return int(axis) % rank

    def to_json(self) -> dict[str, Any]:
        return {
            "class_axis": self.class_axis,
            "output_class_axes": dict(self.output_class_axes),
            "iou_threshold": self.iou_threshold,
            "user_metrics": list(self.user_metrics),
        }


def parse_class_axis(text: str | None) -> tuple[int | None | str, dict[str, int | None]]:
    """``"-1"``, ``"none"``, ``"auto"`` or ``"logits:1,maps:none"`` -> (default axis, per-output axes)."""

    def axis(value: str) -> int | None | str:
        value = value.strip().lower()
        if value in ("none", "auto"):
            return None if value == "none" else "auto"
        try:
            return int(value)
        except ValueError:
            raise UsageError(f"--class-axis: {value!r} is not an axis (an integer, 'none' or 'auto')") from None

    if not text:
        return "auto", {}
    default: int | None | str = "auto"
    per_output: dict[str, int | None] = {}
    for part in text.split(","):
        name, sep, value = part.rpartition(":")
        if sep:
            parsed = axis(value)
            if parsed == "auto":
                raise UsageError(f"--class-axis {part!r}: per-output axes are an integer or 'none'")
            per_output[name.strip()] = parsed  # type: ignore[assignment]
        else:
            default = axis(value)
    return default, per_output


@dataclass
class OutputMetrics:
    """One output's agreement with the reference (``None``: the metric does not apply to it)."""

    name: str
    samples: int
    class_axis: int | None
    agreement: float | None
    max_abs_error: float
    mean_abs_error: float
    cosine_similarity: float
    snr_db: float
    iou: float | None
    nonfinite: int  # candidate NaN/Inf values where the reference is finite

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "class_axis": self.class_axis,
            "agreement": self.agreement,
            **_error_metrics_json(self),
        }


def _error_metrics_json(metrics: OutputMetrics | AccuracyReport) -> dict[str, Any]:
    """The error metrics an output and the whole report share, encoded the same way in both (JSON has no inf)."""
    return {
        "max_abs_error": _finite_or_none(metrics.max_abs_error),
        "mean_abs_error": _finite_or_none(metrics.mean_abs_error),
        "cosine_similarity": metrics.cosine_similarity,
        "snr_db": _snr_json(metrics.snr_db),
        "iou": metrics.iou,
        "nonfinite": metrics.nonfinite,
    }


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _snr_json(value: float) -> float | None:
    """JSON has no infinities: +inf (identical outputs) is null; -inf (broken or all-noise output) is -1000 dB."""
    if value == float("inf"):
        return None
    return float(value) if np.isfinite(value) else -1000.0


def _worst(values: Sequence[float | None], largest: bool) -> float | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    return max(present) if largest else min(present)


@dataclass
class AccuracyReport:
    """Per-output metrics, user metrics and (with labels) task accuracy; top level = worst output."""

    samples: int
    outputs: dict[str, OutputMetrics]
    user_metrics: dict[str, float] = field(default_factory=dict)
    reference_accuracy: float | None = None  # task accuracy of the reference when labels exist
    candidate_accuracy: float | None = None

    @property
    def top1_agreement(self) -> float | None:
        return _worst([o.agreement for o in self.outputs.values()], largest=False)

    @property
    def max_abs_error(self) -> float:
        return float(_worst([o.max_abs_error for o in self.outputs.values()], largest=True) or 0.0)

    @property
    def mean_abs_error(self) -> float:
        return float(_worst([o.mean_abs_error for o in self.outputs.values()], largest=True) or 0.0)

    @property
    def cosine_similarity(self) -> float:
        return float(_worst([o.cosine_similarity for o in self.outputs.values()], largest=False))

    @property
    def snr_db(self) -> float:
        return float(_worst([o.snr_db for o in self.outputs.values()], largest=False))

    @property
    def iou(self) -> float | None:
        return _worst([o.iou for o in self.outputs.values()], largest=False)

    @property
    def nonfinite(self) -> int:
        return sum(o.nonfinite for o in self.outputs.values())

    @property
    def accuracy_drop_points(self) -> float | None:
        """Reference minus candidate task accuracy, in percentage points."""
        if self.reference_accuracy is None or self.candidate_accuracy is None:
            return None
        return 100.0 * (self.reference_accuracy - self.candidate_accuracy)

    def metric(self, key: str, output: str | None = None) -> float | None:
        """A budget metric by its budget name, for one output or the worst over outputs (None: not measurable)."""
        if key in self.user_metrics and output is None:
            return self.user_metrics[key]
        if key == "top1-drop" and output is None:
            return self.accuracy_drop_points
        attribute = _OUTPUT_METRICS.get(key)
        if attribute is None:
            return None
        if output is None:
            return getattr(self, "top1_agreement" if attribute == "agreement" else attribute)
        if output not in self.outputs:
            raise UsageError(
                f"--accuracy-budget {key}@{output}: the model has no output {output!r} (it has {sorted(self.outputs)})"
            )
        return getattr(self.outputs[output], attribute)

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "top1_agreement": self.top1_agreement,
            **_error_metrics_json(self),
            "reference_accuracy": self.reference_accuracy,
            "candidate_accuracy": self.candidate_accuracy,
            "accuracy_drop_points": self.accuracy_drop_points,
            "metrics": dict(self.user_metrics),
            "outputs": {name: o.to_json() for name, o in self.outputs.items()},
        }


# budget name -> OutputMetrics attribute
_OUTPUT_METRICS = {
    "agreement": "agreement",
    "cosine": "cosine_similarity",
    "snr": "snr_db",
    "iou": "iou",
    "max-abs-error": "max_abs_error",
    "mean-abs-error": "mean_abs_error",
}
LARGER_IS_WORSE = frozenset({"top1-drop", "max-abs-error", "mean-abs-error"})
BUILTIN_METRICS = frozenset(_OUTPUT_METRICS) | {"top1-drop"}


def far_off_problems(report: AccuracyReport) -> list[str]:
    """Why the result is far off the reference (see the module docstring); empty when it is not."""
    problems = []
    for name, o in report.outputs.items():
        if o.nonfinite:
            problems.append(f"output {name!r}: {o.nonfinite} NaN/Inf value(s) where FP32 is finite")
        if o.snr_db < FAR_OFF_SNR_DB:
            problems.append(f"output {name!r}: SNR {o.snr_db:.1f} dB < {FAR_OFF_SNR_DB:g} dB")
        if o.agreement is not None and o.agreement < FAR_OFF_AGREEMENT:
            problems.append(f"output {name!r}: agreement {100 * o.agreement:.1f}% < {100 * FAR_OFF_AGREEMENT:g}%")
        if o.iou is not None and o.iou < FAR_OFF_IOU:
            problems.append(f"output {name!r}: IoU {o.iou:.3f} < {FAR_OFF_IOU:g}")
    return problems


class _OutputAccumulator:
    """Streaming sums for one output (see the module docstring for each metric)."""

    def __init__(self, name: str, settings: MetricSettings) -> None:
        self.name = name
        self.settings = settings
        self.class_axis: int | None = None
        self.rank: int | None = None
        self.samples = 0
        self.positions = 0
        self.agree = 0
        self.max_abs = 0.0
        self.sum_abs = 0.0
        self.elements = 0
        self.cos_sum = 0.0
        self.signal = 0.0
        self.noise = 0.0
        self.nonfinite = 0
        self.ref_min, self.ref_max = np.inf, -np.inf
        self.intersection = 0
        self.union = 0

    def update(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        if reference.shape != candidate.shape:
            raise UsageError(
                f"output {self.name!r}: shapes differ, reference {reference.shape}, candidate {candidate.shape}"
            )
        ref = np.asarray(reference, dtype=np.float64)
        cand = np.asarray(candidate, dtype=np.float64)
        if ref.ndim == 0:
            ref, cand = ref.reshape(1), cand.reshape(1)
        if self.rank is None:
            self.rank = ref.ndim
            axis = self.settings.axis_for(self.name, ref.ndim)
            self.class_axis = axis if axis is not None and ref.shape[axis] > 1 else None
        valid = np.isfinite(ref)
        bad = valid & ~np.isfinite(cand)
        ref = np.where(valid, ref, 0.0)
        cand = np.where(valid & ~bad, cand, 0.0)
        self.nonfinite += int(bad.sum())
        batch = ref.shape[0]
        self.samples += batch
        diff = ref - cand
        if diff.size:
            self.max_abs = max(self.max_abs, float(np.abs(diff).max()))
        self.sum_abs += float(np.abs(diff).sum())
        self.elements += diff.size
        self.signal += float((ref * ref).sum())
        self.noise += float((diff * diff).sum())
        self._cosine(ref.reshape(batch, -1), cand.reshape(batch, -1), bad.reshape(batch, -1).any(axis=1))
        if self.class_axis is not None:
            self._agreement(ref, cand, bad)
        else:
            self._iou(ref, cand, bad, valid)

    def _cosine(self, ref: np.ndarray, cand: np.ndarray, broken: np.ndarray) -> None:
        ref_norm, cand_norm = np.linalg.norm(ref, axis=1), np.linalg.norm(cand, axis=1)
        both = ref_norm * cand_norm
        cos = np.where(
            both > 0,
            (ref * cand).sum(axis=1) / np.where(both > 0, both, 1.0),
            np.where((ref_norm == 0) & (cand_norm == 0), 1.0, 0.0),
        )
        self.cos_sum += float(np.where(broken, -1.0, cos).sum())

    def _agreement(self, ref: np.ndarray, cand: np.ndarray, bad: np.ndarray) -> None:
        axis = self.class_axis
        same = (ref.argmax(axis=axis) == cand.argmax(axis=axis)) & ~bad.any(axis=axis)
        self.agree += int(same.sum())
        self.positions += same.size

    def _iou(self, ref: np.ndarray, cand: np.ndarray, bad: np.ndarray, valid: np.ndarray) -> None:
        if valid.any():
            self.ref_min = min(self.ref_min, float(ref[valid].min()))
            self.ref_max = max(self.ref_max, float(ref[valid].max()))
        threshold = self.settings.iou_threshold
        ref_mask, cand_mask = ref > threshold, cand > threshold
        self.intersection += int((ref_mask & cand_mask & ~bad).sum())
        self.union += int((ref_mask | cand_mask | bad).sum())

    def result(self) -> OutputMetrics:
        broken = self.nonfinite > 0
        if broken:
            snr = float("-inf")
        elif self.noise == 0:
            snr = float("inf")
        elif self.signal == 0:
            snr = float("-inf")
        else:
            snr = 10.0 * float(np.log10(self.signal / self.noise))
        probability_map = self.class_axis is None and 0.0 <= self.ref_min and self.ref_max <= 1.0
        iou = None
        if probability_map:
            iou = self.intersection / self.union if self.union else 1.0
        return OutputMetrics(
            name=self.name,
            samples=self.samples,
            class_axis=self.class_axis,
            agreement=self.agree / self.positions if self.class_axis is not None and self.positions else None,
            max_abs_error=float("inf") if broken else self.max_abs,
            mean_abs_error=float("inf") if broken else self.sum_abs / max(self.elements, 1),
            cosine_similarity=self.cos_sum / max(self.samples, 1),
            snr_db=snr,
            iou=iou,
            nonfinite=self.nonfinite,
        )


class UserMetric:
    """``file.py:fn`` called per batch as ``fn(reference, candidate) -> {name: score}`` (runs the user's code)."""

    def __init__(self, spec: str) -> None:
        from trtopt.usercode import load_function, split_spec

        self.spec = spec
        path, name = split_spec(spec, DEFAULT_METRIC_FUNCTION)
        self.function = load_function(path, name, "accuracy metric")

    def __call__(self, reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]) -> dict[str, float]:
        try:
            scores = self.function(dict(reference), dict(candidate))
        except Exception as exc:  # the user's code
            raise UsageError(f"accuracy metric {self.spec} failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(scores, Mapping):
            raise UsageError(
                f"accuracy metric {self.spec} returned {type(scores).__name__}; expected a dict of name -> number"
            )
        result = {}
        for key, value in scores.items():
            if str(key) in BUILTIN_METRICS or "@" in str(key):
                raise UsageError(f"accuracy metric {self.spec}: score name {key!r} clashes with a built-in metric name")
            try:
                result[str(key)] = float(value)
            except (TypeError, ValueError):
                raise UsageError(f"accuracy metric {self.spec}: score {key!r} is {value!r}, not a number") from None
        return result


class AccuracyAccumulator:
    """Accumulates the report batch by batch so held-out sets never sit in memory whole."""

    def __init__(
        self, settings: MetricSettings | None = None, user_metrics: Sequence[UserMetric] | None = None
    ) -> None:
        self.settings = settings or MetricSettings()
        self.user = (
            list(user_metrics) if user_metrics is not None else [UserMetric(s) for s in self.settings.user_metrics]
        )
        self.outputs: dict[str, _OutputAccumulator] = {}
        self.samples = 0
        self._user_sums: dict[str, float] = {}
        self._user_samples = 0
        self._ref_correct = 0
        self._cand_correct = 0
        self._labelled = 0

    def update(
        self, reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray], labels: np.ndarray | None = None
    ) -> None:
        """Compare one batch: every reference output must be in the candidate's outputs."""
        missing = sorted(set(reference) - set(candidate))
        if missing:
            raise UsageError(f"the candidate has no output(s) {missing} (it has {sorted(candidate)})")
        batch = 0
        for name, ref in reference.items():
            acc = self.outputs.setdefault(name, _OutputAccumulator(name, self.settings))
            acc.update(np.asarray(ref), np.asarray(candidate[name]))
            if not batch:
                batch = int(np.asarray(ref).shape[0]) if np.ndim(ref) else 1
        self.samples += batch
        for metric in self.user:
            for key, value in metric(reference, candidate).items():
                self._user_sums[key] = self._user_sums.get(key, 0.0) + value * batch
        if self.user:
            self._user_samples += batch
        if labels is not None:
            self._task_accuracy(reference, candidate, np.asarray(labels).reshape(-1))

    def _task_accuracy(
        self, reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray], labels: np.ndarray
    ) -> None:
        """Labels score the first output with a class axis and one prediction per sample."""
        for name, acc in self.outputs.items():
            axis = acc.class_axis
            if axis is None or acc.rank != 2:
                continue
            ref_top = np.asarray(reference[name]).argmax(axis=axis)
            cand = np.asarray(candidate[name], dtype=np.float64)
            cand_top = np.where(np.isfinite(cand).all(axis=axis), cand.argmax(axis=axis), -1)
            if ref_top.shape != labels.shape:
                return
            self._labelled += labels.shape[0]
            self._ref_correct += int((ref_top == labels).sum())
            self._cand_correct += int((cand_top == labels).sum())
            return

    def report(self) -> AccuracyReport:
        if self.samples == 0:
            raise UsageError("no samples were compared")
        labelled = self._labelled > 0
        return AccuracyReport(
            samples=self.samples,
            outputs={name: acc.result() for name, acc in self.outputs.items()},
            user_metrics={k: v / self._user_samples for k, v in self._user_sums.items()},
            reference_accuracy=self._ref_correct / self._labelled if labelled else None,
            candidate_accuracy=self._cand_correct / self._labelled if labelled else None,
        )


def compare_outputs(
    reference: Mapping[str, np.ndarray] | np.ndarray,
    candidate: Mapping[str, np.ndarray] | np.ndarray,
    labels: np.ndarray | None = None,
    settings: MetricSettings | None = None,
) -> AccuracyReport:
    """One-shot form of AccuracyAccumulator for outputs already in memory (a bare array is output "output")."""
    acc = AccuracyAccumulator(settings)
    acc.update(
        reference if isinstance(reference, Mapping) else {"output": reference},
        candidate if isinstance(candidate, Mapping) else {"output": candidate},
        labels,
    )
    return acc.report()
