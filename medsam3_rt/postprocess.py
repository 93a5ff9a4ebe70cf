"""Detector outputs -> masks, scores, boxes and a label map at input resolution (paper Sec. 4.2).

For every prompt the highest-confidence query is kept (score = sigmoid(logit) x
sigmoid(presence)); its mask probabilities are upsampled bilinearly to the input size and
thresholded, exactly as transformers' `post_process_instance_segmentation` does. Prompts are
then combined into one non-overlapping label map by pixel-wise maximal mask probability.
"""

from __future__ import annotations

import numpy as np

from .resample import resize


def sigmoid(x: np.ndarray) -> np.ndarray:
    # exp of a negative argument only: no overflow warnings for large |x|.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)


def detection_scores(pred_logits: np.ndarray, presence_logits: np.ndarray) -> np.ndarray:
    """(P, Q) probabilities: per-query confidence times the prompt's presence probability."""
    return sigmoid(pred_logits) * sigmoid(presence_logits)


def top1(scores: np.ndarray) -> np.ndarray:
    """(P,) index of the best query per prompt; ties go to the lowest index (deterministic)."""
    return np.argmax(scores, axis=1)


def upsample_probabilities(mask_logits: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """(P, m, m) logits -> (P, H, W) probabilities, bilinear on sigmoid like transformers."""
    probs = sigmoid(mask_logits)
    return resize(probs, out_hw, axes=(1, 2), antialias=False)


def scale_boxes(boxes: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Normalised xyxy -> pixel xyxy for an image of `out_hw`."""
    h, w = out_hw
    return (boxes * np.asarray([w, h, w, h], np.float32)).astype(np.float32)


def combine(probs: np.ndarray, keep: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Binary masks (P, H, W) and a uint8 label map (0 = background, k = k-th prompt).

    A pixel is labelled with the prompt whose mask covers it with the highest probability;
    prompts with keep[p] False contribute an empty mask.
    """
    masks = (probs > threshold) & keep[:, None, None]
    if probs.shape[0] == 0:
        return masks, np.zeros(probs.shape[1:], np.uint8)
    conf = np.where(masks, probs, -1.0)
    best = np.argmax(conf, axis=0)
    label = np.where(masks.any(axis=0), best + 1, 0).astype(np.uint8)
    return masks, label
