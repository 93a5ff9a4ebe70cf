"""Per-object memory banks: what each tracked object carries from frame to frame, bounded.

An object keeps at most `max_cond_frames` conditioning entries (the frame it was created
on, and frames re-anchored by a confident detection) and the entries of the last
`max_object_pointers - 1` frames; only the last `num_maskmem - 1` of those keep their
spatial memory (the object pointer is all older frames contribute). Spatial memories are
stored as bfloat16 bit patterns, as transformers stores them, which also halves their size.
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


@dataclass(slots=True)
class ObjectTrack:
    obj_id: int
    prompt_id: int
    det_score: float  # detection score when the object was created (Sam3VideoModel's obj_id_to_score)
    first_frame: int
    cond: dict[int, MemoryEntry] = field(default_factory=dict)  # conditioning frames
    recent: dict[int, MemoryEntry] = field(default_factory=dict)  # tracked (non-conditioning) frames
    last_occluded: int = -1  # last frame with an empty or suppressed mask; -1 never
    keep_alive: int = 0
    empty_frames: int = 0  # consecutive frames with an empty output mask

    def entry(self, frame: int) -> MemoryEntry | None:
        return self.cond.get(frame, self.recent.get(frame))

    def promote(self, frame: int) -> None:
        """Re-anchor: this frame's entry becomes a conditioning frame."""
        if frame in self.recent:
            self.cond[frame] = self.recent.pop(frame)

    def prune(self, frame: int, *, num_maskmem: int, max_pointers: int, max_cond: int) -> None:
        """Drop what frame+1 and later can no longer read."""
        for t in [t for t in self.recent if t <= frame - (max_pointers - 1)]:
            del self.recent[t]
        for t, e in self.recent.items():
            if t <= frame - (num_maskmem - 1):
                e.maskmem = None
        for t in sorted(self.cond)[:-max_cond]:
            del self.cond[t]

    @property
    def nbytes(self) -> int:
        entries = (*self.cond.values(), *self.recent.values())
        return sum(e.pointer.nbytes + (e.maskmem.nbytes if e.maskmem is not None else 0) for e in entries)


def gather(
    tracks: Sequence[ObjectTrack],
    frame: int,
    *,
    num_maskmem: int,
    max_pointers: int,
    hw: int,
    mem_dim: int,
    channels: int,
) -> dict[str, np.ndarray]:
    """The tracker-step memory inputs of `tracks` at `frame`, padded to the longest history.

    Mirrors `Sam3TrackerVideoModel._gather_memory_frame_outputs` / `_get_object_pointers`
    in streaming mode: conditioning memories (temporal row num_maskmem-1), then the frames
    num_maskmem-1 .. 1 steps back (rows k-1); pointers of the conditioning frames and of the
    last max_pointers-1 frames, with offsets normalised by max_pointers-1.
    """
    mems: list[list[tuple[int, np.ndarray]]] = []
    ptrs: list[list[tuple[float, np.ndarray]]] = []
    norm = float(max(max_pointers - 1, 1))
    for trk in tracks:
        m = [(num_maskmem - 1, e.maskmem) for t, e in sorted(trk.cond.items()) if e.maskmem is not None]
        for k in range(num_maskmem - 1, 0, -1):
            e = trk.recent.get(frame - k)
            if e is not None and e.maskmem is not None:
                m.append((k - 1, e.maskmem))
        p = [((frame - t) / norm, e.pointer) for t, e in sorted(trk.cond.items()) if t <= frame]
        for d in range(1, max_pointers):
            e = trk.recent.get(frame - d)
            if e is not None:
                p.append((d / norm, e.pointer))
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
