"""AdamW with the paper's group learning rates, layer-wise decay, and the warm-up/inverse-sqrt schedule.

Groups (paper Sec. 4.2), by parameter name of transformers' `Sam3Model`:

    decoder     detr_encoder, detr_decoder, mask_decoder (segmentation head),
                dot_product_scoring                                         3e-4
    vision      vision_encoder (ViT backbone + FPN neck)                    5e-5, layer-wise decayed
    language    text_encoder (CLIP) + text_projection                       5e-5
    geometry    geometry_encoder (box prompts)                              1e-4

Layer-wise decay (paper Eq. 1): lr_l = lr_vision * gamma^(L - l), L = 12, gamma = 0.85, with
levels l = 0..L over the vision backbone:

* level 0: the patch embedding and the ViT's input LayerNorm (the most general features);
* ViT block i of N (0-based) -> level 1 + floor(i * L / N): the N blocks are spread evenly
  over levels 1..L, in order. For SAM3's N = 32 and L = 12 each level holds 2 or 3 blocks:
  blocks 0-2 -> 1, 3-5 -> 2, 6-7 -> 3, 8-10 -> 4, 11-13 -> 5, 14-15 -> 6, 16-18 -> 7,
  19-21 -> 8, 22-23 -> 9, 24-26 -> 10, 27-29 -> 11, 30-31 -> 12 (N = 12: block i -> i + 1);
* level L: the FPN neck, and the ViT's absolute position embedding, which SAM3's own
  layer-decay rule exempts from decay.

So the last blocks and the neck train at 5e-5 and the patch embedding at 5e-5 * 0.85^12
(7.1e-6). Weight decay (not in the paper; SAM3's configs use 0.1) applies to matrices and
convolution kernels, not to biases and normalisation scales (ndim <= 1).

Schedule (paper: linear warm-up then inverse-square-root decay). For the t-th optimizer
update (t = 1, 2, ...): factor = t / W for t <= W, then sqrt(T / (T + t - W)), with W
`warmup_steps` and T `decay_timescale` (so the rate halves after W + 3T updates; without
warm-up, W = 0, the first update is at the peak). Every group's rate is its peak rate times
this factor.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from .config import OptimConfig

VIT_BLOCK = re.compile(r"^vision_encoder\.backbone\.layers\.(\d+)\.")


@dataclass(frozen=True)
class ParamPlace:
    component: str  # decoder | vision | language | geometry
    level: int | None  # LLRD level for vision parameters


def vit_level(block: int, num_blocks: int, levels: int) -> int:
    """LLRD level (1..levels) of ViT block `block` (0-based) among `num_blocks`."""
    return 1 + (block * levels) // num_blocks


def place(name: str, num_blocks: int, levels: int) -> ParamPlace:
    """Which optimizer group a `Sam3Model` parameter belongs to."""
    if name.startswith("vision_encoder."):
        m = VIT_BLOCK.match(name)
        if m:
            return ParamPlace("vision", vit_level(int(m.group(1)), num_blocks, levels))
        if name.startswith("vision_encoder.backbone.embeddings.position_embeddings"):
            return ParamPlace("vision", levels)
        if name.startswith(("vision_encoder.backbone.embeddings.", "vision_encoder.backbone.layer_norm.")):
            return ParamPlace("vision", 0)
        return ParamPlace("vision", levels)  # FPN neck
    if name.startswith(("text_encoder.", "text_projection.")):
        return ParamPlace("language", None)
    if name.startswith("geometry_encoder."):
        return ParamPlace("geometry", None)
    return ParamPlace("decoder", None)


def param_groups(detector: nn.Module, cfg: OptimConfig) -> list[dict]:
    """AdamW parameter groups; each carries `name`, its peak `lr` and `weight_decay`."""
    num_blocks = int(detector.config.vision_config.backbone_config.num_hidden_layers)
    base = {"decoder": cfg.lr_decoder, "vision": cfg.lr_vision, "language": cfg.lr_language, "geometry": cfg.lr_geometry}
    groups: dict[str, dict] = {}
    for name, p in detector.named_parameters():
        if not p.requires_grad:
            continue
        where = place(name, num_blocks, cfg.layer_decay_levels)
        decay = p.ndim > 1
        lr = base[where.component]
        key = where.component
        if where.level is not None:
            lr *= cfg.layer_decay ** (cfg.layer_decay_levels - where.level)
            key += f"/L{where.level:02d}"
        key += "/decay" if decay else "/no_decay"
        g = groups.setdefault(
            key, {"name": key, "params": [], "param_names": [], "lr": lr, "weight_decay": cfg.weight_decay if decay else 0.0}
        )
        g["params"].append(p)
        g["param_names"].append(name)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(detector: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    groups = param_groups(detector, cfg)
    return torch.optim.AdamW(groups, lr=cfg.lr_decoder, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


def lr_factor(step: int, warmup: int, timescale: int) -> float:
    """Multiplier of the peak rate for the update after `step` completed updates."""
    t = step + 1
    peak = max(warmup, 1)
    if t < peak:
        return t / warmup
    return math.sqrt(timescale / (timescale + t - peak))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg.warmup_steps, cfg.decay_timescale))


def describe_groups(optimizer: torch.optim.Optimizer) -> list[tuple[str, int, float, float]]:
    """(name, parameter count, current lr, weight decay) of every group."""
    return [(g["name"], sum(p.numel() for p in g["params"]), g["lr"], g["weight_decay"]) for g in optimizer.param_groups]
