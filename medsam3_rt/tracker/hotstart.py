"""Meta's hot-start rules (SAM3 video, forward/causal direction), as a pure function.

Meta's `Sam3VideoBase._process_hotstart` removes a young object (first seen less than
`hotstart_delay` frames ago) once it has gone unmatched by detections on
`hotstart_unmatch_thresh` frames, or once it has shared a detection with an older object on
`hotstart_dup_thresh` frames; it also suppresses (hides, keeps) objects whose keep-alive
counter reached 0 when `suppress_unmatched_only_within_hotstart` is off. This is what bounds
Meta's object set on a stream where the detector keeps firing on noise. Only the forward
direction is implemented: it is the causal one a live stream can run.

`policy.merge` runs it in mode "meta" (the default); tests/tracker/test_meta_video_hotstart.py
holds it equal to Meta's own method frame by frame. Meta keeps this state for every object
it ever saw; `prune` keeps what can still change a decision, so a live stream stays bounded.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from . import masks as mk


@dataclass(frozen=True)
class HotstartConfig:
    """Meta's names and its `build_sam3_video_model` defaults."""

    hotstart_delay: int = 15
    hotstart_unmatch_thresh: int = 8
    hotstart_dup_thresh: int = 8
    init_trk_keep_alive: int = 30
    max_trk_keep_alive: int = 30
    min_trk_keep_alive: int = -1
    suppress_unmatched_only_within_hotstart: bool = True
    decrease_trk_keep_alive_for_empty_masklets: bool = False


@dataclass
class HotstartState:
    """What Meta keeps across frames in `rank0_metadata` for these rules."""

    first_frame: dict[int, int] = field(default_factory=dict)
    unmatched_frames: dict[int, list[int]] = field(default_factory=dict)
    keep_alive: dict[int, int] = field(default_factory=dict)
    overlap_frames: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    removed: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class HotstartStep:
    """One frame's answer: the new state, objects removed now, objects suppressed on this frame."""

    state: HotstartState
    removed: frozenset[int]
    suppressed: frozenset[int]


def hotstart_step(
    state: HotstartState,
    t: int,
    det_to_matched: Mapping[int, Iterable[int]],
    new_obj_ids: Iterable[int],
    empty_obj_ids: Iterable[int],
    unmatched_obj_ids: Iterable[int],
    cfg: HotstartConfig,
) -> HotstartStep:
    """Frame t of `_process_hotstart` (reverse=False); `state` is not modified.

    det_to_matched   detection index -> ids of the tracks it matched (Meta's det_to_matched_trk_obj_ids)
    new_obj_ids      objects created on this frame
    empty_obj_ids    tracks whose mask is empty on this frame
    unmatched_obj_ids  non-empty tracks no detection matched
    """
    s = copy.deepcopy(state)
    newly: set[int] = set()
    suppressed: set[int] = set()
    diff = t - cfg.hotstart_delay
    for o in new_obj_ids:
        s.first_frame.setdefault(int(o), t)
        if int(o) in s.keep_alive:
            raise ValueError(f"object {int(o)} is created twice")
        s.keep_alive[int(o)] = cfg.init_trk_keep_alive
    matched = {int(o) for objs in det_to_matched.values() for o in objs}
    for o in matched:
        s.keep_alive[o] = min(cfg.max_trk_keep_alive, s.keep_alive[o] + 1)
    for o in map(int, unmatched_obj_ids):
        s.unmatched_frames.setdefault(o, []).append(t)
        s.keep_alive[o] = max(cfg.min_trk_keep_alive, s.keep_alive[o] - 1)
    if cfg.decrease_trk_keep_alive_for_empty_masklets:
        for o in map(int, empty_obj_ids):
            s.keep_alive[o] = max(cfg.min_trk_keep_alive, s.keep_alive[o] - 1)
    for o, frames in s.unmatched_frames.items():
        if o in s.removed or o in newly:
            continue
        if len(frames) >= cfg.hotstart_unmatch_thresh and s.first_frame[o] > diff:
            newly.add(o)
        elif s.keep_alive[o] <= 0 and not cfg.suppress_unmatched_only_within_hotstart:
            suppressed.add(o)
    for objs in det_to_matched.values():
        objs = [int(o) for o in objs]
        if len(objs) < 2:
            continue
        first = min(objs, key=lambda x: s.first_frame[x])  # ties: the first listed, as Meta's min()
        for o in objs:
            if o != first:
                s.overlap_frames.setdefault((first, o), []).append(t)
    for (_, o), frames in s.overlap_frames.items():
        if o in s.removed or o in newly:
            continue
        if s.first_frame[o] > diff and len(frames) >= cfg.hotstart_dup_thresh:
            newly.add(o)
    s.removed |= newly
    return HotstartStep(s, frozenset(newly), frozenset(suppressed))


def matched_tracks(
    det_masks: np.ndarray,
    det_prompt_ids: np.ndarray,
    trk_masks: np.ndarray,
    trk_obj_ids: np.ndarray,
    trk_prompt_ids: np.ndarray,
    assoc_iou_thresh: float,
) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """The association events `hotstart_step` reads that `policy.associate` does not return.

    Returns (detection index -> ids of the tracks it overlaps at IoU >= assoc_iou_thresh, ids of
    the tracks with an empty mask), as Meta's `_associate_det_trk` (det_to_matched_trk_obj_ids,
    empty_trk_obj_ids). Meta tracks one prompt per video; here a detection only matches tracks
    of its own prompt, which is Meta's rule whenever a single prompt is used.
    """
    trk_bin = trk_masks > 0
    empty = trk_obj_ids[~trk_bin.any(axis=(1, 2))].astype(np.int64)
    if len(trk_masks) == 0:
        return {}, empty
    ious = mk.mask_iou(det_masks > 0, trk_bin)
    ious = np.where(det_prompt_ids[:, None] == trk_prompt_ids[None, :], ious, 0.0)
    return {d: trk_obj_ids[ious[d] >= assoc_iou_thresh].astype(np.int64) for d in range(len(det_masks))}, empty


def prune(state: HotstartState, alive: Iterable[int], t: int, cfg: HotstartConfig) -> HotstartState:
    """`state` without what can no longer change a decision (in place; returned).

    Objects no longer tracked are dropped. An object first seen at or before t - hotstart_delay
    is past its hot start: no rule can remove it any more, so only its last unmatched frame
    (the keep-alive suppression looks for any) and none of the overlaps where it is the
    younger object are kept; its keep-alive counter stays.
    """
    live = {int(o) for o in alive}
    horizon = t - cfg.hotstart_delay
    state.first_frame = {o: f for o, f in state.first_frame.items() if o in live}
    state.keep_alive = {o: k for o, k in state.keep_alive.items() if o in live}
    state.unmatched_frames = {o: (f if state.first_frame[o] > horizon else f[-1:]) for o, f in state.unmatched_frames.items() if o in live}
    state.overlap_frames = {
        (a, b): f for (a, b), f in state.overlap_frames.items() if a in live and b in live and state.first_frame[b] > horizon
    }
    state.removed = set()
    return state
