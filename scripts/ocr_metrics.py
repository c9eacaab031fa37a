"""Accuracy metrics for PP-OCR outputs, usable as ``trtopt build --metric scripts/ocr_metrics.py:FN``.

``text_agreement``: the recognizer's ``[N, T, classes]`` CTC output decoded greedily (argmax per
step, repeats collapsed, blank 0 dropped) and compared line by line with the reference's decoding:
``text_agreement`` is the fraction of lines decoded identically, ``char_agreement`` one minus the
edit distance over the reference's length.
"""

from __future__ import annotations

import numpy as np


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
