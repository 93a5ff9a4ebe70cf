"""Tracker graphs: new object from a mask, one memory-conditioned step, and the memory encoder.

`Sam3VideoModel` runs its SAM2-style tracker one object at a time and keeps the memory bank
in Python dicts. The runtime batches objects whose histories differ in length, so three
pieces are written here around transformers' own modules and weights:

* the memory cross-attention takes spatial memories and object pointers as separate,
  padded tensors with validity masks (the original concatenates them into one key sequence
  and excludes the pointers from RoPE by a Python integer, which cannot vary per object);
* the SAM head picks the best of the three masks with a batched gather (the original's
  advanced indexing assumes one object per call);
* the memory encoder takes the "binarise or sigmoid" choice as data, since it depends on
  where the mask came from.

Everything else (projections, RoPE tables, norms, the two-way transformer, the memory
encoder's convolutions) is the original code. tests/tracker/test_tracker_graphs.py compares every
wrapper with the unmodified transformers methods.
"""

from __future__ import annotations

import torch
from torch import nn

# transformers' marker for "object absent" mask logits (Sam3TrackerVideo NO_OBJ_SCORE)
NO_OBJ_SCORE = -1024.0
# attention score of padded memory slots: exp() of it underflows to 0 in float32, like -inf
MASKED_SCORE = -1e9


