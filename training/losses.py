"""The set-prediction objective of Medical SAM3 (paper Eq. 2-4, Table 2).

    L_total = sum over decoder layers l of [L_find(pi_l) + lambda_o2m * L_find(pi_o2m_l)] + L_seg

Every decoder layer is supervised (SAM3's auxiliary losses; `loss.find.aux_layers`), each
with its own matching; masks exist for the last layer only, so L_seg uses its matching.

L_find(pi) = lambda_ce * L_ce + lambda_pr * L_pres + lambda_l1 * L_l1 + lambda_g * L_giou

* L_ce, the focal-style classification term (SAM3's IoU-aware BCE): a matched query's target
  is t = max(p^alpha_cls * IoU^(1 - alpha_cls), 0.01) (detached), weighted by the positive
  weight; an unmatched query's BCE towards 0 is scaled by p^gamma_cls. Images without the
  concept contribute no L_ce (the presence term covers them). Reduced as a mean over
  B x max(N_q, padded N_q = 200) query slots, so a model with fewer queries keeps the scale.
* L_pres: binary focal loss of the presence logit against "the concept is in the image",
  mean over images. The one-to-many branch has no presence term (as in SAM3).
* L_l1 on (cx, cy, w, h) and L_giou = 1 - GIoU on matched pairs only, summed and divided by
  the batch-wise matched instance count N.

L_seg = lambda_f * focal(alpha_seg, gamma_seg) + lambda_d * dice + lambda_sp * L_seg-pres

* instance part: the matched queries' mask logits against their instance masks (focal as
  the mean over pixels, dice = 1 - (2 sum(s t) + 1) / (sum s + sum t + 1), s = sigmoid),
  summed and divided by N;
* semantic part: the semantic head against the union of the instances, on images that
  contain the concept, summed and divided by their count;
* L_seg-pres: BCE of the presence logit against "the concept is in the image" (SAM3's
  semantic-segmentation presence term; transformers' Sam3 has one presence logit).

On normalisation: the paper summarises that all terms are normalised by the batch-wise
matched instance count. In SAM3's implementation, whose Table 2 weights these are, that holds
for the box and instance-mask terms; the classification term is a per-slot mean and the
presence terms per-image means. We follow the implementation, because the weights only give
a balanced objective with it. Under DDP the counts N are summed over all processes and
divided by the world size, so every process uses the same normaliser.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .boxes import paired_iou_giou, xyxy_to_cxcywh
from .config import LossConfig
from .matcher import HungarianMatcher, Match, OneToManyMatcher
from .targets import BatchTargets


@dataclass
class DetectorOutputs:
    """What the training wrapper returns for a batch of B triplets (L decoder layers, Q queries).

    logits      (L, B, Q) per-query classification logits of every decoder layer
    boxes_xyxy  (L, B, Q, 4) normalised boxes of every decoder layer
    presence    (L, B) presence logits of every decoder layer
    pred_masks  (B, Q, m, m) mask logits of the last layer
    semantic    (B, 1, m, m) semantic-segmentation logits
    o2m_logits, o2m_boxes_xyxy  the one-to-many branch (same shapes), or None
    """

    logits: torch.Tensor
    boxes_xyxy: torch.Tensor
    presence: torch.Tensor
    pred_masks: torch.Tensor
    semantic: torch.Tensor
    o2m_logits: torch.Tensor | None = None
    o2m_boxes_xyxy: torch.Tensor | None = None


@dataclass(frozen=True)
class Normalizers:
    """Batch-wise counts (averaged over DDP processes), each clamped to >= 1."""

    instances: float
    positive_images: float

    @staticmethod
    def local(targets: BatchTargets) -> Normalizers:
        return Normalizers(max(float(targets.counts.sum()), 1.0), max(float((targets.counts > 0).sum()), 1.0))


def sigmoid_focal(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Element-wise binary focal loss; alpha < 0 disables the class weighting."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def dice_per_row(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N, ...) -> (N,) 1 - (2 sum(s t) + 1) / (sum s + sum t + 1) with s = sigmoid(logits)."""
    s, t = logits.sigmoid().flatten(1), targets.flatten(1)
    return 1 - (2 * (s * t).sum(1) + 1) / (s.sum(1) + t.sum(1) + 1)


