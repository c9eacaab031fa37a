"""The DB text-detection score of scripts/ocr_metrics.py on probability maps built like DB's labels."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from ocr_metrics import box_iou, db_boxes, detection_scores  # noqa: E402


def shrunk(box):
    """The box shrunk by DB's training rule (offset area * (1 - 0.4**2) / perimeter, rounded)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    d = int(round(w * h * (1 - 0.4**2) / (2 * (w + h))))
    return x0 + d, y0 + d, x1 - d, y1 - d


def db_map(boxes, shape=(160, 320), value=0.9):
    """A map that marks each box shrunk, as DB's labels do."""
    prob = np.full(shape, 0.05, np.float32)
    for box in boxes:
        x0, y0, x1, y1 = shrunk(box)
        prob[y0:y1, x0:x1] = value
    return prob


def test_unclip_grows_the_shrunk_region_back_to_the_text_box():
    truth = [(20, 10, 140, 50), (30, 90, 300, 140)]
    found = db_boxes(db_map(truth))
    assert len(found) == 2
    for box in truth:
        best = max(box_iou(box, f) for f in found)
        assert best >= 0.5 > box_iou(box, shrunk(box)) + 0.2
    assert detection_scores([found], [truth]) == pytest.approx({"precision": 1.0, "recall": 1.0, "hmean": 1.0})


def test_weak_and_tiny_regions_are_not_boxes():
    prob = db_map([(20, 10, 140, 50)])
    prob[100:130, 20:200] = 0.45  # above the 0.3 binarization, below the 0.6 box score
    prob[100:102, 250:300] = 0.95  # 2 px high
    assert len(db_boxes(prob)) == 1


def test_matching_is_one_to_one_at_iou_half():
    truth = [[(0, 0, 100, 20), (0, 40, 100, 60)]]
    predicted = [[(0, 0, 100, 20), (2, 0, 100, 20), (0, 40, 30, 60)]]  # a duplicate, and a box at IoU 0.3
    scores = detection_scores(predicted, truth)
    assert scores["precision"] == pytest.approx(1 / 3)
    assert scores["recall"] == pytest.approx(1 / 2)
    assert scores["hmean"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
