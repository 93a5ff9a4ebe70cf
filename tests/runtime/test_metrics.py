"""Dice/IoU against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from medsam3_rt.metrics import dice, iou, per_label


def test_hand_computed() -> None:
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2, :2] = True  # 4 pixels
    b[1:3, 1:3] = True  # 4 pixels, 1 shared
    assert dice(a, b) == pytest.approx(2 * 1 / 8)
    assert iou(a, b) == pytest.approx(1 / 7)
    assert dice(a, a) == 1.0 and iou(a, ~a) == 0.0


def test_empty_masks_and_shapes() -> None:
    z = np.zeros((3, 3), bool)
    assert dice(z, z) == 1.0 and iou(z, z, empty=0.0) == 0.0
    with pytest.raises(ValueError):
        dice(z, np.zeros((2, 2), bool))


def test_per_label() -> None:
    p = np.array([[1, 1, 2], [0, 2, 2]])
    t = np.array([[1, 0, 2], [0, 2, 2]])
    res = per_label(p, t, [1, 2])
    assert res[1] == (pytest.approx(2 / 3), pytest.approx(1 / 2)) and res[2] == (1.0, 1.0)
