"""The SAM3 tracker unrolled over a clip, differentiably, with the graphs the runtime exports.

A clip is propagated exactly as `medsam3_rt.tracker` streams it: frame 0 is a new object
from its mask (`TrackerInitGraph`, what a detection or a user mask does), its memory is
encoded (`MemoryEncoderGraph`, binarised), and every later frame runs one memory-conditioned
step (`TrackerStepGraph`) over the conditioning memory, the last `num_maskmem - 1` frames'
memories and the last `max_object_pointers - 1` object pointers, then encodes its own mask
(sigmoid). The graphs are the export's wrappers around transformers' own modules, so what is
trained here is what the exported tracker runs; gradients flow through the memories, as in
SAM2's training (no truncation inside a clip).

Losses per tracked frame (SAM2's video recipe): focal (alpha 0.25, gamma 2) + dice on the
multimask output closest to the truth (the others are not pushed), L1 between each
predicted IoU and the real IoU of its mask, and binary cross-entropy of the object-score
logit against "object present". Mask and IoU terms only count on frames where the object is
present. The detector's ViT is frozen (its features are computed without gradients); the
tracker neck and the whole tracker train.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from medsam3_export.graphs.image_backbone import tracker_features
from medsam3_export.graphs.tracker import NO_OBJ_SCORE, MemoryEncoderGraph, TrackerInitGraph, TrackerStepGraph
from torch import nn
from torch.nn import functional as F

from .losses import dice_per_row, sigmoid_focal


@dataclass(frozen=True)
class TrackerLossWeights:
    """SAM2's video-training weights (sam2.1 training config: mask 20, dice 1, iou 1, class 1)."""

    focal: float = 20.0
    dice: float = 1.0
    iou: float = 1.0
    object_score: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0


@dataclass
class ClipOutput:
    """Per-frame results of one propagated clip (frame 0 is the prompt and carries no loss).

    From `TrackerTrainingModel` the tensors hold N objects (the clip's objects, tracked side by
    side as the runtime batches them); `object(i)` is object i alone, the form the losses take.
    """

    low_res: list[torch.Tensor]  # (N, 1, m, m) selected mask logits, as the runtime shows them
    all_masks: list[torch.Tensor]  # (N, 3, m, m) multimask logits of tracked frames (frame 0: empty)
    iou: list[torch.Tensor]  # (N, 3) predicted IoU
    score: list[torch.Tensor]  # (N, 1) object score logit

    @property
    def objects(self) -> int:
        return int(self.low_res[0].shape[0])

    def object(self, i: int) -> ClipOutput:
        """Object i: low_res (1, 1, m, m), all_masks (3, m, m), iou (3,), score (1,) per frame."""

        def pick(x: torch.Tensor) -> torch.Tensor:
            return x[i] if x.numel() else x

        return ClipOutput(
            [x[i : i + 1] for x in self.low_res], [pick(x) for x in self.all_masks], [pick(x) for x in self.iou], [x[i] for x in self.score]
        )


def local_memory_init(
    video: nn.Module,
    amplitude: float = 2.2,
    min_frequency: float = 0.15,
    weight_scale: float = 0.2,
    image_in_memory: float = 0.1,
    high_res: float = 0.1,
) -> list[int]:
    """Start the memory cross-attention looking at the same place in every memory frame, at the mask.

    From a random initialisation, each position's query attends almost uniformly over all
    memory positions, and the memory encoder's image features (mean |x| 3.2 on the demo
    model) outweigh its mask features (0.86), so the memory reaches the mask decoder only as
    an image-dominated average: measured on the demo model, the tracked masks hardly depend on
    the prompted object after 150 steps (they learn a location prior). Here the memory
    encoder's image projection is scaled by `image_in_memory`; the mask decoder's high-resolution
    image features (conv_s0 / conv_s1, added to the upscaled memory-conditioned embedding: mean
    |x| 1.8-2.6 against 0.3-0.9) by `high_res`, so the upscaled masks start from the memory;
    and the cross-attention's query and key projections get a constant
    bias on the rotary dimensions of high spatial frequency (and their weights are scaled
    down): with rotary position encoding, equal constant queries and keys score
    sum_d b_d^2 cos(theta_d * offset), largest at offset 0, so each position starts by reading
    the memory at its own location (a few cells wide). Training then moves freely from there;
    the architecture (and the exported graphs) are unchanged. Returns the biased dimensions.
    """
    from medsam3_export.graphs.tracker import TrackerStepGraph

    graph = TrackerStepGraph(video)
    pos = video.tracker_model.memory_attention.position_ids.to(graph.rope_cos.device)  # (HW, 2) grid positions
    cos = graph.rope_cos[0]  # (HW, head_dim): cos(theta_d * position along d's axis)
    dims: list[int] = []
    for axis in range(pos.shape[1]):
        unit = torch.zeros(pos.shape[1], dtype=pos.dtype, device=pos.device)
        unit[axis] = 1
        one = int(torch.nonzero((pos == unit).all(dim=1))[0])  # one step along this axis from the origin
        theta = torch.arccos(cos[one].clamp(-1, 1))
        dims += [d for d in range(cos.shape[1]) if float(theta[d]) >= min_frequency and d not in dims]
    with torch.no_grad():
        for conv, scale in (
            (video.tracker_model.memory_encoder.feature_projection, image_in_memory),
            (video.tracker_model.mask_decoder.conv_s0, high_res),
            (video.tracker_model.mask_decoder.conv_s1, high_res),
        ):
            conv.weight.mul_(scale)
            conv.bias.mul_(scale)
        for layer in video.tracker_model.memory_attention.layers:
            attn = layer.cross_attn_image
            for proj in (attn.q_proj, attn.k_proj):
                proj.weight.mul_(weight_scale)
                proj.bias.zero_()
                proj.bias[dims] = amplitude
    return dims


