"""Memory selection (memory.py) against Meta's own code: which frames a tracker step reads.

Meta's video tracker (`sam3` 0.1.4, `use_memory_selection=True` in `build_sam3_video_model`)
reads only tracked frames whose score (`cal_mem_score`) is above `mf_threshold`, counted by
rank (`frame_filter`, `_prepare_memory_conditioned_features`). Here Meta's methods run
unedited on a stand-in `self` that holds only what they read; its memory features, pointers
and temporal encodings carry frame indices, so the memory-attention input Meta assembles
tells which frame went where. The runtime's `gather` (with its bounded pruning applied
frame by frame, while Meta keeps every frame) must give the same frames, temporal rows and
pointer offsets on every frame of a long track with occluded stretches.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
from meta_reference import cpu_only, meta_available

from medsam3_rt import graph_contract as gc
from medsam3_rt.tracker.masks import to_bfloat16
from medsam3_rt.tracker.memory import MemoryEntry, ObjectTrack, gather, group_score, memory_score, valid_frames

REASON = meta_available()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

NUM_MASKMEM, MAX_PTRS, THRESHOLD = 7, 16, 0.01
C = 4  # pointer width = memory width: one token per pointer
H = W = 2
K = 100  # memories and pointers hold frame + K * object (integers below 256: exact in bfloat16)


def _meta_self(captured: dict) -> types.SimpleNamespace:
    """What `Sam3TrackerBase._prepare_memory_conditioned_features` and `frame_filter` read."""
    import torch
    from sam3.model.sam3_tracker_base import Sam3TrackerBase

    ns = types.SimpleNamespace(
        num_maskmem=NUM_MASKMEM,
        hidden_dim=C,
        mem_dim=C,
        max_cond_frames_in_attn=4,
        keep_first_cond_frame=False,
        training=False,
        memory_temporal_stride_for_eval=1,
        use_memory_selection=True,
        max_obj_ptrs_in_encoder=MAX_PTRS,
        mf_threshold=THRESHOLD,
        # row k of the temporal encoding is the number k: the assembled input names its row
        maskmem_tpos_enc=torch.arange(NUM_MASKMEM, dtype=torch.float32)[:, None, None].expand(NUM_MASKMEM, 1, C).clone(),
    )
    ns.frame_filter = lambda *a: Sam3TrackerBase.frame_filter(ns, *a)

    def tpos(rel_pos_list, device, max_abs_pos=None, dummy=False):
        captured["ptr_pos"] = [p / (max_abs_pos - 1) for p in rel_pos_list]
        return torch.zeros(len(rel_pos_list), C)

    def encoder(src, src_key_padding_mask, src_pos, prompt, prompt_pos, prompt_key_padding_mask, feat_sizes, num_obj_ptr_tokens):
        captured.update(prompt=prompt.clone(), prompt_pos=prompt_pos.clone(), n_ptr=num_obj_ptr_tokens)
        return {"memory": src[-1]}

    ns._get_tpos_enc = tpos
    ns.transformer = types.SimpleNamespace(encoder=encoder)
    return ns


def _meta_reads(output_dict: dict, frame: int, batch: int, num_frames: int) -> list[dict]:
    """Per object of Meta's batch: [(memory frame, temporal row)], [(pointer frame, offset)]."""
    import torch
    from sam3.model.sam3_tracker_base import Sam3TrackerBase

    captured: dict = {}
    ns = _meta_self(captured)
    feats = [torch.zeros(H * W, batch, C)]
    with cpu_only():
        Sam3TrackerBase._prepare_memory_conditioned_features(ns, frame, False, feats, feats, [(H, W)], output_dict, num_frames)
    prompt, pos, n_ptr = captured["prompt"], captured["prompt_pos"], captured["n_ptr"]
    n_mem = (prompt.shape[0] - n_ptr) // (H * W)
    out = []
    for b in range(batch):
        mems = [(round(float(prompt[j * H * W, b, 0]) - K * b), int(pos[j * H * W, b, 0])) for j in range(n_mem)]
        ptr = prompt[n_mem * H * W :, b, 0]
        ptrs = [(round(float(v) - K * b), round(p, 6)) for v, p in zip(ptr.tolist(), captured["ptr_pos"], strict=True)]
        out.append({"mems": mems, "ptrs": ptrs})
    return out


def _ours(feeds: dict[str, np.ndarray], i: int, obj: int) -> dict:
    valid_m, valid_p = feeds[gc.MEM_VALID][i], feeds[gc.PTR_VALID][i]
    mems = [(round(float(feeds[gc.MEM_FEATS][i, j, 0, 0]) - K * obj), int(feeds[gc.MEM_TPOS][i, j])) for j in np.flatnonzero(valid_m)]
    ptrs = [
        (round(float(feeds[gc.OBJ_PTRS][i, j, 0]) - K * obj), round(float(feeds[gc.PTR_TPOS][i, j]), 6)) for j in np.flatnonzero(valid_p)
    ]
    return {"mems": mems, "ptrs": ptrs}


