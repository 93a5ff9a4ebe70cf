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


# -- tracker (Sam3VideoModel.tracker_model / tracker_neck) ------------------------------
# Meta's sam3.pt keeps the SAM2-style tracker under `tracker.` with SAM2 module names
# (sam_mask_decoder, sam_prompt_encoder, transformer.encoder = memory attention,
# maskmem_backbone = memory encoder, obj_ptr_proj, ...) and the tracker's FPN neck inside
# the detector backbone as `sam2_convs`. transformers' convert_sam3_video_to_hf.py renames
# them with ordered substring rules; here the same renames are symmetric templates
# ({i}: a number, {a}: a module name, {p}: q/k/v_proj), usable in both directions. Verified
# against the state dict of Meta's own `build_sam3_video_model` (sam3 0.1.4, which loads
# sam3.pt with strict=True; tests/export/test_meta_reference.py) and by round trip over every
# module name transformers' Sam3VideoModel defines.
_MLP3 = (("layers.0", "proj_in"), ("layers.1", "layers.0"), ("layers.2", "proj_out"))
TRACKER_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("maskmem_tpos_enc", "memory_temporal_positional_encoding"),
    ("no_mem_embed", "no_memory_embedding"),
    ("no_mem_pos_enc", "no_memory_positional_encoding"),
    ("no_obj_ptr", "no_object_pointer"),
    ("no_obj_embed_spatial", "occlusion_spatial_embedding_parameter"),
    ("sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix", "prompt_encoder.shared_embedding.positional_embedding"),
    ("sam_prompt_encoder.mask_downscaling.0.", "prompt_encoder.mask_embed.conv1."),
    ("sam_prompt_encoder.mask_downscaling.1.", "prompt_encoder.mask_embed.layer_norm1."),
    ("sam_prompt_encoder.mask_downscaling.3.", "prompt_encoder.mask_embed.conv2."),
    ("sam_prompt_encoder.mask_downscaling.4.", "prompt_encoder.mask_embed.layer_norm2."),
    ("sam_prompt_encoder.mask_downscaling.6.", "prompt_encoder.mask_embed.conv3."),
    ("sam_prompt_encoder.no_mask_embed.", "prompt_encoder.no_mask_embed."),
    ("sam_prompt_encoder.not_a_point_embed.", "prompt_encoder.not_a_point_embed."),
    ("sam_mask_decoder.{a}_token.", "mask_decoder.{a}_token."),
    ("sam_mask_decoder.mask_tokens.", "mask_decoder.mask_tokens."),
    ("sam_mask_decoder.conv_s{i}.", "mask_decoder.conv_s{i}."),
    ("sam_mask_decoder.transformer.layers.{i}.{a}.out_proj.", "mask_decoder.transformer.layers.{i}.{a}.o_proj."),
    ("sam_mask_decoder.transformer.layers.{i}.{a}.{p}.", "mask_decoder.transformer.layers.{i}.{a}.{p}."),
    ("sam_mask_decoder.transformer.layers.{i}.norm{j}.", "mask_decoder.transformer.layers.{i}.layer_norm{j}."),
    # Meta's SAM mask decoder MLP (SAM2's MLPBlock) is lin1/lin2; listed first, so the reverse
    # direction writes Meta's names. layers.0/1 (transformers' converter input) still load.
    ("sam_mask_decoder.transformer.layers.{i}.mlp.lin1.", "mask_decoder.transformer.layers.{i}.mlp.proj_in."),
    ("sam_mask_decoder.transformer.layers.{i}.mlp.lin2.", "mask_decoder.transformer.layers.{i}.mlp.proj_out."),
    ("sam_mask_decoder.transformer.layers.{i}.mlp.layers.0.", "mask_decoder.transformer.layers.{i}.mlp.proj_in."),
    ("sam_mask_decoder.transformer.layers.{i}.mlp.layers.1.", "mask_decoder.transformer.layers.{i}.mlp.proj_out."),
    ("sam_mask_decoder.transformer.final_attn_token_to_image.out_proj.", "mask_decoder.transformer.final_attn_token_to_image.o_proj."),
    ("sam_mask_decoder.transformer.final_attn_token_to_image.{p}.", "mask_decoder.transformer.final_attn_token_to_image.{p}."),
    ("sam_mask_decoder.transformer.norm_final_attn.", "mask_decoder.transformer.layer_norm_final_attn."),
    ("sam_mask_decoder.output_upscaling.0.", "mask_decoder.upscale_conv1."),
    ("sam_mask_decoder.output_upscaling.1.", "mask_decoder.upscale_layer_norm."),
    ("sam_mask_decoder.output_upscaling.3.", "mask_decoder.upscale_conv2."),
    *((f"sam_mask_decoder.output_hypernetworks_mlps.{{i}}.{a}.", f"mask_decoder.output_hypernetworks_mlps.{{i}}.{b}.") for a, b in _MLP3),
    *((f"sam_mask_decoder.iou_prediction_head.{a}.", f"mask_decoder.iou_prediction_head.{b}.") for a, b in _MLP3),
    *((f"sam_mask_decoder.pred_obj_score_head.{a}.", f"mask_decoder.pred_obj_score_head.{b}.") for a, b in _MLP3),
    ("transformer.encoder.layers.{i}.{a}.out_proj.", "memory_attention.layers.{i}.{a}.o_proj."),
    ("transformer.encoder.layers.{i}.{a}.{p}.", "memory_attention.layers.{i}.{a}.{p}."),
    ("transformer.encoder.layers.{i}.linear{j}.", "memory_attention.layers.{i}.linear{j}."),
    ("transformer.encoder.layers.{i}.norm{j}.", "memory_attention.layers.{i}.layer_norm{j}."),
    ("transformer.encoder.norm.", "memory_attention.layer_norm."),
    ("maskmem_backbone.pix_feat_proj.", "memory_encoder.feature_projection."),
    ("maskmem_backbone.fuser.layers.{i}.dwconv.", "memory_encoder.memory_fuser.layers.{i}.depthwise_conv."),
    ("maskmem_backbone.fuser.layers.{i}.norm.", "memory_encoder.memory_fuser.layers.{i}.layer_norm."),
    ("maskmem_backbone.fuser.layers.{i}.pwconv{j}.", "memory_encoder.memory_fuser.layers.{i}.pointwise_conv{j}."),
    ("maskmem_backbone.fuser.layers.{i}.gamma", "memory_encoder.memory_fuser.layers.{i}.scale"),
    ("maskmem_backbone.out_proj.", "memory_encoder.projection."),
    ("mask_downsample.", "mask_downsample."),
    *((f"obj_ptr_proj.{a}.", f"object_pointer_proj.{b}.") for a, b in _MLP3),
    ("obj_ptr_tpos_proj.", "temporal_positional_encoding_projection_layer."),
)
# The tracker's FPN neck lives in the detector backbone of sam3.pt as `sam2_convs`.
NECK_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("backbone.vision_backbone.sam2_convs.{i}.dconv_2x2_0.", "tracker_neck.fpn_layers.{i}.scale_layers.0."),
    ("backbone.vision_backbone.sam2_convs.{i}.dconv_2x2_1.", "tracker_neck.fpn_layers.{i}.scale_layers.2."),
    ("backbone.vision_backbone.sam2_convs.{i}.dconv_2x2.", "tracker_neck.fpn_layers.{i}.scale_layers.0."),
    ("backbone.vision_backbone.sam2_convs.{i}.conv_1x1.", "tracker_neck.fpn_layers.{i}.proj1."),
    ("backbone.vision_backbone.sam2_convs.{i}.conv_3x3.", "tracker_neck.fpn_layers.{i}.proj2."),
)
_SLOTS = {"i": r"\d+", "j": r"\d", "a": r"[a-z_]+?", "p": r"[qkv]_proj"}


