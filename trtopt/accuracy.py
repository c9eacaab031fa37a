"""Accuracy of an engine's outputs against a reference (FP32) on the same inputs.

Shared by `build` (accuracy at build time) and `bench` (accuracy vs the baseline), so both report
the same numbers computed the same way.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass
class AccuracyReport:
    """Agreement of candidate logits with reference logits (and with labels when known)."""

    samples: int
    top1_agreement: float  # fraction of samples whose argmax matches the reference's
    max_abs_error: float
    mean_abs_error: float
    cosine_similarity: float  # mean over samples of cos(candidate, reference)
    snr_db: float  # 10*log10(sum ref^2 / sum (ref-cand)^2); inf when identical
    reference_accuracy: float | None = None  # task accuracy of the reference when labels exist
    candidate_accuracy: float | None = None

    @property
    def accuracy_drop_points(self) -> float | None:
        """Reference minus candidate task accuracy, in percentage points."""
        if self.reference_accuracy is None or self.candidate_accuracy is None:
            return None
        return 100.0 * (self.reference_accuracy - self.candidate_accuracy)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["snr_db"] = None if not np.isfinite(self.snr_db) else self.snr_db
        data["accuracy_drop_points"] = self.accuracy_drop_points
        return data


class AccuracyAccumulator:
    """Accumulates the report batch by batch so held-out sets never sit in memory whole."""

    def __init__(self) -> None:
        self.samples = 0
        self._agree = 0
        self._max_abs = 0.0
        self._sum_abs = 0.0
        self._elements = 0
        self._cos_sum = 0.0
        self._signal = 0.0
        self._noise = 0.0
        self._ref_correct = 0
        self._cand_correct = 0
        self._labelled = 0

    def update(self, reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None) -> None:
        if reference.shape != candidate.shape:
            raise ValueError(f"output shapes differ: reference {reference.shape}, candidate {candidate.shape}")
        ref = np.asarray(reference, dtype=np.float64).reshape(reference.shape[0], -1)
        cand = np.asarray(candidate, dtype=np.float64).reshape(candidate.shape[0], -1)
        diff = ref - cand
        self.samples += ref.shape[0]
        ref_top = ref.argmax(axis=1)
        cand_top = cand.argmax(axis=1)
        self._agree += int((ref_top == cand_top).sum())
        if diff.size:
            self._max_abs = max(self._max_abs, float(np.abs(diff).max()))
        self._sum_abs += float(np.abs(diff).sum())
        self._elements += diff.size
        norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
        cos = np.where(norms > 0, (ref * cand).sum(axis=1) / np.where(norms > 0, norms, 1.0), 1.0)
        self._cos_sum += float(cos.sum())
        self._signal += float((ref * ref).sum())
        self._noise += float((diff * diff).sum())
        if labels is not None:
            labels = np.asarray(labels).reshape(-1)
            self._labelled += labels.shape[0]
            self._ref_correct += int((ref_top == labels).sum())
            self._cand_correct += int((cand_top == labels).sum())

    def report(self) -> AccuracyReport:
        if self.samples == 0:
            raise ValueError("no samples were compared")
        if self._noise == 0:
            snr = float("inf")
        elif self._signal == 0:
            snr = float("-inf")
        else:
            snr = 10.0 * float(np.log10(self._signal / self._noise))
        labelled = self._labelled > 0
        return AccuracyReport(
            samples=self.samples,
            top1_agreement=self._agree / self.samples,
            max_abs_error=self._max_abs,
            mean_abs_error=self._sum_abs / max(self._elements, 1),
            cosine_similarity=self._cos_sum / self.samples,
            snr_db=snr,
            reference_accuracy=self._ref_correct / self._labelled if labelled else None,
            candidate_accuracy=self._cand_correct / self._labelled if labelled else None,
        )


def compare_outputs(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None) -> AccuracyReport:
    """One-shot form of AccuracyAccumulator for arrays already in memory."""
    acc = AccuracyAccumulator()
    acc.update(reference, candidate, labels)
    return acc.report()
