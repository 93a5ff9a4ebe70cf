"""Mask arithmetic of the detector-tracker merge, in numpy and OpenCV.

These are the host-side steps of transformers' `Sam3VideoModel` (mask IoU, detection NMS,
hole filling, non-overlap constraints) written for arrays of mask logits. transformers
runs NMS and hole filling only when the optional hub `kernels` package is installed (it
downloads a CUDA kernel); without it they are skipped. Here they always work, and the
streaming options can switch them off to reproduce a plain transformers install.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..resample import resize

NO_OBJ_LOGIT = -10.0  # what the merge writes into suppressed masks (sigmoid(-10) = 4.5e-5)


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of boolean masks a (N, H, W) and b (M, H, W); 0 where both are empty."""
    fa = a.reshape(len(a), int(np.prod(a.shape[1:]))).astype(np.float32)
    fb = b.reshape(len(b), int(np.prod(b.shape[1:]))).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return inter / np.maximum(union, 1.0)


def nms_masks(probs: np.ndarray, mask_logits: np.ndarray, prob_threshold: float, iou_threshold: float) -> np.ndarray:
    """Greedy mask NMS: (Q,) bool, True for detections above `prob_threshold` that survive.

    Detections are visited by decreasing probability (ties: lower query first); each kept
    one suppresses the remaining ones whose mask IoU with it exceeds `iou_threshold`.
    """
    keep = np.zeros(len(probs), bool)
    valid = np.flatnonzero(probs > prob_threshold)
    if valid.size == 0:
        return keep
    order = valid[np.argsort(-probs[valid], kind="stable")]
    ious = mask_iou(mask_logits[order] > 0, mask_logits[order] > 0)
    alive = np.ones(len(order), bool)
    for i in range(len(order)):
        if not alive[i]:
            continue
        keep[order[i]] = True
        alive[i + 1 :] &= ious[i, i + 1 :] <= iou_threshold
    return keep