def _entry(frame: int, obj: int) -> MemoryEntry:
    value = float(frame + K * obj)
    return MemoryEntry(np.full(C, value, np.float32), to_bfloat16(np.full((H * W, C), value, np.float32)))


def test_group_score_is_metas_cal_mem_score() -> None:
    """Per-object terms combined over a group equal Meta's `cal_mem_score` on the batch,
    including its (B, 1) x (B,) broadcast (mean of object scores x mean of IoUs)."""
    import torch
    from sam3.model.sam3_tracker_base import Sam3TrackerBase

    rng = np.random.default_rng(0)
    for batch in (1, 2, 3, 5):
        for _ in range(20):
            logits = rng.normal(0, 3, (batch, 1)).astype(np.float32)
            ious = rng.random((batch, 3)).astype(np.float32)
            meta = Sam3TrackerBase.cal_mem_score(None, torch.from_numpy(logits), torch.from_numpy(ious).max(-1)[0])
            ours = group_score([memory_score(logits[b, 0], ious[b]) for b in range(batch)])
            assert ours == pytest.approx(float(meta), rel=1e-6), (batch, ours, float(meta))  # sigmoid: 1 ulp apart at most
    # the broadcast matters: two objects, one occluded
    terms = [memory_score(5.0, np.array([0.9, 0.1, 0.2])), memory_score(-1.0, np.array([0.1, 0.1, 0.1]))]
    assert group_score(terms) == pytest.approx((terms[0][0] / 2) * (0.9 + 0.1) / 2, rel=1e-6)


@pytest.mark.parametrize("batch", [1, 2])
def test_gather_reads_the_frames_metas_memory_selection_reads(batch: int) -> None:
    """A track created on frame 3, tracked to frame 60 with occluded stretches (scores at or
    below the threshold): on every frame our memory and pointer inputs come from the same
    frames, with the same temporal rows and pointer offsets, as Meta's. Our banks are pruned
    after every frame (bounded); Meta's keep everything."""
    import torch

    rng = np.random.default_rng(batch)
    first, last, num_frames = 3, 60, 1000  # Meta normalises offsets by min(num_frames, 16) - 1
    tracks = [ObjectTrack(obj, 0, 0.9, first) for obj in range(batch)]
    for obj, tr in enumerate(tracks):
        tr.cond[first] = _entry(first, obj)
    output_dict: dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    stack = lambda f: torch.stack([torch.from_numpy(f(obj)) for obj in range(batch)])  # noqa: E731
    output_dict["cond_frame_outputs"][first] = {
        "maskmem_features": stack(lambda o: np.full((C, H, W), first + K * o, np.float32)),
        "maskmem_pos_enc": [torch.zeros(batch, C, H, W)],
        "obj_ptr": stack(lambda o: np.full(C, first + K * o, np.float32)),
    }
    occluded = set(range(10, 14)) | set(range(20, 45)) | {50, 52, 53}
    checked = 0
    for t in range(first + 1, last):
        reads = _meta_reads(output_dict, t, batch, num_frames)
        feeds = gather(tracks, t, num_maskmem=NUM_MASKMEM, max_pointers=MAX_PTRS, hw=H * W, mem_dim=C, channels=C, selection=THRESHOLD)
        for obj in range(batch):
            assert _ours(feeds, obj, obj) == reads[obj], f"frame {t}, object {obj}"
            checked += len(reads[obj]["mems"]) + len(reads[obj]["ptrs"])
        # this frame's tracker outputs: object score logits (<= 0 while occluded) and IoUs
        logits = rng.normal(-2.0 if t in occluded else 3.0, 1.0, (batch, 1)).astype(np.float32)
        ious = rng.random((batch, 3)).astype(np.float32)
        if t == 30:  # a barely positive score: below the threshold although the object is "present"
            logits[:] = 1e-3
        for obj, tr in enumerate(tracks):
            tr.recent[t] = _entry(t, obj)
            tr.scores[t] = memory_score(logits[obj, 0], ious[obj])
        from sam3.model.sam3_tracker_base import Sam3TrackerBase

        ious_t = torch.from_numpy(ious).max(-1)[0]
        output_dict["non_cond_frame_outputs"][t] = {
            "maskmem_features": stack(lambda o, t=t: np.full((C, H, W), t + K * o, np.float32)),
            "maskmem_pos_enc": [torch.zeros(batch, C, H, W)],
            "obj_ptr": stack(lambda o, t=t: np.full(C, t + K * o, np.float32)),
            "eff_iou_score": Sam3TrackerBase.cal_mem_score(None, torch.from_numpy(logits), ious_t),
        }
        valid = valid_frames(tracks, t, THRESHOLD)
        for tr in tracks:
            tr.prune(t, num_maskmem=NUM_MASKMEM, max_pointers=MAX_PTRS, max_cond=4, valid=valid[first])
            assert len(tr.recent) <= MAX_PTRS - 1 and sum(e.maskmem is not None for e in tr.recent.values()) <= NUM_MASKMEM - 1
    assert checked > 500
