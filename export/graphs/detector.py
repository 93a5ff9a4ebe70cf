"""Detector graph: DETR encoder/decoder, scoring and mask head on cached features and text."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

from ..semantics import DEFAULT_PROMPT_SEMANTICS, PromptSemantics, add_geometry_cls, check_prompt_semantics


@contextlib.contextmanager
def static_rpb_shape(detr_decoder: nn.Module, height: int, width: int) -> Iterator[None]:
    """Feed the DETR decoder's box relative-position bias python ints instead of tensors.

    `Sam3DetrDecoder` reads the spatial shape back from a tensor and calls
    `torch.arange(0, height)` with it, a data-dependent shape torch.export rejects. The
    values never change for a given image size, so the original method is called with the
    same numbers as plain ints; the arithmetic is untouched.
    """
    original = detr_decoder._get_rpb_matrix

    def _get_rpb_matrix(reference_boxes: torch.Tensor, spatial_shape: object) -> torch.Tensor:
        return original(reference_boxes, (height, width))

    detr_decoder._get_rpb_matrix = _get_rpb_matrix
    try:
        yield
    finally:
        del detr_decoder._get_rpb_matrix  # back to the class method


class DetectorGraph(nn.Module):
    """det_fpn_0..2 (1, C, ...), text_features (P, T, C), text_mask (P, T) bool ->
    pred_logits (P, Q), pred_boxes (P, Q, 4) xyxy in 0..1, presence_logits (P, 1),
    pred_masks (P, Q, 4s, 4s) logits, semantic_seg (P, 1, 4s, 4s) logits.

    One image, P prompts: the image features are broadcast to the prompt batch, because
    `Sam3Model` pairs the i-th image with the i-th prompt. The sine position encodings the
    neck would compute are built once here and stored as constants.

    `prompt_semantics` "meta" appends the geometry encoder's CLS token for the empty
    geometric prompt to every text prompt, as Meta's SAM3 does (see `medsam3_export.semantics`);
    "transformers" passes the text tokens alone, as `Sam3Model.forward` does without boxes.
    """

    def __init__(self, detector: nn.Module, feat_size: int, prompt_semantics: PromptSemantics = DEFAULT_PROMPT_SEMANTICS) -> None:
        super().__init__()
        self.detector = detector
        self.feat_size = feat_size
        self.prompt_semantics = check_prompt_semantics(prompt_semantics)
        neck = detector.vision_encoder.neck
        channels = detector.config.vision_config.fpn_hidden_size
        for level, scale in enumerate((4, 2, 1)):
            shape = torch.Size([1, channels, feat_size * scale, feat_size * scale])
            self.register_buffer(f"pos_{level}", neck.position_encoding(shape, "cpu", torch.float32), persistent=False)

    def forward(
        self,
        det_fpn_0: torch.Tensor,
        det_fpn_1: torch.Tensor,
        det_fpn_2: torch.Tensor,
        text_features: torch.Tensor,
        text_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        prompts = text_features.shape[0]
        fpn = tuple(f.expand(prompts, -1, -1, -1) for f in (det_fpn_0, det_fpn_1, det_fpn_2))
        pos = tuple(p.expand(prompts, -1, -1, -1).to(det_fpn_0.dtype) for p in (self.pos_0, self.pos_1, self.pos_2))
        # Sam3Model drops the last (0.5x) level; pass the 1x level again as a placeholder.
        vision = Sam3VisionEncoderOutput(fpn_hidden_states=fpn + fpn[-1:], fpn_position_encoding=pos + pos[-1:])
        if self.prompt_semantics == "meta":
            text_features, text_mask = add_geometry_cls(self.detector, text_features, text_mask, fpn, pos)
        # torch.export needs the static shape; torch.compile (TorchOptions(compile=True)) traces the
        # original method itself and cannot follow an attribute set and deleted inside the graph.
        compiling = torch.compiler.is_compiling() and not torch.compiler.is_exporting()
        static = contextlib.nullcontext() if compiling else static_rpb_shape(self.detector.detr_decoder, self.feat_size, self.feat_size)
        with static:
            out = self.detector(
                vision_embeds=vision,
                text_embeds=BaseModelOutputWithPooling(pooler_output=text_features),
                attention_mask=text_mask,
            )
        return out.pred_logits, out.pred_boxes, out.presence_logits, out.pred_masks, out.semantic_seg
