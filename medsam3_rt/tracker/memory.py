"""Per-object memory banks: what each tracked object carries from frame to frame, bounded.

An object keeps at most `max_cond_frames` conditioning entries (the frame it was created
on, and frames re-anchored by a confident detection) and the entries of at most
`max_object_pointers - 1` tracked frames; only the last `num_maskmem - 1` of those keep their
spatial memory (the object pointer is all older frames contribute). Spatial memories are
stored as bfloat16 bit patterns, as transformers stores them, which also halves their size.

Which tracked frames a step reads:
- without memory selection (transformers' `Sam3TrackerVideoModel`): the last frames, by
  frame distance;
- with memory selection (Meta's video tracker, `use_memory_selection=True`): only frames whose
  memory score is above a threshold, counted by rank, plus always the previous frame
  (`Sam3TrackerBase.frame_filter`). A frame's score is computed over the objects added
  together (one Meta tracker state, `group`; `group_score`), so a frame where they are
  occluded (object score logit <= 0) is skipped and the memories before it are used instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .. import graph_contract as gc
from .masks import from_bfloat16


@dataclass(slots=True)
class MemoryEntry:
    """What one frame leaves in an object's bank."""

    pointer: np.ndarray  # (C,) float32 object pointer
    maskmem: np.ndarray | None = None  # (HW, mem) uint16 bfloat16 bits; None until encoded


def memory_score(object_score_logit: float, iou_scores: np.ndarray) -> tuple[float, float]:
    """One object's terms of the memory-selection score on a tracked frame (Meta's `cal_mem_score`).

    (the object score rescaled to [0, 1] where it is positive, 0 otherwise; the best predicted
    IoU), float32 as Meta's tensors. The frame's score combines them over a group (`group_score`).
    """
    logit = np.float32(object_score_logit)
    norm = np.float32(2.0) / (np.float32(1.0) + np.exp(-logit)) - np.float32(1.0) if logit > 0 else np.float32(0.0)
    return float(norm), float(np.max(np.asarray(iou_scores, np.float32)))


def group_score(terms: Sequence[tuple[float, float]]) -> float:
    """A frame's memory-selection score for the objects of one group, exactly as Meta computes it.

    Meta's `cal_mem_score` multiplies object scores shaped (B, 1) by IoUs shaped (B,), which
    broadcasts to (B, B) before `.mean()`: for two or more objects the score is
    mean(object score) x mean(IoU), not the mean of the products. Reproduced, in float32.
    """
    norm = np.asarray([n for n, _ in terms], np.float32)
    iou = np.asarray([v for _, v in terms], np.float32)
    return float(np.mean(norm[:, None] * iou[None, :], dtype=np.float32))


@dataclass(slots=True)
class ObjectTrack:
    obj_id: int
    prompt_id: int
    det_score: float  # detection score when the object was created (Sam3VideoModel's obj_id_to_score)
    first_frame: int  # also the object's group: objects added on the same frame share memory selection
    cond: dict[int, MemoryEntry] = field(default_factory=dict)  # conditioning frames
    recent: dict[int, MemoryEntry] = field(default_factory=dict)  # tracked (non-conditioning) frames
    # memory-selection scores of tracked frames (`memory_score`), kept a little longer than their
    # entries: which frames are selected depends on how many valid frames precede them
    scores: dict[int, tuple[float, float]] = field(default_factory=dict)
    last_occluded: int = -1  # last frame with an empty or suppressed mask; -1 never
    keep_alive: int = 0
    empty_frames: int = 0  # consecutive frames with an empty output mask

    def entry(self, frame: int) -> MemoryEntry | None:
        return self.cond.get(frame, self.recent.get(frame))

    def promote(self, frame: int) -> None:
        """Re-anchor: this frame's entry becomes a conditioning frame."""
        if frame in self.recent:
            self.cond[frame] = self.recent.pop(frame)
        self.scores.pop(frame, None)

    def prune(self, frame: int, *, num_maskmem: int, max_pointers: int, max_cond: int, valid: Sequence[int] | None = None) -> None:
        """Drop what frame+1 and later can no longer read.

        `valid`: with memory selection, the group's tracked frames up to `frame` whose score is
        above the threshold (`valid_frames`). Frame+1 reads `frame` and the latest valid frames
        (`select_frames`), later frames only newer ones: the entries of `frame` and of the latest
        valid frames are kept, `max_pointers - 1` in all, the last `num_maskmem - 1` of them with
        their spatial memory (the same bounds as without selection), and the scores of one more
        (it still counts towards the `max_pointers - 1` frames selected, though it gives nothing).
        """
        if valid is None:
            keep = {t for t in self.recent if t > frame - (max_pointers - 1)}
            spatial = {t for t in keep if t > frame - (num_maskmem - 1)}
            self.scores = {t: v for t, v in self.scores.items() if t in keep}
        else:
            ordered = sorted({*(t for t in valid if t < frame and t in self.scores), *([frame] if frame in self.scores else [])})
            keep = set(ordered[-(max_pointers - 1) :]) if max_pointers > 1 else set()
            spatial = set(ordered[-(num_maskmem - 1) :]) if num_maskmem > 1 else set()
            counted = set(ordered[-max_pointers:])
            self.scores = {t: v for t, v in self.scores.items() if t in counted}
        for t in [t for t in self.recent if t not in keep]:
            del self.recent[t]
        for t, e in self.recent.items():
            if t not in spatial:
                e.maskmem = None
        for t in sorted(self.cond)[:-max_cond]:
            del self.cond[t]

    @property
    def nbytes(self) -> int:
        entries = (*self.cond.values(), *self.recent.values())
        return sum(e.pointer.nbytes + (e.maskmem.nbytes if e.maskmem is not None else 0) for e in entries)


