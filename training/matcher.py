"""Assignments of predicted queries to ground-truth instances (Medical SAM3 Table 2).

`HungarianMatcher` is SAM3's binary one-to-one matcher: per image, the cost of giving query q
instance t is

    w_cls * focal_cost(q) + w_box * |box_q - box_t|_1 (cx, cy, w, h) - w_giou * GIoU(box_q, box_t)

with focal_cost = alpha (1 - p)^gamma (-log p) - (1 - alpha) p^gamma (-log(1 - p)), p = sigmoid(logit),
and `scipy.optimize.linear_sum_assignment` picks the assignment of minimal total cost (every
instance gets one query when N_q >= instances). With `stable` the probability is first scaled by
the rescaled GIoU, (GIoU + 1) / 2, per pair (Table 2 uses stable = false).

`OneToManyMatcher` is SAM3's binary one-to-many matcher: the quality of query q for instance t
is alpha * p + (1 - alpha) * IoU(box_q, box_t); each instance takes its top-k queries whose
quality exceeds the threshold, and a query claimed by several instances stays with the one it
fits best, so every query has at most one target.

Both return (batch_idx, query_idx, target_idx) int64 tensors on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from .boxes import pairwise_iou_giou, xyxy_to_cxcywh
from .config import MatcherConfig, O2MConfig
from .targets import BatchTargets

Match = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _empty() -> Match:
    e = torch.zeros(0, dtype=torch.long)
    return e, e.clone(), e.clone()


def _per_image(
    logits: torch.Tensor,
    boxes_xyxy: torch.Tensor,
    targets: BatchTargets,
    assign: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[np.ndarray, np.ndarray]],
) -> Match:
    """Run `assign(logits (Q,), boxes (Q, 4), targets (T, 4)) -> (query rows, instance cols)` per image with instances."""
    logits, boxes = logits.detach().float().cpu(), boxes_xyxy.detach().float().cpu()
    tgt_boxes, counts = targets.boxes_xyxy.float().cpu(), targets.counts.cpu()
    parts = []
    for b in range(logits.shape[0]):
        n = int(counts[b])
        if n:
            rows, cols = assign(logits[b], boxes[b], tgt_boxes[b, :n])
            parts.append((b, rows, cols))
    return _concat(parts)


def _concat(parts: list[tuple[int, np.ndarray, np.ndarray]]) -> Match:
    if not parts:
        return _empty()
    b = np.concatenate([np.full(len(src), i, np.int64) for i, src, _ in parts])
    src = np.concatenate([s for _, s, _ in parts]).astype(np.int64)
    tgt = np.concatenate([t for _, _, t in parts]).astype(np.int64)
    return torch.from_numpy(b), torch.from_numpy(src), torch.from_numpy(tgt)


def focal_cost(logits: torch.Tensor, alpha: float, gamma: float, prob: torch.Tensor | None = None) -> torch.Tensor:
    """Focal classification cost of calling each query positive (lower is better)."""
    if prob is None:
        p = logits.sigmoid()
        log_p, log_1mp = F.logsigmoid(logits), F.logsigmoid(-logits)
    else:
        p = prob
        log_p, log_1mp = torch.log(p.clamp(min=1e-12)), torch.log((1 - p).clamp(min=1e-12))
    return -alpha * (1 - p) ** gamma * log_p + (1 - alpha) * p**gamma * log_1mp


class HungarianMatcher:
    def __init__(self, cfg: MatcherConfig | None = None) -> None:
        self.cfg = cfg or MatcherConfig()

    def cost_matrix(self, logits: torch.Tensor, boxes_xyxy: torch.Tensor, tgt_xyxy: torch.Tensor) -> torch.Tensor:
        """(Q, T) matching cost for one image: logits (Q,), boxes (Q, 4), targets (T, 4), xyxy."""
        c = self.cfg
        cost_bbox = torch.cdist(xyxy_to_cxcywh(boxes_xyxy), xyxy_to_cxcywh(tgt_xyxy), p=1)
        _, giou = pairwise_iou_giou(boxes_xyxy, tgt_xyxy)
        if c.stable:
            prob = logits.sigmoid()[:, None] * (giou + 1) / 2
            cost_class = focal_cost(logits[:, None], c.alpha, c.gamma, prob=prob)
        else:
            cost_class = focal_cost(logits, c.alpha, c.gamma)[:, None].expand_as(cost_bbox)
        return c.cost_bbox * cost_bbox + c.cost_class * cost_class - c.cost_giou * giou

    @torch.no_grad()
    def __call__(self, logits: torch.Tensor, boxes_xyxy: torch.Tensor, targets: BatchTargets) -> Match:
        """logits (B, Q), boxes (B, Q, 4) xyxy -> one query per instance."""
        return _per_image(logits, boxes_xyxy, targets, lambda lg, bx, tg: linear_sum_assignment(self.cost_matrix(lg, bx, tg).numpy()))


class OneToManyMatcher:
    def __init__(self, cfg: O2MConfig | None = None) -> None:
        self.cfg = cfg or O2MConfig()

    def quality(self, logits: torch.Tensor, boxes_xyxy: torch.Tensor, tgt_xyxy: torch.Tensor) -> torch.Tensor:
        """(Q, T) alpha * p + (1 - alpha) * IoU for one image (higher is better)."""
        iou, _ = pairwise_iou_giou(boxes_xyxy, tgt_xyxy)
        return self.cfg.alpha * logits.sigmoid()[:, None] + (1 - self.cfg.alpha) * iou

    @torch.no_grad()
    def __call__(self, logits: torch.Tensor, boxes_xyxy: torch.Tensor, targets: BatchTargets) -> Match:
        return _per_image(logits, boxes_xyxy, targets, self._assign)

    def _assign(self, logits: torch.Tensor, boxes: torch.Tensor, tgt: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        q = self.quality(logits, boxes, tgt).numpy()
        k = min(self.cfg.topk, q.shape[0])
        chosen = np.zeros_like(q, dtype=bool)
        for t in range(q.shape[1]):
            top = np.argsort(-q[:, t], kind="stable")[:k]  # ties: lower query index first
            chosen[top, t] = q[top, t] > self.cfg.threshold
        claimed = np.where(chosen, q, -np.inf)
        rows = np.flatnonzero(chosen.any(axis=1))
        cols = np.argmax(claimed[rows], axis=1)  # ties: lower instance index
        return rows, cols