def _flat(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C)"""
    return x.flatten(2).transpose(1, 2)


class _TrackerGraph(nn.Module):
    """Shared constants of the tracker graphs, built once from the original modules."""

    # set by medsam3_export.attention.attention_mode: the memory cross-attention calls the
    # fused-attention op (exported as one MultiHeadAttention) instead of matmul/softmax/matmul
    use_fused_attention = False

    def __init__(self, video_model: nn.Module) -> None:
        super().__init__()
        self.video = video_model
        self.tracker = video_model.tracker_model
        cfg = self.tracker.config
        self.hidden = self.tracker.hidden_dim
        self.mem_dim = self.tracker.mem_dim
        self.feat = tuple(self.tracker.backbone_feature_sizes[-1])
        s_h, s_w = self.feat
        with torch.no_grad():
            # the tracker neck's sine position encoding of the lowest level (what Sam3VideoModel caches)
            neck_pe = video_model.tracker_neck.position_encoding(torch.Size([1, self.hidden, s_h, s_w]), "cpu", torch.float32)
            mem_pe = self.tracker.memory_encoder.position_encoding(torch.Size([1, self.mem_dim, s_h, s_w]), "cpu", torch.float32)
            image_pe = self.tracker.get_image_wide_positional_embeddings()
            # on the tracker's device: rotary_emb moves its frequencies to the device of its first argument
            position_ids = self.tracker.memory_attention.position_ids
            cos, sin = self.tracker.memory_attention.rotary_emb(torch.zeros(1, device=position_ids.device), position_ids)
        self.register_buffer("vision_pos", _flat(neck_pe), persistent=False)  # (1, HW, C)
        self.register_buffer("memory_pos", _flat(mem_pe), persistent=False)  # (1, HW, mem)
        self.register_buffer("image_pe", image_pe, persistent=False)  # (1, C, s, s)
        self.register_buffer("rope_cos", cos, persistent=False)  # (1, HW, head_dim)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.sigmoid_scale = float(cfg.sigmoid_scale_for_mem_enc)
        self.sigmoid_bias = float(cfg.sigmoid_bias_for_mem_enc)

    # -- SAM head (batched over objects) ------------------------------------------------
    def sam_head(
        self, pix_feat: torch.Tensor, high_res: list[torch.Tensor], input_masks: torch.Tensor | None, multimask: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """`_single_frame_forward` on given embeddings for N objects at once.

        Returns low-res masks (N, 1, m, m) with absent objects set to NO_OBJ_SCORE, IoU
        scores (N, 3) (N, 1 with multimask False), object pointers (N, C) and object score
        logits (N, 1). With multimask False the decoder's single-mask output and its token
        (token 0) are used, as Meta's `_forward_sam_heads(multimask_output=False)` does.
        """
        t = self.tracker
        n = pix_feat.shape[0]
        # no point prompt: one padding point with label -1, exactly as the original pads
        points = pix_feat.new_zeros(n, 1, 1, 2)
        labels = -torch.ones(n, 1, 1, dtype=torch.int32, device=pix_feat.device)
        if input_masks is not None and tuple(input_masks.shape[-2:]) != tuple(t.prompt_encoder.mask_input_size):
            input_masks = nn.functional.interpolate(
                input_masks.float(), size=t.prompt_encoder.mask_input_size, align_corners=False, mode="bilinear", antialias=True
            )
        sparse, dense = t.prompt_encoder(input_points=points, input_labels=labels, input_boxes=None, input_masks=input_masks)
        masks, iou, tokens, obj_score = t.mask_decoder(
            image_embeddings=pix_feat,
            image_positional_embeddings=self.image_pe.expand(n, -1, -1, -1),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            high_resolution_features=high_res,
        )
        # masks (N, 1, 3, m, m), iou (N, 1, 3), tokens (N, 1, 3, C), obj_score (N, 1, 1)
        appearing = obj_score > 0
        masks = torch.where(appearing[..., None, None], masks, torch.full_like(masks, NO_OBJ_SCORE))
        best = torch.argmax(iou, dim=-1)  # (N, 1); ties -> first, as torch.argmax
        m_h, m_w = masks.shape[-2:]
        low_res = torch.gather(masks, 2, best[:, :, None, None, None].expand(-1, -1, 1, m_h, m_w))[:, 0]  # (N, 1, m, m)
        token = torch.gather(tokens, 2, best[:, :, None, None].expand(-1, -1, 1, tokens.shape[-1]))[:, 0, 0]  # (N, C)
        pointer = t.object_pointer_proj(token)
        lam = appearing[:, 0].to(pointer.dtype)  # (N, 1)
        pointer = lam * pointer + (1 - lam) * t.no_object_pointer
        return low_res, iou[:, 0], pointer, obj_score[:, 0]

    def high_res_list(self, feat_s0: torch.Tensor, feat_s1: torch.Tensor, n: int) -> list[torch.Tensor]:
        return [feat_s0.expand(n, -1, -1, -1), feat_s1.expand(n, -1, -1, -1)]


class TrackerInitGraph(_TrackerGraph):
    """A new object from a detection mask (what `_use_mask_as_output` does for detections).

    trk_feat_s0, trk_feat_s1, trk_vision_feat (1, ...), masks (N, 1, m, m)
    -> low_res_masks (N, 1, m, m), object_pointer (N, C), object_score_logits (N, 1)

    `semantics` (medsam3_export.semantics.TRACKER_SEMANTICS):
    * "meta": `masks` are the detection's mask logits. As Meta's `_tracker_add_new_objects`,
      they are resized (bilinear) to the tracker's input mask size (16x the token grid) and
      thresholded at 0; `mask_downsample` brings that mask to the prompt encoder's size and
      the pointer is the decoder's single-mask token (Meta runs these SAM heads with
      multimask_output=False).
    * "transformers": `masks` are binary {0, 1}, resized to the image size as
      `Sam3TrackerVideoModel._use_mask_as_output` does, and the pointer is the best of the
      three multimask tokens (its `_single_frame_forward` defaults to multimask output).
    """

    def __init__(self, video_model: nn.Module, semantics: str = "meta") -> None:
        super().__init__(video_model)
        self.multimask = semantics == "transformers"

    def forward(
        self, trk_feat_s0: torch.Tensor, trk_feat_s1: torch.Tensor, trk_vision_feat: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t = self.tracker
        n = masks.shape[0]
        out_scale, out_bias = 20.0, -10.0
        if self.multimask:  # transformers
            size = (t.image_size, t.image_size)
            mask_img = nn.functional.interpolate(masks, size=size, align_corners=False, mode="bilinear", antialias=True)
        else:  # Meta: threshold the logits at the input mask size (4x the prompt encoder's mask size)
            side = 4 * t.prompt_encoder.mask_input_size[0]
            mask_img = (nn.functional.interpolate(masks, size=(side, side), align_corners=False, mode="bilinear") > 0).to(masks.dtype)
            masks = mask_img
        high_res = mask_img * out_scale + out_bias
        low_res = nn.functional.interpolate(
            high_res, size=t.prompt_encoder.mask_input_size, align_corners=False, mode="bilinear", antialias=True
        )
        _, _, pointer, _ = self.sam_head(
            # repeat, not expand: OpenVINO's CPU plugin (2025) fails on a Conv fed by a broadcast Expand
            trk_vision_feat.repeat(n, 1, 1, 1),
            self.high_res_list(trk_feat_s0, trk_feat_s1, n),
            t.mask_downsample(mask_img),
            multimask=self.multimask,
        )
        appearing = (masks.flatten(1) > 0).any(dim=1, keepdim=True).to(pointer.dtype)  # (N, 1)
        score = out_scale * appearing + out_bias
        pointer = appearing * pointer + (1 - appearing) * t.no_object_pointer
        return low_res, pointer, score


class TrackerStepGraph(_TrackerGraph):
    """One tracking step: memory attention over each object's bank, then the SAM head.

    Inputs (N objects, M memory frames, K object pointers, padded; see graph_contract):
      trk_feat_s0, trk_feat_s1, trk_vision_feat  this frame's tracker features (1, ...)
      mem_feats  (N, M, HW, mem)  encoded memories (stored as bfloat16 by the reference)
      mem_tpos   (N, M) int64     row of memory_temporal_positional_encoding: num_maskmem-1
                                  for conditioning frames, k-1 for the frame k steps back
      mem_valid  (N, M) bool
      obj_ptrs   (N, K, C)        object pointers
      ptr_tpos   (N, K) float32   signed frame offset / (max_object_pointers - 1)
      ptr_valid  (N, K) bool
    Outputs: low_res_masks (N, 1, m, m), iou_scores (N, 3), object_score_logits (N, 1),
    object_pointer (N, C).
    """

    def forward(
        self,
        trk_feat_s0: torch.Tensor,
        trk_feat_s1: torch.Tensor,
        trk_vision_feat: torch.Tensor,
        mem_feats: torch.Tensor,
        mem_tpos: torch.Tensor,
        mem_valid: torch.Tensor,
        obj_ptrs: torch.Tensor,
        ptr_tpos: torch.Tensor,
        ptr_valid: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        t = self.tracker
        n = mem_feats.shape[0]
        s_h, s_w = self.feat
        x = _flat(trk_vision_feat).expand(n, -1, -1) + 0.1 * self.vision_pos  # (N, HW, C)
        spatial_pos = self.memory_pos[:, None] + t.memory_temporal_positional_encoding[mem_tpos][:, :, 0]  # (N, M, HW, mem)
        ptr_tokens, ptr_pos = self._pointer_tokens(obj_ptrs, ptr_tpos)
        splits = ptr_tokens.shape[1] // obj_ptrs.shape[1]
        ptr_token_valid = ptr_valid.repeat_interleave(splits, dim=1)  # (N, K*splits)
        attn = t.memory_attention
        q = x[:, None]  # (N, 1, HW, C): the original's (batch, point_batch, seq, channels)
        for layer in attn.layers:
            q = self._memory_layer(layer, q, mem_feats, spatial_pos, mem_valid, ptr_tokens, ptr_pos, ptr_token_valid)
        conditioned = attn.layer_norm(q)[:, 0]  # (N, HW, C)
        pix_feat = conditioned.transpose(1, 2).reshape(n, self.hidden, s_h, s_w)
        low_res, iou, pointer, score = self.sam_head(pix_feat, self.high_res_list(trk_feat_s0, trk_feat_s1, n), None)
        return low_res, iou, score, pointer

    def _pointer_tokens(self, obj_ptrs: torch.Tensor, ptr_tpos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pointers split into mem-wide tokens with their temporal encodings (`_process_object_pointers`)."""
        from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import get_1d_sine_pe

        t = self.tracker
        n, k, c = obj_ptrs.shape
        if t.config.enable_temporal_pos_encoding_for_object_pointers:
            pe = t.temporal_positional_encoding_projection_layer(get_1d_sine_pe(ptr_tpos, dim=c))  # (N, K, mem)
        else:
            pe = obj_ptrs.new_zeros(n, k, self.mem_dim)
        splits = c // self.mem_dim if self.mem_dim < c else 1
        tokens = obj_ptrs.reshape(n, k * splits, c // splits)
        return tokens, pe.repeat_interleave(splits, dim=1)

    def _memory_layer(self, layer, queries, mem_feats, spatial_pos, mem_valid, ptr_tokens, ptr_pos, ptr_valid):
        """`Sam3TrackerVideoMemoryAttentionLayer.forward` with a maskable cross-attention."""
        rope = (self.rope_cos, self.rope_sin)
        q = layer.layer_norm1(queries)
        q, _ = layer.self_attn(query=q, key=q, value=q, position_embeddings=rope)
        queries = queries + layer.dropout1(q)
        q = layer.layer_norm2(queries)
        q = self._masked_cross_attention(layer.cross_attn_image, q, mem_feats, spatial_pos, mem_valid, ptr_tokens, ptr_pos, ptr_valid)
        queries = queries + layer.dropout2(q)
        q = layer.layer_norm3(queries)
        q = layer.linear2(layer.dropout(layer.activation(layer.linear1(q))))
        return queries + layer.dropout3(q)

    def _masked_cross_attention(self, mod, query, mem_feats, spatial_pos, mem_valid, ptr_tokens, ptr_pos, ptr_valid):
        """Cross-attention of (N, 1, HW, C) queries to M spatial memories and P pointer tokens.

        Same math as `Sam3TrackerVideoRoPEAttention` (RoPE on the queries and on every
        spatial memory frame, none on pointer tokens) with invalid frames/pointers masked.
        """
        from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import rotate_pairwise

        n, _, hw, _ = query.shape
        m = mem_feats.shape[1]
        heads, hd = mod.num_attention_heads, mod.head_dim
        cos, sin = self.rope_cos, self.rope_sin  # (1, HW, hd)
        q = mod.q_proj(query).view(n, hw, heads, hd).transpose(1, 2).float()  # (N, h, HW, hd)
        q = q * cos + rotate_pairwise(q) * sin
        k_sp = mod.k_proj(mem_feats + spatial_pos).view(n, m, hw, heads, hd).permute(0, 3, 1, 2, 4).float()  # (N,h,M,HW,hd)
        k_sp = k_sp * cos[:, None] + rotate_pairwise(k_sp) * sin[:, None]
        p = ptr_tokens.shape[1]
        k_pt = mod.k_proj(ptr_tokens + ptr_pos).view(n, p, heads, hd).transpose(1, 2)  # (N, h, P, hd)
        # One score matmul over all keys, the padding mask riding along as an extra key
        # column: q' = [q, 1], k' = [k, 0 or MASKED], so q'.k' = q.k for valid keys and about
        # -1e9 for padded ones, whose softmax weight underflows to exactly 0 as with -inf.
        # This avoids a concat and a masked fill over the (HW x M*HW) score matrix, the two
        # largest memory-bound passes of the step. (An object always has a valid memory.)
        valid = torch.cat([mem_valid.repeat_interleave(hw, dim=1), ptr_valid], dim=1)  # (N, M*HW+P)
        mask_col = torch.where(valid, 0.0, MASKED_SCORE).to(q.dtype)[:, None, :, None].expand(n, heads, -1, 1)
        keys = torch.cat([torch.cat([k_sp.reshape(n, heads, m * hw, hd), k_pt.to(q.dtype)], dim=2), mask_col], dim=-1)
        q_aug = torch.cat([q, torch.ones_like(q[..., :1])], dim=-1)  # (N, h, HW, hd+1)
        kv_in = mem_feats.shape[-1]
        if self.use_fused_attention:
            from ..attention import attention

            # the same q'/k' with the mask column; values as in the narrow branch below
            tokens = torch.cat([mem_feats.reshape(n, m * hw, kv_in), ptr_tokens], dim=1)[:, None]  # (N, 1, M*HW+P, kv_in)
            if kv_in < hd:
                attended = attention(q_aug, keys, tokens.to(q.dtype), None, mod.scaling).transpose(1, 2)  # (N, h, HW, kv_in)
                w_v = mod.v_proj.weight.view(heads, hd, kv_in)
                out = torch.matmul(attended, w_v.transpose(-1, -2)) + mod.v_proj.bias.view(heads, 1, hd)
            else:
                values = mod.v_proj(tokens[:, 0]).view(n, m * hw + p, heads, hd).transpose(1, 2)
                out = attention(q_aug, keys, values.to(q.dtype), None, mod.scaling).transpose(1, 2)
            out = out.transpose(1, 2).reshape(n, 1, hw, heads * hd)
            return mod.o_proj(out)
        scores = torch.matmul(q_aug, keys.transpose(-1, -2)) * mod.scaling  # (N, h, HW, M*HW+P)
        weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        if kv_in < hd:
            # The value projection is affine and every row of `weights` sums to 1, so
            # weights @ (X W^T + b) == (weights @ X) W^T + b: attend over the narrow memory
            # tokens (64 wide) and project once, instead of projecting every memory token to
            # head_dim first. Same math, rounding aside; (head_dim / kv_in)x fewer FLOPs in
            # the largest matmul of the step (SAM3: 256 / 64 = 4x).
            tokens = torch.cat([mem_feats.reshape(n, m * hw, kv_in), ptr_tokens], dim=1)[:, None]  # (N, 1, M*HW+P, kv_in)
            attended = torch.matmul(weights, tokens)  # (N, h, HW, kv_in)
            w_v = mod.v_proj.weight.view(heads, hd, kv_in)
            out = torch.matmul(attended, w_v.transpose(-1, -2)) + mod.v_proj.bias.view(heads, 1, hd)  # (N, h, HW, hd)
        else:
            v_sp = mod.v_proj(mem_feats).view(n, m, hw, heads, hd).permute(0, 3, 1, 2, 4)
            v_pt = mod.v_proj(ptr_tokens).view(n, p, heads, hd).transpose(1, 2)
            values = torch.cat([v_sp.reshape(n, heads, m * hw, hd), v_pt], dim=2)
            out = torch.matmul(weights, values)  # (N, h, HW, hd)
        out = out.transpose(1, 2).reshape(n, 1, hw, heads * hd)
        return mod.o_proj(out)


class MemoryEncoderGraph(_TrackerGraph):
    """`_encode_new_memory` for N objects of one frame.

    trk_vision_feat (1, C, s, s), mask_logits (N, 1, 16s, 16s) already resized to the memory
    encoder's input size, binarize (N, 1) bool (True: masks that came from a prompt are
    thresholded at 0; False: sigmoid), object_score_logits (N, 1)
    -> maskmem_features (N, HW, mem), float32 (the reference stores bfloat16; the host rounds).
    """

    def forward(
        self, trk_vision_feat: torch.Tensor, mask_logits: torch.Tensor, binarize: torch.Tensor, object_score_logits: torch.Tensor
    ) -> torch.Tensor:
        t = self.tracker
        n = mask_logits.shape[0]
        prob = torch.where(binarize[:, :, None, None], (mask_logits > 0).to(mask_logits.dtype), torch.sigmoid(mask_logits))
        mask_for_mem = prob * self.sigmoid_scale + self.sigmoid_bias
        feats, _ = t.memory_encoder(trk_vision_feat.expand(n, -1, -1, -1), mask_for_mem)
        if t.occlusion_spatial_embedding_parameter is not None:
            absent = 1 - (object_score_logits > 0).to(feats.dtype)  # (N, 1)
            feats = feats + absent[..., None, None] * t.occlusion_spatial_embedding_parameter[..., None, None]
        return _flat(feats)