def trainable_parameters(video: nn.Module) -> list[nn.Parameter]:
    """The tracker and the tracker neck; the detector (ViT included) stays frozen."""
    params = list(video.tracker_model.parameters()) + list(video.tracker_neck.parameters())
    seen: set[int] = set()
    return [p for p in params if not (id(p) in seen or seen.add(id(p)))]


class TrackerTrainingModel(nn.Module):
    """Clip pixel_values (T, 3, S, S) + first-frame masks of N objects -> `ClipOutput` (N objects)."""

    def __init__(self, video: nn.Module) -> None:
        super().__init__()
        self.video = video
        self.init_graph = TrackerInitGraph(video)
        self.step_graph = TrackerStepGraph(video)
        self.memory_graph = MemoryEncoderGraph(video)
        cfg = video.tracker_model.config
        self.num_maskmem = int(cfg.num_maskmem)
        self.max_pointers = int(cfg.max_object_pointers_in_encoder)
        self.image_size = int(video.tracker_model.image_size)
        self._decoder_out: list = []
        video.tracker_model.mask_decoder.register_forward_hook(lambda _m, _a, out: self._decoder_out.append(out))

    @property
    def device(self) -> torch.device:
        return next(self.video.tracker_model.parameters()).device

    def low_res_size(self) -> int:
        """Side of the low-resolution mask logits (4x the token grid, as graph_contract.mask_size)."""
        return 4 * self.step_graph.feat[0]

    @torch.no_grad()
    def vision(self, pixels: torch.Tensor) -> object:
        """The frozen detector ViT, one frame at a time (the runtime's batch is one frame too)."""
        det = self.video.detector_model
        was_training = det.training
        det.eval()  # frozen: no dropout, whatever mode the tracker is in
        try:
            return [det.get_vision_features(pixel_values=pixels[i : i + 1]) for i in range(pixels.shape[0])]
        finally:
            det.train(was_training)

    def _memory(self, feats: tuple, logits: torch.Tensor, binarize: bool, score: torch.Tensor) -> torch.Tensor:
        size = (16 * self.step_graph.feat[0],) * 2  # graph_contract.memory_mask_size
        big = F.interpolate(logits, size=size, mode="bilinear", align_corners=False, antialias=True)
        flag = torch.full((logits.shape[0], 1), binarize, dtype=torch.bool, device=logits.device)
        return self.memory_graph(feats[2], big, flag, score)

    def forward(self, pixels: torch.Tensor, first_mask: torch.Tensor) -> ClipOutput:
        """Propagate `first_mask` (N, 1, m, m) in {0, 1}, N objects, from frame 0 through the clip."""
        vis = self.vision(pixels)
        t_len = pixels.shape[0]
        n_obj = first_mask.shape[0]
        feats = [tracker_features(self.video, v) for v in vis]
        low, pointer, score = self.init_graph(*feats[0], first_mask)
        out = ClipOutput([low], [low.new_zeros(0)], [low.new_zeros(0)], [score])
        mems = {0: self._memory(feats[0], low, True, score)}  # (1, HW, mem)
        ptrs = {0: pointer}
        norm = float(max(self.max_pointers - 1, 1))
        for t in range(1, t_len):
            m_list = [(self.num_maskmem - 1, mems[0])]
            for k in range(self.num_maskmem - 1, 0, -1):
                if t - k >= 1:
                    m_list.append((k - 1, mems[t - k]))
            p_list = [(t / norm, ptrs[0])]
            for d in range(1, self.max_pointers):
                if t - d >= 1:
                    p_list.append((d / norm, ptrs[t - d]))
            dev = pixels.device
            mem_feats = torch.stack([m for _, m in m_list], dim=1)  # (N, M, HW, mem)
            mem_tpos = torch.tensor([[r for r, _ in m_list]], dtype=torch.long, device=dev).expand(n_obj, -1)
            mem_valid = torch.ones_like(mem_tpos, dtype=torch.bool)
            obj_ptrs = torch.stack([p for _, p in p_list], dim=1)  # (N, K, C)
            ptr_tpos = torch.tensor([[o for o, _ in p_list]], dtype=torch.float32, device=dev).expand(n_obj, -1)
            ptr_valid = torch.ones_like(ptr_tpos, dtype=torch.bool)
            self._decoder_out.clear()
            low, iou, score, pointer = self.step_graph(*feats[t], mem_feats, mem_tpos, mem_valid, obj_ptrs, ptr_tpos, ptr_valid)
            masks_all = self._decoder_out[-1][0][:, 0]  # (N, 3, m, m) before the absent-object fill
            out.low_res.append(low)
            out.all_masks.append(masks_all)
            out.iou.append(iou)
            out.score.append(score)
            mems[t] = self._memory(feats[t], low, False, score)
            ptrs[t] = pointer
        self._decoder_out.clear()
        return out


