"""The streaming merge policy: what happens to objects on each frame, as pure functions.

Every decision the tracker makes between running graphs lives here, over numpy arrays and
small dataclasses, with no model, backend or I/O: which detections count, which track each
detection matches (mask IoU within a prompt), which detections become new objects (and the
cap on objects), keep-alive counters, re-anchoring on confident detections, suppression of
overlapping tracks by recent occlusion, the masks the memory encoder writes, the final
non-overlapping outputs, and which objects are forgotten. `Stream` runs the graphs and calls
these in order; the C++ library (cpp_bindings/src/policy.cpp) implements the same functions
and both are checked against the recorded frames in tests/golden/tracker_policy/.

`PolicyConfig.mode` names the rule set:

- "meta" (default) is SAM3 as its authors run it (Meta's `Sam3VideoBase`, forward direction):
  the same association, plus the hot-start rules (`hotstart.py`: young tracks that stay
  unmatched or duplicate another are removed, and hidden from outputs), new objects that do
  not re-encode the memory of existing ones, and a cap on objects where, once full, a
  confident new detection replaces a stale track (empty now, or no longer confirmed by the
  detector) instead of being dropped. Below the cap this is exactly Meta's rule set
  (tests/tracker/test_meta_video.py compares whole videos with Meta's video predictor).
- "transformers" reproduces `Sam3VideoModel` in streaming mode (tests/tracker/
  test_streaming_parity.py): no removal at all, and new detections beyond the cap are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from ..postprocess import sigmoid
from . import masks as mk
from .hotstart import HotstartConfig, HotstartState, hotstart_step
from .settings import MODES, StreamOptions, TrackerSettings

PolicyMode = Literal["meta", "transformers"]
ALWAYS_OCCLUDED = 100_000  # Meta's last-occluded frame for a track removed on its first tracked frame


@dataclass(frozen=True)
class PolicyConfig:
    """The thresholds and limits the policy reads (transformers' config names where it has one).

    max_objects    cap on simultaneously tracked objects (see the module docstring for what
                   each mode does at the cap)
    forget_after   remove an object after this many consecutive frames without an output
                   mask (None: never, as both references)
    hotstart_*     Meta's hot-start rules (mode "meta" only; `hotstart.py`)
    """

    score_threshold_detection: float
    det_nms_thresh: float
    assoc_iou_thresh: float
    trk_assoc_iou_thresh: float
    new_det_thresh: float
    high_conf_thresh: float
    high_iou_thresh: float
    recondition_every_nth_frame: int
    recondition_on_trk_masks: bool
    suppress_overlapping_based_on_recent_occlusion_threshold: float
    init_trk_keep_alive: int
    max_trk_keep_alive: int
    min_trk_keep_alive: int
    max_objects: int
    forget_after: int | None = None
    nms: bool = True
    mode: PolicyMode = "transformers"
    hotstart_delay: int = 15
    hotstart_unmatch_thresh: int = 8
    hotstart_dup_thresh: int = 8
    suppress_unmatched_only_within_hotstart: bool = True
    decrease_trk_keep_alive_for_empty_masklets: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"tracker policy mode must be one of {', '.join(MODES)}, got {self.mode!r}")

    @classmethod
    def from_settings(cls, settings: TrackerSettings, options: StreamOptions) -> PolicyConfig:
        """The model's settings (already carrying the options' threshold overrides) and the caller's limits."""
        names = [f for f in cls.__dataclass_fields__ if hasattr(settings, f)]
        return cls(
            **{n: getattr(settings, n) for n in names},
            max_objects=options.resolved_max_objects(settings),
            forget_after=options.forget_after,
            nms=options.nms,
            mode=options.policy,
        )

    @property
    def hotstart(self) -> HotstartConfig:
        return HotstartConfig(**{f: getattr(self, f) for f in HotstartConfig.__dataclass_fields__})

    def to_json(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PolicyConfig:
        return cls(**{f: data[f] for f in cls.__dataclass_fields__ if f in data})


@dataclass(frozen=True)
class Detections:
    """This frame's detections that passed the score threshold (and NMS), prompt by prompt."""

    masks: np.ndarray  # (D, m, m) float32 logits
    scores: np.ndarray  # (D,) float32
    prompt_ids: np.ndarray  # (D,) int64

    @classmethod
    def empty(cls, m: int) -> Detections:
        return cls(np.zeros((0, m, m), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


@dataclass(frozen=True)
class TrackTable:
    """The per-object state the policy reads, one row per tracked object (ascending ids)."""

    obj_ids: np.ndarray  # (N,) int64
    prompt_ids: np.ndarray  # (N,) int64
    last_occluded: np.ndarray  # (N,) int64: last frame with an empty or suppressed mask; -1 never
    keep_alive: np.ndarray  # (N,) int64
    first_frame: np.ndarray | None = None  # (N,) int64: frame the object was added (mode "meta" reads it)

    def __len__(self) -> int:
        return len(self.obj_ids)

    @classmethod
    def empty(cls) -> TrackTable:
        z = np.zeros(0, np.int64)
        return cls(z, z, z, z, z)


@dataclass(frozen=True)
class Association:
    """`Sam3VideoModel._associate_det_trk`'s answer."""

    new: np.ndarray  # (k,) int64 detection indices that may start new objects
    unmatched: np.ndarray  # obj ids of non-empty tracks that no detection overlaps (trk_assoc_iou_thresh)
    matched: np.ndarray  # obj ids matched by some detection (assoc_iou_thresh), ascending
    high_conf: dict[int, int] = field(default_factory=dict)  # obj id -> confident detection with high IoU
    det_to_matched: dict[int, np.ndarray] = field(default_factory=dict)  # detection -> obj ids it matches
    empty: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # obj ids with an empty mask


@dataclass(frozen=True)
class MergeDecision:
    """Everything the merge decides for one frame; `Stream` applies it to the memory bank.

    new_dets       detection indices that become objects, in the order they get ids
    new_obj_ids    the ids they get (next_id, next_id + 1, ...)
    recond         obj id -> detection index: tracks re-anchored on that detection this frame
                   (the entry becomes a conditioning frame)
    keep_alive / last_occluded
                   the tracks' new counters (rows as in the TrackTable)
    shown          (N, m, m) the tracks' low-res logits after occlusion suppression
    memory_masks / memory_scores
                   what the memory encoder writes for the existing tracks (binarize off)
    rerun          rows of the tracks whose memory is re-encoded with the new objects (binarize
                   on), empty when no object is new (always empty in mode "meta")
    removed        obj ids the hot-start rules remove after this frame; hidden from its output
                   (and, in `Stream.run`, from the frames still held back)
    evicted        obj ids of stale tracks removed after this frame to make room at the cap
    hidden         obj ids hidden on this frame only (Meta's keep-alive suppression)
    hotstart       the hot-start state after this frame (mode "meta"; None otherwise)
    """

    association: Association
    new_dets: np.ndarray
    new_obj_ids: np.ndarray
    recond: dict[int, int]
    keep_alive: np.ndarray
    last_occluded: np.ndarray
    shown: np.ndarray
    memory_masks: np.ndarray
    memory_scores: np.ndarray
    rerun: np.ndarray
    removed: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    evicted: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    hidden: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    hotstart: HotstartState | None = None


# -- detections ---------------------------------------------------------------------------------


def select_detections(probs: np.ndarray, mask_logits: np.ndarray, cfg: PolicyConfig) -> Detections:
    """Per prompt: mask NMS (when on), then every query scoring above the detection threshold.

    probs (P, Q) detection scores; mask_logits (P, Q, m, m).
    """
    masks, scores, prompt_ids = [], [], []
    for p in range(len(probs)):
        pr = probs[p].copy()
        if cfg.nms and cfg.det_nms_thresh > 0:
            keep = mk.nms_masks(pr, mask_logits[p], cfg.score_threshold_detection, cfg.det_nms_thresh)
            pr[~keep] = 0.0
        sel = np.flatnonzero(pr > cfg.score_threshold_detection)
        masks.append(mask_logits[p, sel])
        scores.append(pr[sel])
        prompt_ids.append(np.full(len(sel), p, np.int64))
    if not masks:
        return Detections.empty(mask_logits.shape[-1])
    return Detections(np.concatenate(masks), np.concatenate(scores).astype(np.float32), np.concatenate(prompt_ids))


# -- association ---------------------------------------------------------------------------------


def associate(det: Detections, trk_masks: np.ndarray, tracks: TrackTable, cfg: PolicyConfig) -> Association:
    """Many-to-one matching by mask IoU within a prompt (`Sam3VideoModel._associate_det_trk`)."""
    n_det = len(det.scores)
    none = np.zeros(0, np.int64)
    if len(tracks) == 0:
        return Association(np.arange(n_det, dtype=np.int64), none, none, {})
    trk_bin = trk_masks > 0
    nonempty = trk_bin.any(axis=(1, 2))
    empty = tracks.obj_ids[~nonempty].astype(np.int64)
    if n_det == 0:
        return Association(none, tracks.obj_ids[nonempty].astype(np.int64), none, {}, {}, empty)
    ious = mk.mask_iou(det.masks > 0, trk_bin)
    ious = np.where(det.prompt_ids[:, None] == tracks.prompt_ids[None, :], ious, 0.0)
    trk_matched = (ious >= cfg.trk_assoc_iou_thresh).any(axis=0)
    unmatched = tracks.obj_ids[nonempty & ~trk_matched].astype(np.int64)
    assoc = ious >= cfg.assoc_iou_thresh
    is_new = (det.scores >= cfg.new_det_thresh) & ~assoc.any(axis=1)
    matched = tracks.obj_ids[assoc.any(axis=0)].astype(np.int64)
    confident = (det.scores >= cfg.high_conf_thresh) & ~is_new & (ious.max(axis=1) >= cfg.high_iou_thresh)
    high_conf: dict[int, int] = {}
    for d in np.flatnonzero(confident):  # a later detection overrides an earlier one for the same track
        high_conf[int(tracks.obj_ids[int(np.argmax(ious[d]))])] = int(d)
    det_to_matched = {d: tracks.obj_ids[assoc[d]].astype(np.int64) for d in range(n_det)}
    return Association(np.flatnonzero(is_new).astype(np.int64), unmatched, matched, high_conf, det_to_matched, empty)


def cap_new_objects(new: np.ndarray, det_scores: np.ndarray, num_tracks: int, max_objects: int) -> np.ndarray:
    """The new detections that fit under the cap: the best-scoring ones (ties: lower index), in score order."""
    if num_tracks + len(new) <= max_objects:
        return new
    room = max(max_objects - num_tracks, 0)
    return new[np.argsort(-det_scores[new], kind="stable")[:room]]


def stale_tracks(tracks: TrackTable, assoc: Association, keep_alive: np.ndarray, exclude: np.ndarray, count: int) -> np.ndarray:
    """Up to `count` obj ids a full stream may give up for new objects (mode "meta").

    Stale means empty on this frame, or no longer confirmed by the detector (keep-alive
    counter at or below 0); tracks matched on this frame, or in `exclude`, never are. Most
    stale first: empty before non-empty, then lowest keep-alive, then oldest id.
    """
    if count <= 0 or len(tracks) == 0:
        return np.zeros(0, np.int64)
    empty = np.isin(tracks.obj_ids, assoc.empty)
    candidates = (empty | (keep_alive <= 0)) & ~np.isin(tracks.obj_ids, assoc.matched) & ~np.isin(tracks.obj_ids, exclude)
    rows = np.flatnonzero(candidates)
    order = np.lexsort((tracks.obj_ids[rows], keep_alive[rows], ~empty[rows]))
    return tracks.obj_ids[rows[order][:count]].astype(np.int64)


def update_keep_alive(tracks: TrackTable, assoc: Association, cfg: PolicyConfig) -> np.ndarray:
    """Sam3VideoModel's hot-start counters: +1 when matched, -1 when unmatched, clipped.

    Streaming in transformers never removes a track by these counters; they are kept so that
    a removal rule can read them.
    """
    out = tracks.keep_alive.copy()
    up = np.isin(tracks.obj_ids, assoc.matched)
    down = np.isin(tracks.obj_ids, assoc.unmatched)
    out[up] = np.minimum(cfg.max_trk_keep_alive, out[up] + 1)
    out[down] = np.maximum(cfg.min_trk_keep_alive, out[down] - 1)
    return out


def reconditioning(assoc: Association, tracks: TrackTable, trk_score_logits: np.ndarray, t: int, cfg: PolicyConfig) -> dict[int, int]:
    """Tracks re-anchored on their confident detection: every n-th frame, when the tracker is confident too.

    transformers compares the tracker's *logit* with high_conf_thresh; kept as is.
    """
    if cfg.recondition_every_nth_frame <= 0 or t % cfg.recondition_every_nth_frame != 0:
        return {}
    row = {int(o): i for i, o in enumerate(tracks.obj_ids)}
    return {o: d for o, d in assoc.high_conf.items() if trk_score_logits[row[o]] > cfg.high_conf_thresh}


# -- masks of existing tracks ----------------------------------------------------------------------


def suppress_recently_occluded(
    trk_masks: np.ndarray, prompt_ids: np.ndarray, last_occluded: np.ndarray, t: int, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Of two tracks of one prompt overlapping at IoU >= threshold, hide the one occluded more recently.

    Returns the masks (suppressed ones set to NO_OBJ_LOGIT) and the new last-occluded frames
    (t for tracks that are empty or suppressed now). Mode "meta" passes ALWAYS_OCCLUDED for a
    track the hot-start rules remove on its first tracked frame: it yields to any overlap.
    """
    binary = trk_masks > 0
    suppress = np.zeros(len(trk_masks), bool)
    if threshold > 0:
        for p in np.unique(prompt_ids):
            idx = np.flatnonzero(prompt_ids == p)
            if len(idx) <= 1:
                continue
            pairs = np.triu(mk.mask_iou(binary[idx], binary[idx]) >= threshold, k=1)
            li, lj = last_occluded[idx][:, None], last_occluded[idx][None, :]
            sup_i = (pairs & (li > lj) & (lj > -1)).any(axis=1)
            sup_j = (pairs & (lj > li) & (li > -1)).any(axis=0)
            suppress[idx] = sup_i | sup_j
    occluded = ~binary.any(axis=(1, 2)) | suppress
    out = trk_masks.copy()
    out[suppress] = mk.NO_OBJ_LOGIT
    return out, np.where(occluded, t, last_occluded).astype(np.int64)


def memory_inputs(
    shown: np.ndarray, tracks: TrackTable, recond: Mapping[int, int], det: Detections, cfg: PolicyConfig
) -> tuple[np.ndarray, np.ndarray]:
    """What the memory encoder reads for existing tracks (`_tracker_update_memories`).

    Re-anchored tracks take their detection's binarised mask (unless recondition_on_trk_masks);
    objects squeezed below 30 % of their area by the pixel-wise non-overlap are suppressed; the
    object score logit is +10 for a non-empty mask, -10 for an empty one.
    """
    mem_in = shown.copy()
    if not cfg.recondition_on_trk_masks:
        for i, o in enumerate(tracks.obj_ids):
            if int(o) in recond:
                mem_in[i] = (det.masks[recond[int(o)]] >= 0.5).astype(np.float32)
    mem_in = mk.suppress_shrunk(mem_in, tracks.prompt_ids)
    scores = np.where((mem_in > 0).any(axis=(1, 2)), 10.0, -10.0).astype(np.float32)
    return mem_in, scores


def rerun_rows(tracks: TrackTable, recond: Mapping[int, int], num_new: int) -> np.ndarray:
    """Tracks whose memory is re-encoded alongside new objects (transformers re-runs the tracker
    for every object not re-anchored when it adds objects)."""
    if num_new == 0:
        return np.zeros(0, np.int64)
    return np.array([i for i, o in enumerate(tracks.obj_ids) if int(o) not in recond], np.int64)


# -- one frame -------------------------------------------------------------------------------------


def merge(
    det: Detections,
    tracks: TrackTable,
    trk_masks: np.ndarray,
    trk_score_logits: np.ndarray,
    t: int,
    next_id: int,
    cfg: PolicyConfig,
    hotstart: HotstartState | None = None,
) -> MergeDecision:
    """The whole merge of frame t: associate, cap, count, remove, re-anchor, suppress, memory inputs.

    trk_masks (N, m, m) are the tracker's shown (hole-filled) low-res logits of `tracks`,
    trk_score_logits (N,) its object-score logits; `hotstart` is the hot-start state before
    this frame (mode "meta"; a fresh state when None).
    """
    meta = cfg.mode == "meta"
    assoc = associate(det, trk_masks, tracks, cfg)
    keep_alive = update_keep_alive(tracks, assoc, cfg)
    removed = evicted = hidden = np.zeros(0, np.int64)
    state = None
    if meta:
        state = _adopt(hotstart if hotstart is not None else HotstartState(), tracks, t)
        wanted = cap_new_objects(assoc.new, det.scores, 0, cfg.max_objects)  # a new object never displaces more than the cap
        overflow = len(tracks) + len(wanted) - cfg.max_objects
        evicted = stale_tracks(tracks, assoc, keep_alive, np.zeros(0, np.int64), overflow)
        new = cap_new_objects(wanted, det.scores, len(tracks) - len(evicted), cfg.max_objects)
        new_obj_ids = np.arange(next_id, next_id + len(new), dtype=np.int64)
        step = hotstart_step(state, t, assoc.det_to_matched, new_obj_ids, assoc.empty, assoc.unmatched, cfg.hotstart)
        state = step.state
        removed = np.array(sorted(step.removed), np.int64)
        evicted = np.setdiff1d(evicted, removed).astype(np.int64)
        hidden = np.array(sorted(step.suppressed - step.removed), np.int64)
    else:
        new = cap_new_objects(assoc.new, det.scores, len(tracks), cfg.max_objects)
    recond = reconditioning(assoc, tracks, trk_score_logits, t, cfg)
    thr = cfg.suppress_overlapping_based_on_recent_occlusion_threshold
    last_occluded_before = tracks.last_occluded
    if meta and len(removed) and tracks.first_frame is not None:
        first_tracked = tracks.first_frame == t - 1  # Meta keeps no last-occluded entry for these yet
        last_occluded_before = np.where(first_tracked & np.isin(tracks.obj_ids, removed), ALWAYS_OCCLUDED, last_occluded_before)
    shown, last_occluded = suppress_recently_occluded(trk_masks, tracks.prompt_ids, last_occluded_before, t, thr)
    mem_masks, mem_scores = memory_inputs(shown, tracks, recond, det, cfg)
    return MergeDecision(
        association=assoc,
        new_dets=new.astype(np.int64),
        new_obj_ids=np.arange(next_id, next_id + len(new), dtype=np.int64),
        recond=recond,
        keep_alive=keep_alive,
        last_occluded=last_occluded,
        shown=shown,
        memory_masks=mem_masks,
        memory_scores=mem_scores,
        rerun=np.zeros(0, np.int64) if meta else rerun_rows(tracks, recond, len(new)),
        removed=removed,
        evicted=evicted,
        hidden=hidden,
        hotstart=state,
    )


def _adopt(state: HotstartState, tracks: TrackTable, t: int) -> HotstartState:
    """The hot-start state knowing every track: one it has not seen (a table built by hand, a
    state started mid-stream) enters with its table's keep-alive and first frame."""
    unknown = [i for i, o in enumerate(tracks.obj_ids) if int(o) not in state.keep_alive]
    if not unknown:
        return state
    first = tracks.first_frame if tracks.first_frame is not None else np.full(len(tracks), t - 1)
    state = HotstartState(
        dict(state.first_frame), dict(state.unmatched_frames), dict(state.keep_alive), dict(state.overlap_frames), set(state.removed)
    )
    for i in unknown:
        state.first_frame.setdefault(int(tracks.obj_ids[i]), int(first[i]))
        state.keep_alive[int(tracks.obj_ids[i])] = int(tracks.keep_alive[i])
    return state


def tracker_only(
    tracks: TrackTable, trk_masks: np.ndarray, trk_score_logits: np.ndarray, t: int, next_id: int, cfg: PolicyConfig
) -> MergeDecision:
    """A frame where the detector did not run (`StreamOptions.detect_every`): the tracker alone.

    The same decision as a merge with no detection, except that no track counts as unmatched
    (keep-alive counters unchanged): a detection that was not looked for is not a miss.
    Occlusion suppression and the memory inputs are the tracker's, as on every frame.
    """
    # no detection, hence no new object, count or removal: the rule sets agree on everything else
    plain = replace(cfg, mode="transformers")
    decision = merge(Detections.empty(trk_masks.shape[-1]), tracks, trk_masks, trk_score_logits, t, next_id, plain)
    none = np.zeros(0, np.int64)
    return replace(
        decision,
        association=Association(new=none, unmatched=none, matched=none),
        keep_alive=tracks.keep_alive.copy(),
        removed=none,
        evicted=none,
        hidden=none,
        hotstart=None,  # the hot-start rules count detector frames only: the caller keeps its state
    )


# -- outputs and forgetting ------------------------------------------------------------------------


@dataclass(frozen=True)
class FrameObjects:
    """The objects shown in a frame, at the resolution of the logits given to `frame_objects`."""

    keep: np.ndarray  # (K,) rows of the input objects that are shown (non-empty)
    masks: np.ndarray  # (K, H, W) bool, non-overlapping within a prompt
    label_map: np.ndarray  # (H, W) uint8: 0 background, k for the k-th prompt


def frame_objects(logits: np.ndarray, prompt_ids: np.ndarray, tracker_scores: np.ndarray, hidden: np.ndarray | None = None) -> FrameObjects:
    """Drop empty and hidden masks, give a pixel claimed by several objects of a prompt to the most
    confident tracker score, and label each pixel with the prompt of its most probable object.

    hidden (N,) bool: rows not shown (Meta hides removed/suppressed objects before resolving overlaps).
    """
    h, w = logits.shape[1:]
    masks = logits > 0
    shown = masks.any(axis=(1, 2))
    if hidden is not None:
        shown &= ~hidden
    keep = np.flatnonzero(shown)
    masks, logits = masks[keep], logits[keep]
    masks = mk.object_wise_non_overlap(masks, tracker_scores[keep], prompt_ids[keep])
    label = np.zeros((h, w), np.uint8)
    if len(masks):
        conf = np.where(masks, sigmoid(logits), -1.0)
        label = np.where(masks.any(axis=0), prompt_ids[keep][np.argmax(conf, axis=0)] + 1, 0).astype(np.uint8)
    return FrameObjects(keep.astype(np.int64), masks, label)


def forget(obj_ids: np.ndarray, empty_frames: np.ndarray, shown: np.ndarray, forget_after: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Count consecutive frames without an output mask; (new counts, True where the object is removed)."""
    counts = np.where(np.isin(obj_ids, shown), 0, empty_frames + 1).astype(np.int64)
    removed = counts >= forget_after if forget_after is not None else np.zeros(len(obj_ids), bool)
    return counts, removed
