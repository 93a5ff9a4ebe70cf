"""Targets the way SAM3's detector is supervised: instances, their boxes and masks, padded to N_q.

For one (image, concept) triplet the concept's pixels become instances:

* `components`: each 8-connected component of the concept's mask is one instance (polyps,
  lesions, nuclei: the detector finds every instance and the top-scoring one is returned);
* `semantic`: the concept's whole mask is one instance (anatomy such as "brain" or
  "frontal lobe", where the protocol's single top-1 mask must cover both hemispheres);
* `labels`: the dataset gives instance ids (mask value = instance id).

Boxes are derived from the instance masks in normalised image coordinates, so the
stretch-resize to the model's square input does not change them. Masks are resampled to the
mask head's resolution (4x the ViT token grid, 288 px for SAM3) by area averaging and
thresholded at 0.5; the losses compare them with the head's logits at that resolution.

Per image the boxes are padded to the model's N_q queries (200 for SAM3) with a validity
flag; an image with more instances than queries keeps the N_q largest (logged). Masks stay
packed (one row per real instance) to keep memory independent of N_q.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import torch

log = logging.getLogger(__name__)


def instance_masks(mask: np.ndarray, mode: str, *, instance_ids: np.ndarray | None = None, min_area: int = 0) -> np.ndarray:
    """(n, H, W) bool instances of one concept from its (H, W) bool mask, largest first."""
    mask = np.asarray(mask, bool)
    if mode == "semantic":
        parts = [mask] if mask.any() else []
    elif mode == "components":
        count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        parts = [labels == k for k in range(1, count)]
    elif mode == "labels":
        if instance_ids is None:
            raise ValueError("instance mode 'labels' needs instance_ids")
        ids = np.unique(instance_ids[mask])
        parts = [(instance_ids == k) & mask for k in ids if k != 0]
    else:
        raise ValueError(f"unknown instance mode {mode!r}")
    parts = [p for p in parts if int(p.sum()) >= max(min_area, 1)]
    parts.sort(key=lambda p: -int(p.sum()))  # stable: equal areas keep label order
    if not parts:
        return np.zeros((0, *mask.shape), bool)
    return np.stack(parts)


def boxes_from_masks(masks: np.ndarray) -> np.ndarray:
    """(n, H, W) bool -> (n, 4) float32 normalised xyxy: the pixel-edge bounds of each mask."""
    n, h, w = masks.shape
    out = np.zeros((n, 4), np.float32)
    for i in range(n):
        rows = np.flatnonzero(masks[i].any(axis=1))
        cols = np.flatnonzero(masks[i].any(axis=0))
        if rows.size == 0:
            continue
        out[i] = (cols[0] / w, rows[0] / h, (cols[-1] + 1) / w, (rows[-1] + 1) / h)
    return out


def resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
    """(n, H, W) bool -> (n, size, size) bool: area-averaged coverage >= 0.5."""
    if masks.shape[0] == 0:
        return np.zeros((0, size, size), bool)
    if masks.shape[1:] == (size, size):
        return masks.astype(bool)
    out = np.empty((masks.shape[0], size, size), bool)
    for i, m in enumerate(masks):
        interp = cv2.INTER_AREA if m.shape[0] >= size and m.shape[1] >= size else cv2.INTER_LINEAR
        out[i] = cv2.resize(m.astype(np.float32), (size, size), interpolation=interp) >= 0.5
    return out


@dataclass
class ImageTarget:
    """Supervision of one (image, concept) triplet; n = 0 for a negative triplet.

    boxes_xyxy  float32 (n, 4) normalised
    masks       bool (n, m, m) at the mask head's resolution
    semantic    bool (m, m): union of the instances
    """

    boxes_xyxy: np.ndarray
    masks: np.ndarray
    semantic: np.ndarray

    @property
    def count(self) -> int:
        return int(self.boxes_xyxy.shape[0])


def build_target(instances: np.ndarray, mask_size: int, max_instances: int) -> ImageTarget:
    """Target of one triplet from its (n, H, W) instances (largest first, see `instance_masks`)."""
    if instances.shape[0] > max_instances:
        log.warning("%d instances in one image, more than the model's %d queries: keeping the largest", instances.shape[0], max_instances)
        instances = instances[:max_instances]
    boxes = boxes_from_masks(instances)
    small = resize_masks(instances, mask_size)
    semantic = small.any(axis=0) if small.shape[0] else np.zeros((mask_size, mask_size), bool)
    return ImageTarget(boxes, small, semantic)


@dataclass
class BatchTargets:
    """Targets of a batch of B triplets.

    boxes_xyxy  float (B, Nq, 4), zero rows where `valid` is False (padding to N_q queries)
    valid       bool (B, Nq)
    counts      long (B,): instances per image
    masks       float (N, m, m): the real instances of all images, in batch order
    semantic    float (B, m, m)
    """

    boxes_xyxy: torch.Tensor
    valid: torch.Tensor
    counts: torch.Tensor
    masks: torch.Tensor
    semantic: torch.Tensor

    @property
    def present(self) -> torch.Tensor:
        """(B,) float: 1 where the concept is in the image."""
        return (self.counts > 0).float()

    def packed_index(self, batch_idx: torch.Tensor, tgt_idx: torch.Tensor) -> torch.Tensor:
        """Row of `masks` for instance tgt_idx of image batch_idx."""
        offsets = torch.cumsum(self.counts, 0) - self.counts
        return offsets[batch_idx] + tgt_idx

    def to(self, device: torch.device) -> BatchTargets:
        return BatchTargets(
            *(t.to(device, non_blocking=True) for t in (self.boxes_xyxy, self.valid, self.counts, self.masks, self.semantic))
        )


def collate_targets(targets: list[ImageTarget], num_queries: int) -> BatchTargets:
    b = len(targets)
    size = targets[0].semantic.shape[-1]
    boxes = torch.zeros(b, num_queries, 4)
    valid = torch.zeros(b, num_queries, dtype=torch.bool)
    counts = torch.tensor([t.count for t in targets], dtype=torch.long)
    for i, t in enumerate(targets):
        boxes[i, : t.count] = torch.from_numpy(t.boxes_xyxy)
        valid[i, : t.count] = True
    masks = [torch.from_numpy(t.masks) for t in targets if t.count]
    packed = torch.cat(masks).float() if masks else torch.zeros(0, size, size)
    semantic = torch.from_numpy(np.stack([t.semantic for t in targets])).float()
    return BatchTargets(boxes, valid, counts, packed, semantic)