def clip_loss(out: ClipOutput, masks: torch.Tensor, w: TrackerLossWeights | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean over tracked frames of the weighted per-frame losses of one object (`ClipOutput.object`); masks (T, 1, m, m)."""
    w = w or TrackerLossWeights()
    terms = {"focal": [], "dice": [], "iou": [], "object_score": []}
    for t in range(1, len(out.low_res)):
        target = masks[t, 0]
        present = bool(target.sum() > 0)
        obj = F.binary_cross_entropy_with_logits(out.score[t], torch.full_like(out.score[t], float(present)))
        terms["object_score"].append(obj)
        if not present:
            continue
        logits = out.all_masks[t]  # (3, m, m)
        tgt = target.expand_as(logits)
        focal = sigmoid_focal(logits, tgt, w.focal_alpha, w.focal_gamma).flatten(1).mean(1)  # (3,)
        dice = dice_per_row(logits, tgt)  # (3,)
        best = torch.argmin(w.focal * focal + w.dice * dice)
        terms["focal"].append(focal[best])
        terms["dice"].append(dice[best])
        with torch.no_grad():
            pred = logits > 0
            inter = (pred & (tgt > 0)).flatten(1).sum(1).float()
            union = (pred | (tgt > 0)).flatten(1).sum(1).float()
            real_iou = inter / union.clamp(min=1)
        terms["iou"].append(F.l1_loss(out.iou[t].float(), real_iou, reduction="sum") / 3)
    n = max(len(out.low_res) - 1, 1)
    total = sum(getattr(w, k) * torch.stack(v).sum() / n for k, v in terms.items() if v)
    stats = {k: float(torch.stack(v).detach().mean()) if v else 0.0 for k, v in terms.items()}
    return total, stats


def propagation_dice(out: ClipOutput, masks: torch.Tensor) -> tuple[float, list[float]]:
    """Dice (%) of one object's runtime-visible masks (logits > 0, absent object = empty) over tracked frames, pooled."""
    inter = total = 0.0
    per_frame = []
    for t in range(1, len(out.low_res)):
        pred = out.low_res[t][0, 0] > 0
        if float(out.score[t]) <= 0:
            pred = torch.zeros_like(pred)
        tgt = masks[t, 0] > 0
        i, s = float((pred & tgt).sum()), float(pred.sum() + tgt.sum())
        inter += i
        total += s
        per_frame.append(200 * i / s if s else 100.0)
    return (200 * inter / total if total else 100.0), per_frame


__all__ = [
    "NO_OBJ_SCORE",
    "ClipOutput",
    "TrackerLossWeights",
    "TrackerTrainingModel",
    "clip_loss",
    "propagation_dice",
    "trainable_parameters",
]
