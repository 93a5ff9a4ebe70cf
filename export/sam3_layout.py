"""Meta's original `sam3.pt` key layout <-> transformers' Sam3 module names.

The forward direction follows transformers' `convert_sam3_to_hf.py` (not shipped in the
wheel): ordered regex renames, then three tensor edits: fused q/k/v projections are split,
the ViT position embedding loses its class-token row, and CLIP's `text_projection`
(stored [in, out]) is transposed. Keys no rule matches are identical in both layouts
(e.g. the geometry encoder's box projections). The reverse direction exists to write
checkpoints in the original layout, which the tests use to prove the loader.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

# original -> HF, applied in order to every key (as transformers' converter does).
DETECTOR_TO_HF: tuple[tuple[str, str], ...] = (
    (r"^sam3_model\.", r""),
    (r"^backbone\.vision_backbone\.trunk\.", r"vision_encoder.backbone."),
    (r"^vision_encoder\.backbone\.pos_embed", r"vision_encoder.backbone.embeddings.position_embeddings"),
    (r"^vision_encoder\.backbone\.patch_embed\.proj\.", r"vision_encoder.backbone.embeddings.patch_embeddings.projection."),
    (r"^vision_encoder\.backbone\.ln_pre\.", r"vision_encoder.backbone.layer_norm."),
    (r"^vision_encoder\.backbone\.blocks\.(\d+)\.norm1\.", r"vision_encoder.backbone.layers.\1.layer_norm1."),
    (r"^vision_encoder\.backbone\.blocks\.(\d+)\.norm2\.", r"vision_encoder.backbone.layers.\1.layer_norm2."),
    (r"^vision_encoder\.backbone\.blocks\.(\d+)\.attn\.qkv\.", r"vision_encoder.backbone.layers.\1.attention.qkv."),
    (r"^vision_encoder\.backbone\.blocks\.(\d+)\.attn\.proj\.", r"vision_encoder.backbone.layers.\1.attention.o_proj."),
    (r"^vision_encoder\.backbone\.blocks\.(\d+)\.attn\.freqs_cis", r"vision_encoder.backbone.layers.\1.rotary_emb.rope_embeddings"),
    (r"^vision_encoder\.backbone\.blocks\.(\d+)\.mlp\.fc1\.", r"vision_encoder.backbone.layers.\1.mlp.fc1."),
    (r"^vision_encoder\.backbone\.blocks\.(\d+)\.mlp\.fc2\.", r"vision_encoder.backbone.layers.\1.mlp.fc2."),
    (r"^backbone\.vision_backbone\.neck\.fpn\.(\d+)\.", r"vision_encoder.neck.fpn_layers.\1."),
    (r"^backbone\.vision_backbone\.convs\.(\d+)\.dconv_2x2_0\.", r"vision_encoder.neck.fpn_layers.\1.scale_layers.0."),
    (r"^backbone\.vision_backbone\.convs\.(\d+)\.dconv_2x2_1\.", r"vision_encoder.neck.fpn_layers.\1.scale_layers.2."),
    (r"^backbone\.vision_backbone\.convs\.(\d+)\.dconv_2x2\.", r"vision_encoder.neck.fpn_layers.\1.scale_layers.0."),
    (r"^backbone\.vision_backbone\.convs\.(\d+)\.maxpool_2x2\.", r"vision_encoder.neck.fpn_layers.\1.scale_layers.0."),
    (r"^backbone\.vision_backbone\.convs\.(\d+)\.conv_1x1\.", r"vision_encoder.neck.fpn_layers.\1.proj1."),
    (r"^backbone\.vision_backbone\.convs\.(\d+)\.conv_3x3\.", r"vision_encoder.neck.fpn_layers.\1.proj2."),
    (r"^backbone\.language_backbone\.encoder\.", r"text_encoder."),
    (r"^text_encoder\.token_embedding\.", r"text_encoder.text_model.embeddings.token_embedding."),
    (r"^text_encoder\.positional_embedding", r"text_encoder.text_model.embeddings.position_embedding.weight"),
    (r"^text_encoder\.ln_final\.", r"text_encoder.text_model.final_layer_norm."),
    (r"^text_encoder\.text_projection", r"text_encoder.text_projection.weight"),
    (r"^text_encoder\.transformer\.resblocks\.(\d+)\.attn\.in_proj_", r"text_encoder.text_model.encoder.layers.\1.self_attn.in_proj_"),
    (r"^text_encoder\.transformer\.resblocks\.(\d+)\.attn\.out_proj\.", r"text_encoder.text_model.encoder.layers.\1.self_attn.out_proj."),
    (r"^text_encoder\.transformer\.resblocks\.(\d+)\.ln_1\.", r"text_encoder.text_model.encoder.layers.\1.layer_norm1."),
    (r"^text_encoder\.transformer\.resblocks\.(\d+)\.ln_2\.", r"text_encoder.text_model.encoder.layers.\1.layer_norm2."),
    (r"^text_encoder\.transformer\.resblocks\.(\d+)\.mlp\.c_fc\.", r"text_encoder.text_model.encoder.layers.\1.mlp.fc1."),
    (r"^text_encoder\.transformer\.resblocks\.(\d+)\.mlp\.c_proj\.", r"text_encoder.text_model.encoder.layers.\1.mlp.fc2."),
    (r"^backbone\.language_backbone\.resizer\.", r"text_projection."),
    (r"^geometry_encoder\.encode\.(\d+)\.cross_attn_image\.out_proj\.", r"geometry_encoder.layers.\1.cross_attn.o_proj."),
    (r"^geometry_encoder\.encode\.(\d+)\.cross_attn_image\.", r"geometry_encoder.layers.\1.cross_attn."),
    (r"^geometry_encoder\.encode\.(\d+)\.self_attn\.out_proj\.", r"geometry_encoder.layers.\1.self_attn.o_proj."),
    (r"^geometry_encoder\.encode\.(\d+)\.self_attn\.", r"geometry_encoder.layers.\1.self_attn."),
    (r"^geometry_encoder\.encode\.(\d+)\.linear1\.", r"geometry_encoder.layers.\1.mlp.fc1."),
    (r"^geometry_encoder\.encode\.(\d+)\.linear2\.", r"geometry_encoder.layers.\1.mlp.fc2."),
    (r"^geometry_encoder\.encode\.(\d+)\.norm1\.", r"geometry_encoder.layers.\1.layer_norm1."),
    (r"^geometry_encoder\.encode\.(\d+)\.norm2\.", r"geometry_encoder.layers.\1.layer_norm2."),
    (r"^geometry_encoder\.encode\.(\d+)\.norm3\.", r"geometry_encoder.layers.\1.layer_norm3."),
    (r"^geometry_encoder\.img_pre_norm\.", r"geometry_encoder.vision_layer_norm."),
    (r"^geometry_encoder\.norm\.", r"geometry_encoder.prompt_layer_norm."),
    (r"^geometry_encoder\.encode_norm\.", r"geometry_encoder.output_layer_norm."),
    (r"^transformer\.encoder\.layers\.(\d+)\.cross_attn_image\.out_proj\.", r"detr_encoder.layers.\1.cross_attn.o_proj."),
    (r"^transformer\.encoder\.layers\.(\d+)\.cross_attn_image\.", r"detr_encoder.layers.\1.cross_attn."),
    (r"^transformer\.encoder\.layers\.(\d+)\.self_attn\.out_proj\.", r"detr_encoder.layers.\1.self_attn.o_proj."),
    (r"^transformer\.encoder\.layers\.(\d+)\.self_attn\.", r"detr_encoder.layers.\1.self_attn."),
    (r"^transformer\.encoder\.layers\.(\d+)\.cross_attn\.out_proj\.", r"detr_encoder.layers.\1.cross_attn.o_proj."),
    (r"^transformer\.encoder\.layers\.(\d+)\.cross_attn\.", r"detr_encoder.layers.\1.cross_attn."),
    (r"^transformer\.encoder\.layers\.(\d+)\.linear1\.", r"detr_encoder.layers.\1.mlp.fc1."),
    (r"^transformer\.encoder\.layers\.(\d+)\.linear2\.", r"detr_encoder.layers.\1.mlp.fc2."),
    (r"^transformer\.encoder\.layers\.(\d+)\.norm1\.", r"detr_encoder.layers.\1.layer_norm1."),
    (r"^transformer\.encoder\.layers\.(\d+)\.norm2\.", r"detr_encoder.layers.\1.layer_norm2."),
    (r"^transformer\.encoder\.layers\.(\d+)\.norm3\.", r"detr_encoder.layers.\1.layer_norm3."),
    (r"^transformer\.decoder\.query_embed\.", r"detr_decoder.query_embed."),
    (r"^transformer\.decoder\.reference_points\.", r"detr_decoder.reference_points."),
    (r"^transformer\.decoder\.instance_query_embed\.", r"detr_decoder.instance_query_embed."),
    (r"^transformer\.decoder\.instance_reference_points\.", r"detr_decoder.instance_reference_points."),
    (r"^transformer\.decoder\.presence_token\.", r"detr_decoder.presence_token."),
    (r"^transformer\.decoder\.presence_token_head\.layers\.0\.", r"detr_decoder.presence_head.layer1."),
    (r"^transformer\.decoder\.presence_token_head\.layers\.1\.", r"detr_decoder.presence_head.layer2."),
    (r"^transformer\.decoder\.presence_token_head\.layers\.2\.", r"detr_decoder.presence_head.layer3."),
    (r"^transformer\.decoder\.presence_token_out_norm\.", r"detr_decoder.presence_layer_norm."),
    (r"^transformer\.decoder\.norm\.", r"detr_decoder.output_layer_norm."),
    (r"^transformer\.decoder\.bbox_embed\.layers\.0\.", r"detr_decoder.box_head.layer1."),
    (r"^transformer\.decoder\.bbox_embed\.layers\.1\.", r"detr_decoder.box_head.layer2."),
    (r"^transformer\.decoder\.bbox_embed\.layers\.2\.", r"detr_decoder.box_head.layer3."),
    (r"^transformer\.decoder\.instance_bbox_embed\.layers\.0\.", r"detr_decoder.instance_box_head.layer1."),
    (r"^transformer\.decoder\.instance_bbox_embed\.layers\.1\.", r"detr_decoder.instance_box_head.layer2."),
    (r"^transformer\.decoder\.instance_bbox_embed\.layers\.2\.", r"detr_decoder.instance_box_head.layer3."),
    (r"^transformer\.decoder\.ref_point_head\.layers\.0\.", r"detr_decoder.ref_point_head.layer1."),
    (r"^transformer\.decoder\.ref_point_head\.layers\.1\.", r"detr_decoder.ref_point_head.layer2."),
    (r"^transformer\.decoder\.boxRPB_embed_x\.layers\.0\.", r"detr_decoder.box_rpb_embed_x.layer1."),
    (r"^transformer\.decoder\.boxRPB_embed_x\.layers\.1\.", r"detr_decoder.box_rpb_embed_x.layer2."),
    (r"^transformer\.decoder\.boxRPB_embed_y\.layers\.0\.", r"detr_decoder.box_rpb_embed_y.layer1."),
    (r"^transformer\.decoder\.boxRPB_embed_y\.layers\.1\.", r"detr_decoder.box_rpb_embed_y.layer2."),
    (r"^transformer\.decoder\.layers\.(\d+)\.self_attn\.out_proj\.", r"detr_decoder.layers.\1.self_attn.o_proj."),
    (r"^transformer\.decoder\.layers\.(\d+)\.self_attn\.", r"detr_decoder.layers.\1.self_attn."),
    (r"^transformer\.decoder\.layers\.(\d+)\.ca_text\.out_proj\.", r"detr_decoder.layers.\1.text_cross_attn.o_proj."),
    (r"^transformer\.decoder\.layers\.(\d+)\.ca_text\.", r"detr_decoder.layers.\1.text_cross_attn."),
    (r"^transformer\.decoder\.layers\.(\d+)\.cross_attn\.out_proj\.", r"detr_decoder.layers.\1.vision_cross_attn.o_proj."),
    (r"^transformer\.decoder\.layers\.(\d+)\.cross_attn\.", r"detr_decoder.layers.\1.vision_cross_attn."),
    (r"^transformer\.decoder\.layers\.(\d+)\.linear1\.", r"detr_decoder.layers.\1.mlp.fc1."),
    (r"^transformer\.decoder\.layers\.(\d+)\.linear2\.", r"detr_decoder.layers.\1.mlp.fc2."),
    (r"^transformer\.decoder\.layers\.(\d+)\.norm1\.", r"detr_decoder.layers.\1.vision_cross_attn_layer_norm."),
    (r"^transformer\.decoder\.layers\.(\d+)\.catext_norm\.", r"detr_decoder.layers.\1.text_cross_attn_layer_norm."),
    (r"^transformer\.decoder\.layers\.(\d+)\.norm2\.", r"detr_decoder.layers.\1.self_attn_layer_norm."),
    (r"^transformer\.decoder\.layers\.(\d+)\.norm3\.", r"detr_decoder.layers.\1.mlp_layer_norm."),
    (r"^dot_prod_scoring\.prompt_mlp\.layers\.0\.", r"dot_product_scoring.text_mlp.layer1."),
    (r"^dot_prod_scoring\.prompt_mlp\.layers\.1\.", r"dot_product_scoring.text_mlp.layer2."),
    (r"^dot_prod_scoring\.prompt_mlp\.out_norm\.", r"dot_product_scoring.text_mlp_out_norm."),
    (r"^dot_prod_scoring\.prompt_proj\.", r"dot_product_scoring.text_proj."),
    (r"^dot_prod_scoring\.hs_proj\.", r"dot_product_scoring.query_proj."),
    (r"^segmentation_head\.pixel_decoder\.conv_layers\.(\d+)\.", r"mask_decoder.pixel_decoder.conv_layers.\1."),
    (r"^segmentation_head\.pixel_decoder\.norms\.(\d+)\.", r"mask_decoder.pixel_decoder.norms.\1."),
    (r"^segmentation_head\.mask_embed\.layers\.(\d+)\.", r"mask_decoder.mask_embedder.layers.\1."),
    (r"^segmentation_head\.mask_predictor\.mask_embed\.layers\.(\d+)\.", r"mask_decoder.mask_embedder.layers.\1."),
    (r"^segmentation_head\.instance_seg_head\.", r"mask_decoder.instance_projection."),
    (r"^segmentation_head\.semantic_seg_head\.", r"mask_decoder.semantic_projection."),
    (r"^segmentation_head\.cross_attend_prompt\.out_proj\.", r"mask_decoder.prompt_cross_attn.o_proj."),
    (r"^segmentation_head\.cross_attend_prompt\.", r"mask_decoder.prompt_cross_attn."),
    (r"^segmentation_head\.cross_attn_norm\.", r"mask_decoder.prompt_cross_attn_norm."),
)

# HF -> original, for writing checkpoints in Meta's layout. Fused-projection keys are
# produced by `_fuse_qkv` below; FPN level 0 of a 4x level becomes dconv_2x2_0 there too.
DETECTOR_FROM_HF: tuple[tuple[str, str], ...] = (
    (r"^vision_encoder\.backbone\.embeddings\.position_embeddings$", r"backbone.vision_backbone.trunk.pos_embed"),
    (r"^vision_encoder\.backbone\.embeddings\.patch_embeddings\.projection\.", r"backbone.vision_backbone.trunk.patch_embed.proj."),
    (r"^vision_encoder\.backbone\.layer_norm\.", r"backbone.vision_backbone.trunk.ln_pre."),
    (r"^vision_encoder\.backbone\.layers\.(\d+)\.layer_norm1\.", r"backbone.vision_backbone.trunk.blocks.\1.norm1."),
    (r"^vision_encoder\.backbone\.layers\.(\d+)\.layer_norm2\.", r"backbone.vision_backbone.trunk.blocks.\1.norm2."),
    (r"^vision_encoder\.backbone\.layers\.(\d+)\.attention\.qkv\.", r"backbone.vision_backbone.trunk.blocks.\1.attn.qkv."),
    (r"^vision_encoder\.backbone\.layers\.(\d+)\.attention\.o_proj\.", r"backbone.vision_backbone.trunk.blocks.\1.attn.proj."),
    (r"^vision_encoder\.backbone\.layers\.(\d+)\.mlp\.", r"backbone.vision_backbone.trunk.blocks.\1.mlp."),
    (r"^vision_encoder\.neck\.fpn_layers\.(\d+)\.scale_layers\.0\.", r"backbone.vision_backbone.convs.\1.dconv_2x2."),
    (r"^vision_encoder\.neck\.fpn_layers\.(\d+)\.scale_layers\.2\.", r"backbone.vision_backbone.convs.\1.dconv_2x2_1."),
    (r"^vision_encoder\.neck\.fpn_layers\.(\d+)\.proj1\.", r"backbone.vision_backbone.convs.\1.conv_1x1."),
    (r"^vision_encoder\.neck\.fpn_layers\.(\d+)\.proj2\.", r"backbone.vision_backbone.convs.\1.conv_3x3."),
    (r"^text_encoder\.text_model\.embeddings\.token_embedding\.", r"backbone.language_backbone.encoder.token_embedding."),
    (r"^text_encoder\.text_model\.embeddings\.position_embedding\.weight$", r"backbone.language_backbone.encoder.positional_embedding"),
    (r"^text_encoder\.text_model\.final_layer_norm\.", r"backbone.language_backbone.encoder.ln_final."),
    (r"^text_encoder\.text_projection\.weight$", r"backbone.language_backbone.encoder.text_projection"),
    (
        r"^text_encoder\.text_model\.encoder\.layers\.(\d+)\.self_attn\.in_proj_",
        r"backbone.language_backbone.encoder.transformer.resblocks.\1.attn.in_proj_",
    ),
    (
        r"^text_encoder\.text_model\.encoder\.layers\.(\d+)\.self_attn\.out_proj\.",
        r"backbone.language_backbone.encoder.transformer.resblocks.\1.attn.out_proj.",
    ),
    (
        r"^text_encoder\.text_model\.encoder\.layers\.(\d+)\.layer_norm1\.",
        r"backbone.language_backbone.encoder.transformer.resblocks.\1.ln_1.",
    ),
    (
        r"^text_encoder\.text_model\.encoder\.layers\.(\d+)\.layer_norm2\.",
        r"backbone.language_backbone.encoder.transformer.resblocks.\1.ln_2.",
    ),
    (
        r"^text_encoder\.text_model\.encoder\.layers\.(\d+)\.mlp\.fc1\.",
        r"backbone.language_backbone.encoder.transformer.resblocks.\1.mlp.c_fc.",
    ),
    (
        r"^text_encoder\.text_model\.encoder\.layers\.(\d+)\.mlp\.fc2\.",
        r"backbone.language_backbone.encoder.transformer.resblocks.\1.mlp.c_proj.",
    ),
    (r"^text_projection\.", r"backbone.language_backbone.resizer."),
    (r"^geometry_encoder\.layers\.(\d+)\.cross_attn\.o_proj\.", r"geometry_encoder.encode.\1.cross_attn_image.out_proj."),
    (r"^geometry_encoder\.layers\.(\d+)\.cross_attn\.", r"geometry_encoder.encode.\1.cross_attn_image."),
    (r"^geometry_encoder\.layers\.(\d+)\.self_attn\.o_proj\.", r"geometry_encoder.encode.\1.self_attn.out_proj."),
    (r"^geometry_encoder\.layers\.(\d+)\.self_attn\.", r"geometry_encoder.encode.\1.self_attn."),
    (r"^geometry_encoder\.layers\.(\d+)\.mlp\.fc1\.", r"geometry_encoder.encode.\1.linear1."),
    (r"^geometry_encoder\.layers\.(\d+)\.mlp\.fc2\.", r"geometry_encoder.encode.\1.linear2."),
    (r"^geometry_encoder\.layers\.(\d+)\.layer_norm(\d)\.", r"geometry_encoder.encode.\1.norm\2."),
    (r"^geometry_encoder\.vision_layer_norm\.", r"geometry_encoder.img_pre_norm."),
    (r"^geometry_encoder\.prompt_layer_norm\.", r"geometry_encoder.norm."),
    (r"^geometry_encoder\.output_layer_norm\.", r"geometry_encoder.encode_norm."),
    (r"^detr_encoder\.layers\.(\d+)\.cross_attn\.o_proj\.", r"transformer.encoder.layers.\1.cross_attn_image.out_proj."),
    (r"^detr_encoder\.layers\.(\d+)\.cross_attn\.", r"transformer.encoder.layers.\1.cross_attn_image."),
    (r"^detr_encoder\.layers\.(\d+)\.self_attn\.o_proj\.", r"transformer.encoder.layers.\1.self_attn.out_proj."),
    (r"^detr_encoder\.layers\.(\d+)\.self_attn\.", r"transformer.encoder.layers.\1.self_attn."),
    (r"^detr_encoder\.layers\.(\d+)\.mlp\.fc1\.", r"transformer.encoder.layers.\1.linear1."),
    (r"^detr_encoder\.layers\.(\d+)\.mlp\.fc2\.", r"transformer.encoder.layers.\1.linear2."),
    (r"^detr_encoder\.layers\.(\d+)\.layer_norm(\d)\.", r"transformer.encoder.layers.\1.norm\2."),
    (r"^detr_decoder\.presence_head\.layer(\d)\.", r"transformer.decoder.presence_token_head.layers.<\1>."),
    (r"^detr_decoder\.presence_layer_norm\.", r"transformer.decoder.presence_token_out_norm."),
    (r"^detr_decoder\.output_layer_norm\.", r"transformer.decoder.norm."),
    (r"^detr_decoder\.box_head\.layer(\d)\.", r"transformer.decoder.bbox_embed.layers.<\1>."),
    (r"^detr_decoder\.instance_box_head\.layer(\d)\.", r"transformer.decoder.instance_bbox_embed.layers.<\1>."),
    (r"^detr_decoder\.ref_point_head\.layer(\d)\.", r"transformer.decoder.ref_point_head.layers.<\1>."),
    (r"^detr_decoder\.box_rpb_embed_x\.layer(\d)\.", r"transformer.decoder.boxRPB_embed_x.layers.<\1>."),
    (r"^detr_decoder\.box_rpb_embed_y\.layer(\d)\.", r"transformer.decoder.boxRPB_embed_y.layers.<\1>."),
    (r"^detr_decoder\.layers\.(\d+)\.self_attn\.o_proj\.", r"transformer.decoder.layers.\1.self_attn.out_proj."),
    (r"^detr_decoder\.layers\.(\d+)\.text_cross_attn\.o_proj\.", r"transformer.decoder.layers.\1.ca_text.out_proj."),
    (r"^detr_decoder\.layers\.(\d+)\.text_cross_attn\.", r"transformer.decoder.layers.\1.ca_text."),
    (r"^detr_decoder\.layers\.(\d+)\.vision_cross_attn\.o_proj\.", r"transformer.decoder.layers.\1.cross_attn.out_proj."),
    (r"^detr_decoder\.layers\.(\d+)\.vision_cross_attn_layer_norm\.", r"transformer.decoder.layers.\1.norm1."),
    (r"^detr_decoder\.layers\.(\d+)\.vision_cross_attn\.", r"transformer.decoder.layers.\1.cross_attn."),
    (r"^detr_decoder\.layers\.(\d+)\.text_cross_attn_layer_norm\.", r"transformer.decoder.layers.\1.catext_norm."),
    (r"^detr_decoder\.layers\.(\d+)\.self_attn_layer_norm\.", r"transformer.decoder.layers.\1.norm2."),
    (r"^detr_decoder\.layers\.(\d+)\.mlp_layer_norm\.", r"transformer.decoder.layers.\1.norm3."),
    (r"^detr_decoder\.layers\.(\d+)\.mlp\.fc1\.", r"transformer.decoder.layers.\1.linear1."),
    (r"^detr_decoder\.layers\.(\d+)\.mlp\.fc2\.", r"transformer.decoder.layers.\1.linear2."),
    (r"^detr_decoder\.layers\.(\d+)\.self_attn\.", r"transformer.decoder.layers.\1.self_attn."),
    (r"^detr_decoder\.", r"transformer.decoder."),
    (r"^dot_product_scoring\.text_mlp\.layer(\d)\.", r"dot_prod_scoring.prompt_mlp.layers.<\1>."),
    (r"^dot_product_scoring\.text_mlp_out_norm\.", r"dot_prod_scoring.prompt_mlp.out_norm."),
    (r"^dot_product_scoring\.text_proj\.", r"dot_prod_scoring.prompt_proj."),
    (r"^dot_product_scoring\.query_proj\.", r"dot_prod_scoring.hs_proj."),
    (r"^mask_decoder\.pixel_decoder\.", r"segmentation_head.pixel_decoder."),
    (r"^mask_decoder\.mask_embedder\.layers\.", r"segmentation_head.mask_predictor.mask_embed.layers."),
    (r"^mask_decoder\.instance_projection\.", r"segmentation_head.instance_seg_head."),
    (r"^mask_decoder\.semantic_projection\.", r"segmentation_head.semantic_seg_head."),
    (r"^mask_decoder\.prompt_cross_attn\.o_proj\.", r"segmentation_head.cross_attend_prompt.out_proj."),
    (r"^mask_decoder\.prompt_cross_attn_norm\.", r"segmentation_head.cross_attn_norm."),
    (r"^mask_decoder\.prompt_cross_attn\.", r"segmentation_head.cross_attend_prompt."),
)

_COMPILED_TO_HF = tuple((re.compile(p), r) for p, r in DETECTOR_TO_HF)
_COMPILED_FROM_HF = tuple((re.compile(p), r) for p, r in DETECTOR_FROM_HF)
_POS_EMBED_HF = "vision_encoder.backbone.embeddings.position_embeddings"
_TEXT_PROJ_HF = "text_encoder.text_projection.weight"
# Keys that exist in the original checkpoint but are recomputed by transformers.
_DROPPED_HF = re.compile(r"\.rotary_emb\.rope_embeddings$")


def _rename(key: str, rules: tuple[tuple[re.Pattern[str], str], ...]) -> str:
    for pattern, repl in rules:
        key = pattern.sub(repl, key)
    return key


def detector_to_hf(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original detector keys (prefix `detector.` already removed) -> Sam3Model state dict."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = _rename(key, _COMPILED_TO_HF)
        if _DROPPED_HF.search(new):
            continue
        if new == _POS_EMBED_HF and value.ndim == 3 and round((value.shape[1] - 1) ** 0.5) ** 2 == value.shape[1] - 1:
            value = value[:, 1:, :]  # drop the class-token row: [1, 1 + g*g, C] -> [1, g*g, C]
        if new == _TEXT_PROJ_HF:
            value = value.T.contiguous()
        out[new] = value
    return _split_qkv(out)


def detector_from_hf(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sam3Model state dict -> Meta's original key layout (without the `detector.` prefix)."""
    fused = _fuse_qkv(state)
    four_x = {m.group(1) for k in fused if (m := re.match(r"^vision_encoder\.neck\.fpn_layers\.(\d+)\.scale_layers\.2\.", k))}
    out: dict[str, torch.Tensor] = {}
    for key, value in fused.items():
        new = _rename(key, _COMPILED_FROM_HF)
        new = re.sub(r"<(\d)>", lambda m: str(int(m.group(1)) - 1), new)
        m = re.match(r"^backbone\.vision_backbone\.convs\.(\d+)\.dconv_2x2\.", new)
        if m and m.group(1) in four_x:
            new = new.replace(".dconv_2x2.", ".dconv_2x2_0.", 1)
        if key == _POS_EMBED_HF:
            value = torch.cat([torch.zeros_like(value[:, :1]), value], dim=1)
        if key == _TEXT_PROJ_HF:
            value = value.T.contiguous()
        out[new] = value
    return out


def _split_qkv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if ".attention.qkv." in key:
            for part, chunk in zip("qkv", torch.chunk(value, 3, dim=0)):
                out[key.replace(".qkv.", f".{part}_proj.")] = chunk
        elif ".in_proj_" in key:
            base, kind = key.rsplit(".in_proj_", 1)
            for part, chunk in zip("qkv", torch.chunk(value, 3, dim=0)):
                out[f"{base}.{part}_proj.{kind}"] = chunk
        else:
            out[key] = value
    return out


def _fuse_qkv(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = re.match(r"^(.*)\.([qkv])_proj\.(weight|bias)$", key)
        if not m:
            out[key] = value
            continue
        base, part, kind = m.groups()
        if part != "q":
            continue
        parts = [state[f"{base}.{p}_proj.{kind}"] for p in "qkv"]
        if base.startswith("vision_encoder.backbone.layers."):
            out[f"{base}.qkv.{kind}"] = torch.cat(parts)
        else:
            out[f"{base}.in_proj_{kind}"] = torch.cat(parts)
    return out
