"""Accuracy metrics for PP-OCR outputs, usable as ``trtopt build --metric scripts/ocr_metrics.py:FN``.

``text_agreement``: the recognizer's ``[N, T, classes]`` CTC output decoded greedily (argmax per
step, repeats collapsed, blank 0 dropped) and compared line by line with the reference's decoding:
``text_agreement`` is the fraction of lines decoded identically, ``char_agreement`` one minus the
edit distance over the reference's length.

``db_boxes`` / ``detection_scores``: the standard text-detection score for a DB (differentiable
binarization) detector such as PP-OCR's. DB's probability map marks each text region *shrunk*
(training shrinks the boxes by ``area * (1 - 0.4**2) / perimeter``); the post-processing PP-OCR
ships turns it into boxes, and the boxes are what a user gets. It is reproduced here with
PaddleOCR's default settings (:class:`DBSettings`): binarize at 0.3, take each connected region,
drop regions under 3 px on their short side, drop regions whose mean probability over their box is
under 0.6, then grow ("unclip") the box by ``area * 1.5 / perimeter`` on every side, back to the
size of the text. Boxes are matched one to one with the ground truth at IoU >= 0.5 (the ICDAR
IoU protocol, as in PaddleOCR's evaluator) and scored as precision, recall and their harmonic mean
(hmean, F1), summed over all pages. Simplification: PP-OCR fits the minimum-area rotated rectangle
of each region's contour and offsets it with rounded corners; the benchmark's text is horizontal,
so the axis-aligned bounding box of the region is that rectangle, and an offset rectangle's
minimum-area rectangle is the rectangle grown by the offset on every side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


def ctc_decode(scores: np.ndarray) -> list[tuple[int, ...]]:
    """Greedy CTC: per line, the argmax indices with repeats collapsed and blanks (0) removed."""
    best = np.asarray(scores).argmax(axis=-1)
    lines = []
    for row in best:
        keep = np.ones(row.shape, bool)
        keep[1:] = row[1:] != row[:-1]
        lines.append(tuple(int(i) for i in row[keep & (row != 0)]))
    return lines


def edit_distance(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def text_agreement(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> dict[str, float]:
    """Line and character agreement of the decoded text (the model's single output)."""
    (name,) = reference
    ref_lines, cand_lines = ctc_decode(reference[name]), ctc_decode(candidate[name])
    same = [r == c for r, c in zip(ref_lines, cand_lines)]
    errors = sum(edit_distance(r, c) for r, c in zip(ref_lines, cand_lines))
    length = sum(max(len(r), 1) for r in ref_lines)
    return {"text_agreement": float(np.mean(same)), "char_agreement": max(0.0, 1.0 - errors / length)}


@dataclass(frozen=True)
class DBSettings:
    """PaddleOCR's DB post-processing defaults (``det_db_thresh``, ``det_db_box_thresh``, ...)."""

    threshold: float = 0.3
    box_threshold: float = 0.6
    unclip_ratio: float = 1.5
    min_size: float = 3.0


def db_boxes(prob: np.ndarray, settings: DBSettings = DBSettings()) -> list[Box]:
    """Text boxes from one ``[H, W]`` DB probability map, as PP-OCR's post-processing finds them.

    Coordinates follow OpenCV's contours: a region spanning pixel columns ``a .. b`` is ``b - a``
    wide (pixel centres). The unclipped box is clipped to the image.
    """
    from scipy import ndimage

    height, width = prob.shape
    labels, _ = ndimage.label(prob > settings.threshold, structure=np.ones((3, 3), bool))
    boxes = []
    for rows, cols in ndimage.find_objects(labels):
        x0, x1, y0, y1 = cols.start, cols.stop - 1, rows.start, rows.stop - 1
        w, h = x1 - x0, y1 - y0
        if min(w, h) < settings.min_size:
            continue
        if prob[y0 : y1 + 1, x0 : x1 + 1].mean() < settings.box_threshold:
            continue
        grow = w * h * settings.unclip_ratio / (2 * (w + h))
        if min(w, h) + 2 * grow < settings.min_size + 2:
            continue
        boxes.append(
            (max(x0 - grow, 0.0), max(y0 - grow, 0.0), min(x1 + grow, float(width)), min(y1 + grow, float(height)))
        )
    return boxes


def box_iou(a: Box, b: Box) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def matched_boxes(predicted: list[Box], truth: list[Box], min_iou: float = 0.5) -> int:
    """One-to-one matches at IoU >= ``min_iou``, the pairs taken by decreasing IoU."""
    pairs = sorted(
        ((box_iou(p, t), i, j) for i, p in enumerate(predicted) for j, t in enumerate(truth)), reverse=True
    )
    used_p: set[int] = set()
    used_t: set[int] = set()
    for iou, i, j in pairs:
        if iou < min_iou:
            break
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
    return len(used_p)


def detection_scores(predicted: list[list[Box]], truth: list[list[Box]]) -> dict[str, float]:
    """Precision, recall and hmean over all pages (counts summed before dividing, as ICDAR does)."""
    matched = sum(matched_boxes(p, t) for p, t in zip(predicted, truth))
    n_pred, n_true = sum(map(len, predicted)), sum(map(len, truth))
    precision = matched / n_pred if n_pred else 0.0
    recall = matched / n_true if n_true else 0.0
    hmean = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "hmean": hmean}