def _compile(pairs: tuple[tuple[str, str], ...], reverse: bool) -> list[tuple[re.Pattern[str], str]]:
    rules = []
    for orig, hf in pairs:
        src, dst = (hf, orig) if reverse else (orig, hf)
        pattern = re.escape(src)
        for slot, rx in _SLOTS.items():
            pattern = pattern.replace(re.escape("{" + slot + "}"), f"(?P<{slot}>{rx})")
        template = dst
        for slot in _SLOTS:
            template = template.replace("{" + slot + "}", rf"\g<{slot}>")
        rules.append((re.compile("^" + pattern), template))
    return rules


_TRACKER_TO_HF = _compile(TRACKER_TEMPLATES, reverse=False)
_TRACKER_FROM_HF = _compile(TRACKER_TEMPLATES, reverse=True)
_NECK_TO_HF = _compile(NECK_TEMPLATES, reverse=False)
_NECK_FROM_HF = _compile(NECK_TEMPLATES, reverse=True)
_DOWNSAMPLER = re.compile(r"^maskmem_backbone\.mask_downsampler\.encoder\.(\d+)\.")
_DOWNSAMPLER_HF = re.compile(r"^memory_encoder\.mask_downsampler\.(?:layers\.(\d+)\.(conv|layer_norm)|final_conv)\.")
_POINT_EMBED = re.compile(r"^sam_prompt_encoder\.point_embeddings\.(\d+)\.weight$")


