"""The transformers SAM3 detector, wrapped for training (no architecture is re-implemented).

`Sam3Model.forward` returns the last decoder layer only. SAM3 supervises every decoder layer,
so `TrainingModel` reads the per-layer results the model already computes, through forward
hooks on its own modules: the DETR decoder's output (per-layer hidden states, reference boxes
and presence logits) and the dot-product scoring output (per-layer logits). Per-layer boxes are
the decoder's box head applied to the per-layer hidden states with the same arithmetic as
`Sam3Model.forward`; a test checks the last layer equals the model's `pred_boxes`.

The one-to-many branch (Table 2, lambda_o2m). Meta's SAM3 trains one-to-many matching on a
second copy of the queries that skips query self-attention (DAC-DETR: without self-attention
queries cannot suppress each other's duplicates, which is what one-to-many supervision wants),
sharing every weight with the one-to-one queries; at inference only the one-to-one queries
exist. transformers' Sam3 has no such query copy, so here the same decoder, with the same query
embeddings and weights, runs a second time on the same encoder output with its query
self-attention switched off (`query_self_attention_off`), and its per-layer logits and boxes
are matched one-to-many. This is training-only: it adds no parameters, the saved checkpoint and
the exported graphs are exactly the transformers architecture, and it costs one extra DETR
decoder pass per step (small next to the ViT).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Iterator
from typing import Any

import torch
from medsam3_export.semantics import detector_forward
from torch import nn
from transformers.models.sam3.modeling_sam3 import box_cxcywh_to_xyxy, inverse_sigmoid

from .config import ConfigError, ModelConfig, RandomModelConfig
from .losses import DetectorOutputs

log = logging.getLogger(__name__)


@contextlib.contextmanager
def query_self_attention_off(decoder: nn.Module) -> Iterator[None]:
    """Run `Sam3DetrDecoder` with the self-attention sub-layer of every layer contributing zero.

    The residual connection, its LayerNorm, both cross-attentions and the MLP run unchanged
    (DAC-DETR's one-to-many decoder, as SAM3 uses it with `dac_use_selfatt_ln`).
    """

    def skip(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: Any = None, **kwargs: Any):
        return torch.zeros_like(query), None

    for layer in decoder.layers:
        layer.self_attn.forward = skip
    try:
        yield
    finally:
        for layer in decoder.layers:
            del layer.self_attn.forward  # back to the class method


def per_layer_boxes(decoder: nn.Module, decoder_out: Any) -> torch.Tensor:
    """(L, B, Q, 4) xyxy boxes of every decoder layer, computed as `Sam3Model.forward` does."""
    offsets = decoder.box_head(decoder_out.intermediate_hidden_states)
    return box_cxcywh_to_xyxy((inverse_sigmoid(decoder_out.reference_boxes) + offsets).sigmoid())


class TrainingModel(nn.Module):
    """pixel_values (B, 3, S, S), input_ids / attention_mask (B, T) -> `DetectorOutputs`.

    The i-th image is paired with the i-th prompt (one triplet per row), as in `Sam3Model`.
    """

    def __init__(self, detector: nn.Module, *, o2m: bool = True, prompt_semantics: str = "meta") -> None:
        super().__init__()
        self.detector = detector
        self.o2m = o2m
        # "meta": Meta's text-only prompt (+ geometry-encoder CLS token), as the exported
        # detector graph runs it by default; "transformers": Sam3Model's (medsam3_export.semantics).
        self.prompt_semantics = prompt_semantics

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> DetectorOutputs:
        det = self.detector
        decoder = det.detr_decoder
        seen: dict[str, Any] = {}

        def before_decoder(module: nn.Module, args: tuple, kwargs: dict) -> None:
            seen["args"], seen["kwargs"] = args, kwargs

        def after_decoder(module: nn.Module, args: tuple, output: Any) -> None:
            seen["decoder"] = output

        def after_scoring(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            seen["scores"] = output

        handles = [
            decoder.register_forward_pre_hook(before_decoder, with_kwargs=True),
            decoder.register_forward_hook(after_decoder),
            det.dot_product_scoring.register_forward_hook(after_scoring),
        ]
        try:
            out = detector_forward(det, input_ids, attention_mask, self.prompt_semantics, pixel_values=pixel_values)
        finally:
            for h in handles:
                h.remove()
        dec = seen["decoder"]
        result = DetectorOutputs(
            logits=seen["scores"].squeeze(-1),
            boxes_xyxy=per_layer_boxes(decoder, dec),
            presence=dec.presence_logits.squeeze(-1),
            pred_masks=out.pred_masks,
            semantic=out.semantic_seg,
        )
        if self.o2m:
            kwargs = seen["kwargs"]
            with query_self_attention_off(decoder):
                dec2 = decoder(*seen["args"], **kwargs)
            scores = det.dot_product_scoring(
                decoder_hidden_states=dec2.intermediate_hidden_states,
                text_features=kwargs["text_features"],
                text_mask=kwargs.get("text_mask"),
            )
            result.o2m_logits = scores.squeeze(-1)
            result.o2m_boxes_xyxy = per_layer_boxes(decoder, dec2)
        return result


def enable_gradient_checkpointing(model: nn.Module) -> int:
    """Recompute activations of the repeated transformer blocks (ViT, CLIP) in the backward pass.

    Uses transformers' own `GradientCheckpointingLayer` mechanism. `Sam3Model` does not declare
    `supports_gradient_checkpointing`, so `gradient_checkpointing_enable()` refuses; the layers
    themselves support it. Returns the number of checkpointed layers.
    """
    from torch.utils.checkpoint import checkpoint
    from transformers.modeling_layers import GradientCheckpointingLayer

    fn = functools.partial(checkpoint, use_reentrant=False)
    count = 0
    for module in model.modules():
        if isinstance(module, GradientCheckpointingLayer):
            module._gradient_checkpointing_func = fn
            module.gradient_checkpointing = True
            count += 1
    return count


def random_model(cfg: RandomModelConfig):  # -> medsam3_export.LoadedCheckpoint
    """A randomly initialised SAM3 of a preset geometry with optional field overrides (built by export's one factory)."""
    from medsam3_export.checkpoint import random_checkpoint
    from medsam3_export.presets import get_preset

    base = get_preset(cfg.preset)
    fields = {f.name for f in dataclasses.fields(base)}
    bad = sorted(set(cfg.overrides) - fields)
    if bad:
        raise ConfigError(f"model.random.overrides: unknown preset field '{bad[0]}'; known: {', '.join(sorted(fields - {'name'}))}")
    size = cfg.overrides.get("image_size", base.image_size)
    if size % 14:
        raise ConfigError(f"model.random.overrides.image_size must be a multiple of the 14-pixel patch, got {size}")
    ckpt = random_checkpoint(cfg.preset, video=cfg.video, seed=cfg.seed, init_std=cfg.init_std, overrides=dict(cfg.overrides))
    ckpt.detector.train()  # as constructed: training mode (random_checkpoint returns eval mode)
    if ckpt.video is not None:
        ckpt.video.train()
    return ckpt


def load_model(cfg: ModelConfig):  # -> medsam3_export.LoadedCheckpoint
    """The checkpoint to fine-tune (or a random preset), as transformers modules."""
    from medsam3_export import load_checkpoint

    if cfg.random is not None:
        return random_model(cfg.random)
    return load_checkpoint(cfg.checkpoint, config=cfg.config)


def image_size(detector: nn.Module) -> int:
    return int(detector.config.vision_config.backbone_config.image_size)


def mask_size(detector: nn.Module) -> int:
    """Side of the mask head's output: 4x the ViT token grid."""
    patch = detector.config.vision_config.backbone_config.patch_size
    patch = patch if isinstance(patch, int) else patch[0]
    return 4 * image_size(detector) // int(patch)


def num_queries(detector: nn.Module) -> int:
    return int(detector.config.detr_decoder_config.num_queries)