def valid_frames(tracks: Sequence[ObjectTrack], frame: int, threshold: float) -> dict[int, list[int]]:
    """Per group (`ObjectTrack.first_frame`): its tracked frames 1..frame, ascending, whose score
    (`group_score`, Meta's `cal_mem_score` over one tracker state) is above `threshold`.
    Frame 0 never counts (Meta's `frame_filter` stops before it)."""
    sums: dict[int, dict[int, list[tuple[float, float]]]] = {}
    for trk in tracks:
        per_frame = sums.setdefault(trk.first_frame, {})
        for t, score in trk.scores.items():
            if 1 <= t <= frame:
                per_frame.setdefault(t, []).append(score)
    out: dict[int, list[int]] = {}
    for group, per_frame in sums.items():
        out[group] = sorted(t for t, terms in per_frame.items() if group_score(terms) > threshold)
    return out


def select_frames(valid: Sequence[int], frame: int, max_num: int) -> list[int]:
    """Meta's `frame_filter` (forward tracking): the frames a step at `frame` reads, oldest first.

    The latest `max_num - 1` valid frames before `frame`, then the previous frame if it is not
    among them, whatever its score (even when it is no tracked frame of the object, e.g. the
    frame it was added on: it then takes a rank and gives nothing, as in Meta's code).
    """
    if frame == 0:
        return []
    chosen = [t for t in valid if t < frame][-(max_num - 1) :] if max_num > 1 else []
    if frame - 1 not in chosen:
        chosen.append(frame - 1)
    return chosen


def gather(
    tracks: Sequence[ObjectTrack],
    frame: int,
    *,
    num_maskmem: int,
    max_pointers: int,
    hw: int,
    mem_dim: int,
    channels: int,
    selection: float | None = None,
) -> dict[str, np.ndarray]:
    """The tracker-step memory inputs of `tracks` at `frame`, padded to the longest history.

    selection None: mirrors `Sam3TrackerVideoModel._gather_memory_frame_outputs` /
    `_get_object_pointers` in streaming mode: conditioning memories (temporal row
    num_maskmem-1), then the frames num_maskmem-1 .. 1 steps back (rows k-1); pointers of the
    conditioning frames and of the last max_pointers-1 frames, with offsets normalised by
    max_pointers-1.

    selection = the threshold: Meta's `_prepare_memory_conditioned_features` with
    `use_memory_selection`: the tracked frames come from `select_frames`; the r-th latest
    selected frame takes temporal row r-1 (rank, not frame distance) for r < num_maskmem, and
    its pointer offset r / (max_pointers-1) for r < len(selected) (the oldest selected frame
    gives no pointer); conditioning frames as without selection.
    """
    mems: list[list[tuple[int, np.ndarray]]] = []
    ptrs: list[list[tuple[float, np.ndarray]]] = []
    norm = float(max(max_pointers - 1, 1))
    valid = valid_frames(tracks, frame - 1, selection) if selection is not None else {}
    for trk in tracks:
        m = [(num_maskmem - 1, e.maskmem) for t, e in sorted(trk.cond.items()) if e.maskmem is not None]
        p = [((frame - t) / norm, e.pointer) for t, e in sorted(trk.cond.items()) if t <= frame]
        if selection is None:
            for k in range(num_maskmem - 1, 0, -1):
                e = trk.recent.get(frame - k)
                if e is not None and e.maskmem is not None:
                    m.append((k - 1, e.maskmem))
            for d in range(1, max_pointers):
                e = trk.recent.get(frame - d)
                if e is not None:
                    p.append((d / norm, e.pointer))
        else:
            chosen = select_frames(valid.get(trk.first_frame, []), frame, max_pointers)
            for r in range(min(num_maskmem - 1, len(chosen)), 0, -1):
                e = trk.recent.get(chosen[-r])
                if e is not None and e.maskmem is not None:
                    m.append((r - 1, e.maskmem))
            for r in range(1, min(len(chosen), max_pointers)):
                e = trk.recent.get(chosen[-r])
                if e is not None:
                    p.append((r / norm, e.pointer))
        mems.append(m)
        ptrs.append(p)
    n = len(tracks)
    m_max = max([1, *(len(m) for m in mems)])
    k_max = max([1, *(len(p) for p in ptrs)])
    feeds = {
        gc.MEM_FEATS: np.zeros((n, m_max, hw, mem_dim), np.float32),
        gc.MEM_TPOS: np.zeros((n, m_max), np.int64),
        gc.MEM_VALID: np.zeros((n, m_max), bool),
        gc.OBJ_PTRS: np.zeros((n, k_max, channels), np.float32),
        gc.PTR_TPOS: np.zeros((n, k_max), np.float32),
        gc.PTR_VALID: np.zeros((n, k_max), bool),
    }
    for i, (m, p) in enumerate(zip(mems, ptrs)):
        for j, (row, bits) in enumerate(m):
            feeds[gc.MEM_FEATS][i, j] = from_bfloat16(bits)
            feeds[gc.MEM_TPOS][i, j] = row
            feeds[gc.MEM_VALID][i, j] = True
        for j, (offset, pointer) in enumerate(p):
            feeds[gc.OBJ_PTRS][i, j] = pointer
            feeds[gc.PTR_TPOS][i, j] = offset
            feeds[gc.PTR_VALID][i, j] = True
    return feeds
