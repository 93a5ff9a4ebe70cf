"""Prompt semantics of the detector: Meta's original text-only path or transformers' one.

For a text-only prompt Meta's SAM3 (`sam3/model/sam3_image.py`, `_encode_prompt`) still runs
the geometry encoder on an empty prompt; with `add_cls=True` that yields one token, the
encoder's CLS embedding after its layers (self-attention, cross-attention to the image
features, MLP), and this token is appended to the text tokens: the DETR encoder, decoder,
dot-product scoring and mask head all see `[text tokens, CLS]`. transformers' `Sam3Model`
runs the geometry encoder only when boxes are given, so its text-only prompt is the text
tokens alone. Checkpoints were trained with Meta's code (Meta's SAM3, Medical SAM3, MedSAM3),
so "meta" is the default; "transformers" is kept for models fine-tuned with transformers'
forward (e.g. this project's demo model).

`empty_prompt_geometry` calls the geometry encoder's own sub-modules in the order its
`forward` does for zero boxes (the box path then contributes nothing and the ROI pooling,
which needs torchvision and cannot be exported with zero boxes, never runs); a test proves
it equals `Sam3GeometryEncoder.forward` with an empty box prompt.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

PromptSemantics = Literal["meta", "transformers"]
PROMPT_SEMANTICS: tuple[str, ...] = ("meta", "transformers")
DEFAULT_PROMPT_SEMANTICS: PromptSemantics = "meta"
# Exports made before the field existed followed transformers.
LEGACY_PROMPT_SEMANTICS: PromptSemantics = "transformers"
DESCRIPTIONS = {
    "meta": "Meta's sam3: text-only prompts carry the geometry encoder's CLS token (empty geometric prompt)",
    "transformers": "transformers Sam3Model: text-only prompts are the text tokens alone",
}


# The tracker's new-object path (docs/streaming.md, "Tracker semantics"): "meta" follows Meta's
# `Sam3VideoBase._tracker_add_new_objects` (object pointer from the single-mask token; memory
# from the detection mask thresholded at 0 and taken through the video resolution, binarised
# before the memory encoder's resize); "transformers" follows `Sam3VideoModel` (pointer from
# the best multimask token; mask thresholded at 0.5, resized, then binarised). The graph part
# is TrackerInitGraph's token; the host part is medsam3_rt.tracker.masks.meta_new_object_memory.
TRACKER_SEMANTICS: tuple[str, ...] = ("meta", "transformers")
DEFAULT_TRACKER_SEMANTICS = "meta"
# Exports made before the field existed followed transformers.
LEGACY_TRACKER_SEMANTICS = "transformers"
TRACKER_DESCRIPTIONS = {
    "meta": (
        "Meta's sam3 video predictor: new objects get the single-mask pointer and a memory of their mask at video resolution; "
        "memories are selected by score"
    ),
    "transformers": "transformers Sam3VideoModel: new objects get the best multimask pointer and a memory of their mask at 0.5",
}


def check_tracker_semantics(value: str) -> str:
    from medsam3_rt.errors import UsageError

    if value not in TRACKER_SEMANTICS:
        raise UsageError(f"tracker semantics must be one of {', '.join(TRACKER_SEMANTICS)}, got '{value}'")
    return value


def manifest_tracker_semantics(tracker_section: dict | None) -> str:
    """The semantics of an export's tracker graphs (manifest `tracker.semantics`; absent: transformers)."""
    return check_tracker_semantics(str((tracker_section or {}).get("semantics", LEGACY_TRACKER_SEMANTICS)))


def manifest_prompt_semantics(model_section: dict) -> PromptSemantics:
    """The semantics an export's detector graph follows (manifest `model.prompt_semantics`);
    manifests without the field were written before it existed, when graphs followed transformers."""
    return check_prompt_semantics(str(model_section.get("prompt_semantics", LEGACY_PROMPT_SEMANTICS)))


def check_prompt_semantics(value: str) -> PromptSemantics:
    from medsam3_rt.errors import UsageError

    if value not in PROMPT_SEMANTICS:
        raise UsageError(f"prompt semantics must be one of {', '.join(PROMPT_SEMANTICS)}, got '{value}'")
    return value  # type: ignore[return-value]


def empty_prompt_geometry(geometry_encoder: nn.Module, image_feats: torch.Tensor, image_pos: torch.Tensor) -> torch.Tensor:
    """(B, 1, C): the geometry encoder's output for an empty prompt (its CLS token only).

    `image_feats` / `image_pos` are the last FPN level the encoder cross-attends to, (B, C, H, W).
    """
    geo = geometry_encoder
    batch = image_feats.shape[0]
    vision = image_feats.flatten(2).transpose(1, 2)
    vision_pos = image_pos.flatten(2).transpose(1, 2)
    cls = geo.cls_embed.weight.view(1, 1, -1).expand(batch, -1, -1).to(image_feats.dtype)
    prompt = geo.prompt_layer_norm(geo.final_proj(cls))
    for layer in geo.layers:  # a single always-valid token: the attention mask is all ones (None)
        prompt = layer(prompt_feats=prompt, vision_feats=vision, vision_pos_encoding=vision_pos, prompt_mask=None)
    return geo.output_layer_norm(prompt)


def add_geometry_cls(
    detector: nn.Module,
    text_features: torch.Tensor,
    text_mask: torch.Tensor,
    fpn: tuple[torch.Tensor, ...],
    fpn_pos: tuple[torch.Tensor, ...],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Meta's text-only prompt: `[text tokens, geometry CLS]` and its mask (the CLS is always valid).

    `fpn` / `fpn_pos` are the levels `Sam3Model` uses (its `fpn_hidden_states[:-1]`); the
    geometry encoder reads the last of them, as in `Sam3Model.forward`.
    """
    cls = empty_prompt_geometry(detector.geometry_encoder, fpn[-1], fpn_pos[-1])
    if cls.shape[0] != text_features.shape[0]:
        cls = cls.expand(text_features.shape[0], -1, -1)
    features = torch.cat([text_features, cls.to(text_features.dtype)], dim=1)
    mask = torch.cat([text_mask.bool(), torch.ones(text_mask.shape[0], 1, dtype=torch.bool, device=text_mask.device)], dim=1)
    return features, mask


def detector_forward(
    detector: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_semantics: str,
    *,
    pixel_values: torch.Tensor | None = None,
    vision_embeds: object | None = None,
) -> object:
    """`Sam3Model.forward` for text-only prompts under either semantics (training, evaluation).

    "transformers" is the plain call. "meta" computes the vision and text features once,
    appends the empty-prompt geometry CLS token and passes the combined prompt as
    `text_embeds`, which `Sam3Model.forward` then uses exactly as it uses text + geometry
    prompts. Gradients reach the geometry encoder's CLS embedding and layers.
    """
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    semantics = check_prompt_semantics(prompt_semantics)
    if semantics == "transformers":
        if vision_embeds is not None:
            return detector(vision_embeds=vision_embeds, input_ids=input_ids, attention_mask=attention_mask)
        return detector(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask)
    vision = vision_embeds if vision_embeds is not None else detector.get_vision_features(pixel_values=pixel_values)
    text = detector.get_text_features(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).pooler_output
    features, mask = add_geometry_cls(
        detector, text, attention_mask, tuple(vision.fpn_hidden_states[:-1]), tuple(vision.fpn_position_encoding[:-1])
    )
    return detector(vision_embeds=vision, text_embeds=BaseModelOutputWithPooling(pooler_output=features), attention_mask=mask)
