"""Dice and IoU in numpy: one definition shared by evaluation, training and accuracy gates."""

from __future__ import annotations

import numpy as np


def dice(pred: np.ndarray, target: np.ndarray, *, empty: float = 1.0) -> float:
    """2|A∩B| / (|A| + |B|) of two boolean masks; `empty` when both are empty."""
    p, t = np.asarray(pred, bool), np.asarray(target, bool)
    if p.shape != t.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {t.shape}")
    total = int(p.sum()) + int(t.sum())
    return empty if total == 0 else 2.0 * int(np.logical_and(p, t).sum()) / total


def iou(pred: np.ndarray, target: np.ndarray, *, empty: float = 1.0) -> float:
    """|A∩B| / |A∪B| of two boolean masks; `empty` when both are empty."""
    p, t = np.asarray(pred, bool), np.asarray(target, bool)
    if p.shape != t.shape:
        raise ValueError(f"mask shapes differ: {p.shape} vs {t.shape}")
    union = int(np.logical_or(p, t).sum())
    return empty if union == 0 else int(np.logical_and(p, t).sum()) / union


def per_label(pred_labels: np.ndarray, target_labels: np.ndarray, labels: list[int]) -> dict[int, tuple[float, float]]:
    """(Dice, IoU) per label value of two label maps (multi-class evaluation)."""
    return {k: (dice(pred_labels == k, target_labels == k), iou(pred_labels == k, target_labels == k)) for k in labels}