class SetCriterion:
    def __init__(self, cfg: LossConfig | None = None) -> None:
        self.cfg = cfg or LossConfig()
        self.matcher = HungarianMatcher(self.cfg.matcher)
        self.o2m_matcher = OneToManyMatcher(self.cfg.o2m)

    # ---- L_find ------------------------------------------------------------------------------
    def find_terms(
        self,
        logits: torch.Tensor,
        boxes_xyxy: torch.Tensor,
        presence: torch.Tensor | None,
        match: Match,
        targets: BatchTargets,
        norm: Normalizers,
    ) -> dict[str, torch.Tensor]:
        """Unweighted L_ce, L_pres, L_l1, L_giou for one layer. logits (B, Q), boxes (B, Q, 4)."""
        f = self.cfg.find
        logits, boxes_xyxy = logits.float(), boxes_xyxy.float()
        b_idx, q_idx, t_idx = (m.to(logits.device) for m in match)
        prob = logits.sigmoid()
        src_boxes = boxes_xyxy[b_idx, q_idx]
        tgt_boxes = targets.boxes_xyxy[b_idx, t_idx].float()
        iou, giou = paired_iou_giou(src_boxes, tgt_boxes)
        matched = torch.zeros_like(logits)
        matched[b_idx, q_idx] = 1.0
        with torch.no_grad():
            soft = torch.zeros_like(logits)
            soft[b_idx, q_idx] = (prob[b_idx, q_idx] ** f.alpha * iou.clamp(min=0) ** (1 - f.alpha)).clamp(min=0.01)
        pos = F.binary_cross_entropy_with_logits(logits, soft, reduction="none") * matched * f.pos_weight
        neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none") * (1 - matched) * prob**f.gamma
        per_slot = (pos + neg) * targets.present[:, None]
        b, q = logits.shape
        terms = {"ce": per_slot.sum() / (b * max(q, f.pad_queries))}
        if presence is not None:
            terms["presence"] = sigmoid_focal(presence.float(), targets.present, f.presence_alpha, f.presence_gamma).mean()
        l1 = (xyxy_to_cxcywh(src_boxes) - xyxy_to_cxcywh(tgt_boxes)).abs().sum()
        terms["l1"] = l1 / norm.instances
        terms["giou"] = (1 - giou).sum() / norm.instances
        return terms

    def find_loss(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        f = self.cfg.find
        total = f.ce * terms["ce"] + f.l1 * terms["l1"] + f.giou * terms["giou"]
        if "presence" in terms:
            total = total + f.presence * terms["presence"]
        return total

    # ---- L_seg -------------------------------------------------------------------------------
    def seg_terms(
        self,
        pred_masks: torch.Tensor,
        semantic: torch.Tensor,
        presence: torch.Tensor,
        match: Match,
        targets: BatchTargets,
        norm: Normalizers,
    ) -> dict[str, torch.Tensor]:
        """Unweighted focal / dice (instance and semantic parts) and seg-presence terms."""
        s = self.cfg.seg
        terms: dict[str, torch.Tensor] = {}
        zero = pred_masks.float().sum() * 0.0  # keeps the graph connected when a part is empty
        if s.instance:
            b_idx, q_idx, t_idx = (m.to(pred_masks.device) for m in match)
            src = pred_masks[b_idx, q_idx].float()
            tgt = targets.masks[targets.packed_index(b_idx, t_idx)].float()
            if src.shape[0]:
                terms["mask_focal"] = sigmoid_focal(src, tgt, s.alpha, s.gamma).flatten(1).mean(1).sum() / norm.instances
                terms["mask_dice"] = dice_per_row(src, tgt).sum() / norm.instances
            else:
                terms["mask_focal"] = terms["mask_dice"] = zero
        if s.semantic:
            keep = targets.counts > 0
            sem = semantic[:, 0].float()[keep]
            tgt = targets.semantic[keep].float()
            if sem.shape[0]:
                terms["sem_focal"] = sigmoid_focal(sem, tgt, s.alpha, s.gamma).flatten(1).mean(1).sum() / norm.positive_images
                terms["sem_dice"] = dice_per_row(sem, tgt).sum() / norm.positive_images
            else:
                terms["sem_focal"] = terms["sem_dice"] = zero
        terms["presence"] = F.binary_cross_entropy_with_logits(presence.float(), targets.present)
        return terms

    def seg_loss(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        s = self.cfg.seg
        focal = terms.get("mask_focal", 0.0) + terms.get("sem_focal", 0.0)
        dice = terms.get("mask_dice", 0.0) + terms.get("sem_dice", 0.0)
        return s.focal * focal + s.dice * dice + s.presence * terms["presence"]

    # ---- total ------------------------------------------------------------------------------
    def __call__(self, out: DetectorOutputs, targets: BatchTargets, norm: Normalizers) -> tuple[torch.Tensor, dict[str, float]]:
        """The total loss and its parts (last-layer terms, unweighted, plus weighted sums) for logs."""
        layers = out.logits.shape[0]
        use = range(layers) if self.cfg.find.aux_layers else [layers - 1]
        total = out.logits.new_zeros((), dtype=torch.float32)
        log: dict[str, float] = {}
        last_match: Match | None = None
        o2m = self.cfg.o2m.enabled and out.o2m_logits is not None
        for layer in use:
            match = self.matcher(out.logits[layer], out.boxes_xyxy[layer], targets)
            terms = self.find_terms(out.logits[layer], out.boxes_xyxy[layer], out.presence[layer], match, targets, norm)
            find = self.find_loss(terms)
            total = total + find
            if layer == layers - 1:
                last_match = match
                log.update({f"find_{k}": float(v.detach()) for k, v in terms.items()})
                log["find"] = float(find.detach())
            if o2m:
                m2 = self.o2m_matcher(out.o2m_logits[layer], out.o2m_boxes_xyxy[layer], targets)
                t2 = self.find_terms(out.o2m_logits[layer], out.o2m_boxes_xyxy[layer], None, m2, targets, norm)
                find_o2m = self.cfg.o2m.weight * self.find_loss(t2)
                total = total + find_o2m
                if layer == layers - 1:
                    log["find_o2m"] = float(find_o2m.detach())
                    log["o2m_matches"] = float(m2[0].numel())
        assert last_match is not None
        seg_terms = self.seg_terms(out.pred_masks, out.semantic, out.presence[-1], last_match, targets, norm)
        seg = self.seg_loss(seg_terms)
        total = total + seg
        log.update({f"seg_{k}": float(v.detach()) for k, v in seg_terms.items()})
        log["seg"] = float(seg.detach())
        log["total"] = float(total.detach())
        return total, log