def _component_areas(binary: np.ndarray) -> np.ndarray:
    """Per pixel, the area of its 8-connected component (0 outside the foreground)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    areas = stats[:, cv2.CC_STAT_AREA].copy()
    areas[0] = 0  # label 0 is the complement
    return areas[labels] if count > 1 else np.zeros(binary.shape, np.int64)


def fill_holes(mask_logits: np.ndarray, max_area: int, *, fill: bool = True, remove_sprinkles: bool = True) -> np.ndarray:
    """`fill_holes_in_mask_scores` for (N, H, W) logits, 8-connectivity.

    Background components of at most `max_area` pixels become foreground (logit 0.1);
    then foreground components no larger than min(max_area, half the mask's area) become
    background (logit -0.1), which removes sprinkles but keeps tiny real objects.
    """
    if max_area <= 0 or mask_logits.size == 0:
        return mask_logits
    out = mask_logits.astype(np.float32, copy=True)
    for i in range(len(out)):
        if fill:
            bg = out[i] <= 0
            out[i] = np.where(bg & (_component_areas(bg) <= max_area), np.float32(0.1), out[i])
        if remove_sprinkles:
            fg = out[i] > 0
            limit = min(int(fg.sum()) // 2, max_area)
            areas = _component_areas(fg)
            out[i] = np.where(fg & (areas <= limit), np.float32(-0.1), out[i])
    return out


def pixelwise_non_overlap(mask_logits: np.ndarray) -> np.ndarray:
    """Keep each pixel only in the highest-scoring object; clamp the others to <= -10."""
    if len(mask_logits) <= 1:
        return mask_logits
    winner = np.argmax(mask_logits, axis=0)
    keep = winner[None] == np.arange(len(mask_logits))[:, None, None]
    return np.where(keep, mask_logits, np.minimum(mask_logits, NO_OBJ_LOGIT)).astype(np.float32)


def suppress_shrunk(mask_logits: np.ndarray, groups: np.ndarray, shrink_threshold: float = 0.3) -> np.ndarray:
    """Within each prompt group, objects that lose over 70 % of their area to the non-overlap
    constraint are suppressed entirely (`_suppress_object_pw_area_shrinkage`)."""
    out = mask_logits.copy()
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        if len(idx) <= 1:
            continue
        before = np.maximum((out[idx] > 0).sum(axis=(1, 2)), 1)
        after = (pixelwise_non_overlap(out[idx]) > 0).sum(axis=(1, 2))
        shrunk = idx[after / before < shrink_threshold]
        out[shrunk] = np.minimum(out[shrunk], NO_OBJ_LOGIT)
    return out


def object_wise_non_overlap(masks: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per prompt group, a pixel claimed by several objects goes to the highest score (ties:
    the first object). (N, H, W) bool -> bool. The video processor's last step."""
    out = masks.copy()
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        if len(idx) <= 1:
            continue
        claim = np.where(masks[idx], scores[idx, None, None], 0.0)
        winner = np.argmax(claim, axis=0)
        out[idx] = masks[idx] & (winner[None] == np.arange(len(idx))[:, None, None])
    return out


def meta_new_object_memory(
    det_logits: np.ndarray, video_hw: tuple[int, int], image_size: int, memory_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """What Meta's video predictor encodes into memory for objects added on one frame.

    det_logits (n, m, m): the new objects' detection mask logits; video_hw: the frame's size.
    Returns (memory encoder input (n, 1, M, M) for its sigmoid path, object score logits (n,)).

    Meta (`Sam3VideoBase._tracker_add_new_objects` -> `add_new_mask` ->
    `propagate_in_video_preflight`) thresholds the logits at 0 after a bilinear resize to the
    tracker's input mask size M, keeps the mask at video resolution (antialiased resize,
    > 0.5) as +-1024 logits, resizes those to m (antialiased) and to the image size, applies
    the non-overlap constraint among the objects added together, and encodes the mask
    binarised at the image size, scaled to +-10 before the memory encoder's own antialiased
    resize to M. The binary mask resized to M is a probability map p; the memory encoder
    graph applies sigmoid to its input, so p is passed as its logit (clipped to +-88, where
    float32 sigmoid gives 0 and 1 exactly). The score is +10 for a non-empty mask at M, else
    -10 (`_use_mask_as_output`). tests/tracker/test_meta_tracker.py compares this with the
    memory-encoder input Meta's code builds.
    """
    n = len(det_logits)
    h, w = int(video_hw[0]), int(video_hw[1])
    m = det_logits.shape[-1]
    inputs = resize(det_logits, (memory_size, memory_size), axes=(1, 2), antialias=False) > 0
    scores = np.where(inputs.any(axis=(1, 2)), 10.0, -10.0).astype(np.float32)
    video = resize(inputs.astype(np.float32), (h, w), axes=(1, 2), antialias=True) > 0.5
    low = resize(np.where(video, 1024.0, -1024.0).astype(np.float32), (m, m), axes=(1, 2), antialias=True)
    high = resize(low, (image_size, image_size), axes=(1, 2), antialias=False)
    if n > 1:
        high = pixelwise_non_overlap(high)
    prob = resize((high > 0).astype(np.float32), (memory_size, memory_size), axes=(1, 2), antialias=True)
    prob = np.clip(prob, 0.0, 1.0)  # a resize's float rounding may step past 1 (log1p would give NaN)
    with np.errstate(divide="ignore"):
        logit = np.log(prob) - np.log1p(-prob)
    return np.clip(logit, -88.0, 88.0).astype(np.float32)[:, None], scores


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """(N, 4) float32 xyxy boxes around boolean masks (inclusive pixel indices; zeros if empty)."""
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
        if ys.size:
            boxes[i] = (xs[0], ys[0], xs[-1], ys[-1])
    return boxes


def to_bfloat16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even like torch."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return (rounded >> np.uint32(16)).astype(np.uint16)


def from_bfloat16(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)
