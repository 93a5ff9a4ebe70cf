"""The tracker graph wrappers equal transformers' own Sam3TrackerVideo methods, object by object."""

from __future__ import annotations

import pytest
import torch

from medsam3_rt import graph_contract as gc

torch.manual_seed(0)


@pytest.fixture(scope="module")
def video():
    from medsam3_export import random_checkpoint

    return random_checkpoint("tiny", video=True, seed=1, init_std=0.05)


@pytest.fixture(scope="module")
def frame_features(video):
    """Tracker features of one random frame, as the image backbone graph produces them."""
    from medsam3_export.graphs.image_backbone import ImageBackboneGraph

    with torch.no_grad():
        out = ImageBackboneGraph(video.detector, video.video)(torch.randn(1, 3, 224, 224))
    return dict(zip(gc.DET_FPN + gc.TRK_FEATURES, out, strict=True))


def _seq_first(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).permute(2, 0, 1)  # (B, C, H, W) -> (HW, B, C)


def _random_masks(n: int, size: int) -> torch.Tensor:
    masks = torch.zeros(n, 1, size, size)
    for i in range(n):
        y, x = torch.randint(4, size // 2, (2,))
        masks[i, 0, y : y + size // 3, x : x + size // 4] = 1
    return masks


def test_init_graph_equals_use_mask_as_output(video, frame_features) -> None:
    from medsam3_export.graphs.tracker import TrackerInitGraph

    trk = video.video.tracker_model
    f0, f1, vf = (frame_features[k] for k in gc.TRK_FEATURES)
    masks = _random_masks(3, 64)
    masks[2] = 0  # an empty mask: absent object
    with torch.no_grad():
        low, ptr, score = TrackerInitGraph(video.video, "transformers")(f0, f1, vf, masks)
        for i in range(3):
            ref = trk._use_mask_as_output(vf, [f0, f1], masks[i : i + 1])
            torch.testing.assert_close(low[i : i + 1], ref.pred_masks, rtol=0, atol=1e-5)
            torch.testing.assert_close(ptr[i : i + 1], ref.object_pointer.reshape(1, -1), rtol=0, atol=1e-5)
            torch.testing.assert_close(score[i : i + 1], ref.object_score_logits[:, 0], rtol=0, atol=0)


def test_init_graph_meta_pointer_is_the_single_mask_token(video, frame_features) -> None:
    """Tracker semantics "meta": the detection logits are resized to the tracker's input mask
    size and thresholded at 0, and the pointer is the decoder's single-mask token, as Meta's
    `_tracker_add_new_objects` -> `_use_mask_as_output` (SAM heads with multimask_output=False)."""
    from medsam3_export.graphs.tracker import TrackerInitGraph

    trk = video.video.tracker_model
    f0, f1, vf = (frame_features[k] for k in gc.TRK_FEATURES)
    logits = _random_masks(3, 64) * 4 - 2 + torch.randn(3, 1, 64, 64) * 0.5
    logits[2] = -1  # an empty mask: absent object
    side = 4 * trk.prompt_encoder.mask_input_size[0]
    with torch.no_grad():
        low, ptr, score = TrackerInitGraph(video.video, "meta")(f0, f1, vf, logits)
        multi = TrackerInitGraph(video.video, "transformers")(f0, f1, vf, (logits >= 0).float())[1]
        for i in range(2):
            mask_in = (torch.nn.functional.interpolate(logits[i : i + 1], size=(side, side), mode="bilinear") > 0).float()
            prompt = trk.mask_downsample(mask_in)
            single = trk._single_frame_forward(input_masks=prompt, image_embeddings=[f0, f1, vf], multimask_output=False)
            torch.testing.assert_close(ptr[i : i + 1], single.object_pointer.reshape(1, -1), rtol=0, atol=1e-5)
            assert float(score[i]) == 10.0
            expected_low = torch.nn.functional.interpolate(mask_in * 20 - 10, size=low.shape[-2:], mode="bilinear", antialias=True)
            torch.testing.assert_close(low[i : i + 1], expected_low, rtol=0, atol=1e-5)
        torch.testing.assert_close(ptr[2:], trk.no_object_pointer, rtol=0, atol=0)  # absent: no-object pointer
        assert float(score[2]) == -10.0
    assert (ptr[:2] - multi[:2]).abs().max() > 1e-4, "the two semantics must pick different tokens (10x the tolerance above)"


@pytest.mark.parametrize("binarize", [True, False])
def test_memory_encoder_equals_encode_new_memory(video, frame_features, binarize: bool) -> None:
    from medsam3_export.graphs.tracker import MemoryEncoderGraph

    trk = video.video.tracker_model
    vf = frame_features[gc.TRK_VISION_FEAT]
    logits = torch.randn(2, 1, 256, 256) * 5
    scores = torch.tensor([[3.0], [-2.0]])  # the second object is occluded: occlusion embedding added
    with torch.no_grad():
        got = MemoryEncoderGraph(video.video)(vf, logits, torch.full((2, 1), binarize), scores)
        ref, _pos = trk._encode_new_memory(_seq_first(vf).expand(-1, 2, -1), logits, scores[:, :, None], binarize)
    # the reference stores bfloat16 memories: compare at that precision
    torch.testing.assert_close(got.to(torch.bfloat16).float(), ref.permute(1, 0, 2).float(), rtol=0, atol=0)


def test_step_graph_equals_original_for_objects_with_different_histories(video, frame_features) -> None:
    """Two objects, 2 and 3 memory frames, 1 and 3 pointers, batched with padding."""
    from medsam3_export.graphs.tracker import TrackerStepGraph

    trk = video.video.tracker_model
    f0, f1, vf = (frame_features[k] for k in gc.TRK_FEATURES)
    hw, mem, c = 16 * 16, 64, 128
    neck_pe = video.video.tracker_neck.position_encoding(torch.Size([1, c, 16, 16]), "cpu", torch.float32)
    mem_pe = trk.memory_encoder.position_encoding(torch.Size([1, mem, 16, 16]), "cpu", torch.float32)
    histories = [
        {"offsets": [0, 1], "ptr_offsets": [3]},  # a conditioning frame + the previous frame; one pointer
        {"offsets": [0, 2, 1], "ptr_offsets": [5, 1, 2]},
    ]
    feats = [torch.randn(len(h["offsets"]), hw, mem).to(torch.bfloat16).float() for h in histories]
    ptrs = [torch.randn(len(h["ptr_offsets"]), c) for h in histories]
    n, m_max, k_max = 2, 3, 3
    mem_feats = torch.zeros(n, m_max, hw, mem)
    mem_tpos, mem_valid = torch.zeros(n, m_max, dtype=torch.long), torch.zeros(n, m_max, dtype=torch.bool)
    obj_ptrs, ptr_tpos, ptr_valid = torch.zeros(n, k_max, c), torch.zeros(n, k_max), torch.zeros(n, k_max, dtype=torch.bool)
    num_maskmem = trk.num_maskmem
    for i, h in enumerate(histories):
        for j, off in enumerate(h["offsets"]):
            mem_feats[i, j], mem_valid[i, j] = feats[i][j], True
            mem_tpos[i, j] = num_maskmem - 1 if off == 0 else off - 1
        for j, off in enumerate(h["ptr_offsets"]):
            obj_ptrs[i, j], ptr_valid[i, j], ptr_tpos[i, j] = ptrs[i][j], True, off / 15.0
    with torch.no_grad():
        low, iou, score, ptr = TrackerStepGraph(video.video)(f0, f1, vf, mem_feats, mem_tpos, mem_valid, obj_ptrs, ptr_tpos, ptr_valid)
        for i, h in enumerate(histories):
            outputs = [
                (off, {"maskmem_features": feats[i][j][:, None], "maskmem_pos_enc": _seq_first(mem_pe)})
                for j, off in enumerate(h["offsets"])
            ]
            memories, positions = trk._build_memory_attention_inputs(outputs, "cpu")
            pointers, pointer_pos = trk._process_object_pointers(h["ptr_offsets"], list(ptrs[i][:, None]), 16, 1, c, "cpu")
            memory = torch.cat([*memories, pointers])
            conditioned = trk.memory_attention(
                current_vision_features=_seq_first(vf),
                current_vision_position_embeddings=_seq_first(neck_pe),
                memory=memory,
                memory_posision_embeddings=torch.cat([*positions, pointer_pos]),
                num_object_pointer_tokens=pointers.shape[0],
            )
            pix = conditioned.squeeze(1).transpose(1, 2).view(1, c, 16, 16)
            ref = trk._single_frame_forward(image_embeddings=[f0, f1, pix], multimask_output=True)
            torch.testing.assert_close(low[i : i + 1], ref.pred_masks, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(ptr[i : i + 1], ref.object_pointer.reshape(1, -1), rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(score[i : i + 1], ref.object_score_logits[:, 0], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(iou[i : i + 1], ref.iou_scores[:, 0], rtol=1e-4, atol=1e-5)