def _first(rules: list[tuple[re.Pattern[str], str]], key: str) -> str | None:
    for pattern, template in rules:
        if pattern.match(key):
            return pattern.sub(template, key, count=1)
    return None


def tracker_to_hf(tracker: Mapping[str, torch.Tensor], detector: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`tracker.*` keys (prefix removed) and the detector's `sam2_convs` -> Sam3VideoModel keys
    outside `detector_model.` (tracker_model.*, tracker_neck.*). Unknown keys are kept as they
    are so that the strict load names them."""
    out: dict[str, torch.Tensor] = {}
    points: dict[int, torch.Tensor] = {}
    n_down = 1 + max((int(m.group(1)) for k in tracker if (m := _DOWNSAMPLER.match(k))), default=-1)
    for key, value in tracker.items():
        if key.startswith("image_encoder."):
            continue  # a standalone SAM2 image encoder: SAM3's tracker reads the detector's ViT
        if (m := _POINT_EMBED.match(key)) is not None:
            points[int(m.group(1))] = value
            continue
        if (m := _DOWNSAMPLER.match(key)) is not None:
            idx = int(m.group(1))
            part = "final_conv" if idx == n_down - 1 else f"layers.{idx // 3}.{'conv' if idx % 3 == 0 else 'layer_norm'}"
            out["tracker_model." + _DOWNSAMPLER.sub(f"memory_encoder.mask_downsampler.{part}.", key)] = value
            continue
        new = _first(_TRACKER_TO_HF, key)
        out["tracker_model." + (new if new is not None else key)] = value
    if points:
        out["tracker_model.prompt_encoder.point_embed.weight"] = torch.cat([points[i] for i in sorted(points)], dim=0)
    gaussian = out.get("tracker_model.prompt_encoder.shared_embedding.positional_embedding")
    if gaussian is not None:  # transformers keeps a second copy for the image-wide positional embedding
        out["tracker_model.shared_image_embedding.positional_embedding"] = gaussian
    for key, value in detector.items():
        new = _first(_NECK_TO_HF, key)
        if new is not None:
            out[new] = value
    return out


def tracker_from_hf(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Sam3VideoModel tracker keys -> (`tracker.` keys, detector `sam2_convs` keys) in Meta's layout."""
    tracker: dict[str, torch.Tensor] = {}
    neck: dict[str, torch.Tensor] = {}
    n_layers = 1 + max(
        (int(m.group(1)) for k in state if (m := _DOWNSAMPLER_HF.match(k.removeprefix("tracker_model."))) and m.group(1)), default=-1
    )
    four_x = {m.group(1) for k in state if (m := re.match(r"^tracker_neck\.fpn_layers\.(\d+)\.scale_layers\.2\.", k))}
    for key, value in state.items():
        if key.startswith("tracker_neck."):
            new = _first(_NECK_FROM_HF, key)
            assert new is not None, key
            m = re.match(r"^backbone\.vision_backbone\.sam2_convs\.(\d+)\.dconv_2x2_0\.", new)
            if m and m.group(1) not in four_x:
                new = new.replace(".dconv_2x2_0.", ".dconv_2x2.", 1)
            neck[new] = value
            continue
        if not key.startswith("tracker_model."):
            continue
        k = key.removeprefix("tracker_model.")
        if k == "shared_image_embedding.positional_embedding":
            continue  # a copy of the prompt encoder's gaussian matrix
        if k == "prompt_encoder.point_embed.weight":
            for i, row in enumerate(value):
                tracker[f"sam_prompt_encoder.point_embeddings.{i}.weight"] = row[None].clone()
            continue
        if (m := _DOWNSAMPLER_HF.match(k)) is not None:
            idx = 3 * n_layers if m.group(1) is None else 3 * int(m.group(1)) + (0 if m.group(2) == "conv" else 1)
            tracker[_DOWNSAMPLER_HF.sub(f"maskmem_backbone.mask_downsampler.encoder.{idx}.", k)] = value
            continue
        new = _first(_TRACKER_FROM_HF, k)
        assert new is not None, f"no original name for {key}"
        tracker[new] = value
    return tracker, neck
