"""A stand-in for the `kernels-community/cv-utils` hub kernel that transformers' Sam3VideoModel
downloads for detection NMS and hole filling (it cannot be downloaded here, and without it
transformers silently skips both steps).

Installed into `transformers.models.sam3_video.modeling_sam3_video.cv_utils_kernel` by the
streaming parity test, so the reference runs NMS and hole filling at the same points as the
runtime. It is written independently of medsam3_rt.tracker.masks: scipy's labelling and a
plain-Python greedy NMS, so the test compares two implementations, not one with itself.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage


class CvUtilsStandIn:
    @staticmethod
    def generic_nms(ious: torch.Tensor, scores: torch.Tensor, iou_threshold: float, use_iou_matrix: bool = True) -> torch.Tensor:
        order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
        kept: list[int] = []
        for i in order:
            if all(float(ious[i, j]) <= iou_threshold for j in kept):
                kept.append(i)
        return torch.tensor(kept, dtype=torch.long)

    @staticmethod
    def cc_2d(mask: torch.Tensor, get_counts: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """8-connected labelling of (N, 1, H, W) uint8 masks; counts = component area per pixel."""
        m = mask.numpy().astype(bool)
        labels = np.zeros(m.shape, np.int32)
        counts = np.zeros(m.shape, np.int32)
        for i in range(m.shape[0]):
            lab, n = ndimage.label(m[i, 0], structure=np.ones((3, 3), int))
            sizes = np.bincount(lab.ravel(), minlength=n + 1)
            sizes[0] = 0
            labels[i, 0] = lab
            counts[i, 0] = sizes[lab]
        return torch.from_numpy(labels), torch.from_numpy(counts)
