"""Human-readable overlays: mask contours and a translucent fill over the image, with a legend."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .preprocess import IntensityWindow, to_rgb

# Colour-blind-friendly palette (Okabe-Ito), RGB.
PALETTE = (
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
    (255, 255, 255),
)


def colour(k: int) -> tuple[int, int, int]:
    return PALETTE[k % len(PALETTE)]


def display_rgb(image: np.ndarray, window: IntensityWindow | None = None) -> np.ndarray:
    """uint8 RGB rendering of any supported input (same intensity rule as the model input)."""
    rgb, _ = to_rgb(image, window)
    return np.ascontiguousarray(np.clip(rgb, 0, 255).astype(np.uint8))


def draw_overlay(
    image: np.ndarray,
    label_map: np.ndarray,
    labels: Sequence[str],
    *,
    window: IntensityWindow | None = None,
    alpha: float = 0.3,
) -> np.ndarray:
    """RGB uint8 image with each label's region filled and outlined, and a legend (top left).

    `labels[k - 1]` names label value k.
    """
    canvas = display_rgb(image, window).copy()
    h, w = canvas.shape[:2]
    thickness = max(1, round(min(h, w) / 256))
    fill = canvas.astype(np.float32)
    for k in range(1, len(labels) + 1):
        region = label_map == k
        if region.any():
            fill[region] = (1 - alpha) * fill[region] + alpha * np.asarray(colour(k - 1), np.float32)
    canvas = fill.astype(np.uint8)
    for k in range(1, len(labels) + 1):
        region = (label_map == k).astype(np.uint8)
        if region.any():
            contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(canvas, contours, -1, colour(k - 1), thickness)
    _legend(canvas, labels)
    return canvas


def _legend(canvas: np.ndarray, labels: Sequence[str]) -> None:
    h, w = canvas.shape[:2]
    scale = max(0.35, min(h, w) / 900)
    line = int(22 * scale / 0.6)
    for k, text in enumerate(labels):
        ascii_text = text.encode("ascii", "replace").decode()  # OpenCV's Hershey fonts are ASCII-only
        y = 6 + line * (k + 1)
        if y > h:
            break
        cv2.rectangle(canvas, (6, y - line + 6), (6 + line - 8, y - 2), colour(k), -1)
        org = (6 + line, y - 4)
        cv2.putText(canvas, ascii_text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(canvas, ascii_text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
