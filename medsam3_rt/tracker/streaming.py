"""Frame-by-frame segmentation with the detector and the tracker memory (paper Fig. 2).

`Stream.push(frame)` does, for one frame, what transformers' `Sam3VideoModel.forward` does
in streaming mode, on the exported graphs:

1. backbone once, shared by detector and tracker;
2. detection for every prompt (one batched detector call), mask NMS, score threshold;
3. the tracker step for every tracked object, batched with padded memory banks;
4. the merge (`policy.py`, pure functions): detections associated to tracks by mask IoU
   within a prompt, confident unmatched detections become new objects, periodic
   re-anchoring on confident matches, suppression of overlaps by recent occlusion, and the
   non-overlap constraint;
5. new memory entries, encoded after the merge (the merge changes the masks);
6. outputs at input resolution, overlaps resolved per prompt by tracker confidence.

Per-frame time and memory do not grow with the number of frames: each object's bank is
bounded (see `memory.py`), the number of objects is capped (16 by default), and the hot-start
state only holds tracked objects.

`push` is causal: frame t's objects are decided with frames 0..t. Meta's video predictor holds
each frame back `hotstart_delay` frames, so that an object the hot-start rules remove soon after
it appears is hidden from every frame; `run(frames)` does the same for offline work (videos
on disk, volumes).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from .. import graph_contract as gc
from ..errors import ManifestError, UsageError
from ..model import Model
from ..pipeline import FramePipeline, detection_scores
from ..postprocess import sigmoid
from ..preprocess import IntensityWindow
from ..resample import resize
from ..stopwatch import Stopwatch
from ..tokenizer import as_prompt_list
from . import hotstart, policy
from . import masks as mk
from .memory import MemoryEntry, ObjectTrack, gather, memory_score, valid_frames
from .settings import StreamOptions, TrackerSettings

# Meta's `mf_threshold`: a tracked frame's memory is read when its score is above this
MEMORY_SELECTION_THRESHOLD = 0.01


@dataclass(frozen=True)
class FrameResult:
    """Objects in one frame (or slice), at input resolution.

    object_ids      int64 (N,): stable ids, ascending; an id is never reused in a stream
    prompt_ids      int64 (N,): index of the prompt each object answers (0-based)
    masks           bool (N, H, W): non-overlapping within a prompt
    scores          float32 (N,): detection score when the object was first found
    tracker_scores  float32 (N,): this frame's tracker confidence (the detection score on
                    the frame an object appears)
    boxes           float32 (N, 4): xyxy pixels around each mask
    label_map       uint8 (H, W): 0 background, k for the k-th prompt (pixel-wise most
                    confident object)
    """

    frame_index: int
    prompts: tuple[str, ...]
    object_ids: np.ndarray
    prompt_ids: np.ndarray
    masks: np.ndarray
    scores: np.ndarray
    tracker_scores: np.ndarray
    boxes: np.ndarray
    label_map: np.ndarray
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class MergeRecord:
    """One frame's policy inputs and decision, for `Stream.observer` (golden files, debugging)."""

    frame_index: int
    next_id: int
    detections: policy.Detections
    tracks: policy.TrackTable
    trk_masks: np.ndarray
    trk_score_logits: np.ndarray
    decision: policy.MergeDecision
    forget_ids: np.ndarray  # every object after the merge (existing and new), ascending
    forget_counts: np.ndarray  # their consecutive empty frames before this one
    shown_ids: np.ndarray
    empty_frames: np.ndarray  # policy.forget's answer
    removed: np.ndarray


@dataclass(frozen=True)
class _Shown:
    """A frame's objects before hiding: what `Stream.run` keeps while a frame is held back."""

    frame_index: int
    hw: tuple[int, int]
    obj_ids: np.ndarray
    prompt_ids: np.ndarray
    scores: np.ndarray
    tracker_scores: np.ndarray
    low: np.ndarray  # (N, m, m) low-res logits
    hidden: np.ndarray  # obj ids hidden on this frame whatever comes later


class Stream:
    """One video or volume. Not thread-safe: use one stream per thread.

    The per-frame work is: graphs (backbone, detector, tracker step) -> `policy.merge` ->
    memory encoder on the merged masks -> `policy.frame_objects` -> `policy.forget`. Decisions
    are made only in `policy`; this class runs graphs and keeps the memory banks.
    """

    def __init__(
        self,
        model: Model,
        prompts: str | Sequence[str],
        *,
        options: StreamOptions | None = None,
        window: IntensityWindow | None = None,
    ) -> None:
        m = model.manifest
        if not m.has_tracker or m.tracker is None:
            raise ManifestError(
                f"this export has no tracker graphs (exported from a {m.model.get('source', {}).get('class', 'Sam3Model')}); "
                "export a Sam3VideoModel checkpoint to track objects, or use stream(..., mode='detect') for independent frames"
            )
        self.model = model
        self.prompts = tuple(as_prompt_list(prompts))
        self.options = options or StreamOptions()
        self.window = window
        self.settings = self.options.apply(TrackerSettings.from_manifest(m.tracker))
        self.policy = policy.PolicyConfig.from_settings(self.settings, self.options)
        self._frames = FramePipeline(model, self.prompts, window)
        d = m.dims
        self._hw, self._mem, self._c, self._m = d.feat_size**2, d.memory_channels, d.fpn_channels, d.mask_size
        self._image = d.image_size
        self._mem_size = d.memory_mask_size
        # the tracker's new-object path (manifest tracker.semantics; exports without it followed transformers)
        self.tracker_semantics = str(m.tracker.get("semantics", "transformers"))
        if self.tracker_semantics not in ("meta", "transformers"):
            raise ManifestError(f"manifest 'tracker': semantics must be 'meta' or 'transformers', got '{self.tracker_semantics}'")
        self.memory_selection = self._memory_selection(m.tracker)
        self.max_objects = self.policy.max_objects
        self.max_cond = self.options.max_cond_frames or self.settings.max_cond_frame_num
        self.observer: Callable[[MergeRecord], None] | None = None
        self.reset()

    def _memory_selection(self, tracker: dict) -> float | None:
        """The memory-selection threshold, None without selection (see memory.py).

        Meta's video tracker selects memories (manifest `tracker.memory_selection`; exports
        without the field: on with tracker semantics "meta", as Meta's builder); transformers'
        does not. `StreamOptions.memory_selection` overrides the manifest.
        """
        on = self.options.memory_selection
        if on is None:
            on = tracker.get("memory_selection", self.tracker_semantics == "meta")
        if not isinstance(on, bool):
            raise ManifestError(f"manifest 'tracker': memory_selection must be true or false, got {on!r}")
        threshold = tracker.get("memory_selection_threshold", MEMORY_SELECTION_THRESHOLD)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise ManifestError(f"manifest 'tracker': memory_selection_threshold must be a number, got {threshold!r}")
        return float(threshold) if on else None

    # -- public ---------------------------------------------------------------------------
    def reset(self) -> None:
        """Start a new video/volume: forget all objects; prompts and their embeddings stay."""
        self._tracks: dict[int, ObjectTrack] = {}
        self._next_id = 0
        self._t = 0
        self._shown_last = 0
        self._hotstart = hotstart.HotstartState()
        self._last_shown: _Shown | None = None
        self._last_removed = np.zeros(0, np.int64)
        self.detector_frames = 0  # frames on which the detector ran (StreamOptions.detect_every)

    @property
    def frame_index(self) -> int:
        """Index the next pushed frame gets."""
        return self._t

    @property
    def num_objects(self) -> int:
        return len(self._tracks)

    @property
    def output_delay(self) -> int:
        """Frames `run` holds each result back by default: the model's hotstart_delay with policy
        "meta" (as Meta's video predictor), 0 with "transformers"."""
        return self.policy.hotstart_delay if self.policy.mode == "meta" else 0

    @property
    def next_object_id(self) -> int:
        """The id the next new object will get (ids are never reused within a stream)."""
        return self._next_id

    def best_detection_score(self, frame: np.ndarray) -> float:
        """Highest detection score of any prompt in `frame` (detector only; the stream is unchanged)."""
        return self._frames.best_detection_score(frame)

    def best_detection_scores(self, frames: Iterable[np.ndarray], batch_size: int = 1) -> list[float]:
        """`best_detection_score` of every frame, `batch_size` frames per backbone call where the export allows."""
        return self._frames.best_detection_scores(frames, batch_size)

    def state_nbytes(self) -> int:
        """Bytes held by the memory banks (bounded; see memory.py)."""
        return sum(t.nbytes for t in self._tracks.values())

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reset()

    def push(self, frame: np.ndarray) -> FrameResult:
        """Segment the next frame (H x W or H x W x 3 RGB; same input rules as `segment`)."""
        clock = Stopwatch()
        return self._push(frame, self._frames.features(frame, clock), clock)

    def _push(self, frame: np.ndarray, feats: dict[str, np.ndarray], clock: Stopwatch) -> FrameResult:
        """One frame from its backbone features on (the stream's state starts here)."""
        t, next_id = self._t, self._next_id
        detecting = self._detects(t)
        if detecting:
            out = self._frames.detect(feats, clock)
            det = policy.select_detections(detection_scores(out), out[gc.PRED_MASKS], self.policy)
        else:
            det = policy.Detections.empty(self._m)
        clock.lap("detector")
        trk_feats = {k: feats[k] for k in gc.TRK_FEATURES}
        tracks = list(self._tracks.values())
        table = self._table(tracks)
        step = self._propagate(tracks, trk_feats, t)
        clock.lap("tracker")
        if detecting:
            decision = policy.merge(det, table, step["masks"], step["score"], t, next_id, self.policy, self._hotstart)
        else:
            decision = policy.tracker_only(table, step["masks"], step["score"], t, next_id, self.policy)
        new_tracks = self._apply(tracks, decision, det, step, trk_feats, t, frame.shape[:2])
        clock.lap("merge+memory")
        shown = self._outputs(frame.shape[:2], tracks, new_tracks, decision, det, step, t)
        result = self._hide(shown, decision.removed)
        self._last_shown, self._last_removed = shown, decision.removed
        self._remove(decision, t)
        clock.lap("postprocess")
        forgetting = self._finish_frame(result, t)
        self._shown_last = len(result.object_ids)
        self.detector_frames += int(detecting)
        if self.observer is not None:
            self.observer(MergeRecord(t, next_id, det, table, step["masks"], step["score"], decision, *forgetting))
        self._t += 1
        return replace(result, timings_ms=clock.ms)

    def run(self, frames: Iterable[np.ndarray], *, delay: int | None = None, batch_size: int = 1) -> Iterator[FrameResult]:
        """Segment a whole sequence, each result held back `delay` frames (default `output_delay`).

        An object the hot-start rules remove while a frame is held back is hidden from that
        frame too, as Meta's `propagate_in_video` does; results come in frame order, the last
        ones when `frames` ends. With delay 0 this is `push` on every frame.
        `batch_size` > 1: the backbone encodes that many frames per call where the export has
        an image batch axis (same results; the tracker still steps frame by frame).
        """
        wait = self.output_delay if delay is None else delay
        if wait < 0:
            raise UsageError(f"delay must be >= 0, got {delay}")
        if batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, got {batch_size}")
        held: deque[tuple[_Shown, dict[str, float]]] = deque()
        removed: set[int] = set()
        for frame, feats, clock in self._frames.prefetch(frames, batch_size):
            timings = self._push(frame, feats, clock).timings_ms
            assert self._last_shown is not None
            held.append((self._last_shown, timings))
            removed.update(int(o) for o in self._last_removed)
            if len(held) >= max(wait, 1):
                shown, timings = held.popleft()
                yield replace(self._hide(shown, np.array(sorted(removed), np.int64)), timings_ms=timings)
        while held:
            shown, timings = held.popleft()
            yield replace(self._hide(shown, np.array(sorted(removed), np.int64)), timings_ms=timings)

    # -- steps ----------------------------------------------------------------------------
    def _detects(self, t: int) -> bool:
        """Whether frame t runs the detector: every k-th frame, and whenever the last frame showed nothing."""
        k = self.options.detect_every
        return k <= 1 or t % k == 0 or not self._tracks or self._shown_last == 0

    @staticmethod
    def _table(tracks: list[ObjectTrack]) -> policy.TrackTable:
        if not tracks:
            return policy.TrackTable.empty()
        col = lambda name: np.array([getattr(tr, name) for tr in tracks], np.int64)  # noqa: E731
        return policy.TrackTable(col("obj_id"), col("prompt_id"), col("last_occluded"), col("keep_alive"), col("first_frame"))

    def _propagate(self, tracks: list[ObjectTrack], trk_feats: dict[str, np.ndarray], t: int) -> dict[str, np.ndarray]:
        """Tracker step for all objects; their new entries are stored without memory yet."""
        m = self._m
        if not tracks:
            return {"low": np.zeros((0, m, m), np.float32), "score": np.zeros(0, np.float32), "masks": np.zeros((0, m, m), np.float32)}
        s = self.settings
        feeds = gather(
            tracks,
            t,
            num_maskmem=s.num_maskmem,
            max_pointers=s.max_object_pointers_in_encoder,
            hw=self._hw,
            mem_dim=self._mem,
            channels=self._c,
            selection=self.memory_selection,
        )
        out = self.model.run(gc.TRACKER_STEP, {**trk_feats, **feeds})
        low = out[gc.LOW_RES_MASKS][:, 0]
        for i, (trk, pointer) in enumerate(zip(tracks, out[gc.OBJECT_POINTER], strict=True)):
            trk.recent[t] = MemoryEntry(pointer.copy())
            trk.scores[t] = memory_score(out[gc.OBJECT_SCORE_LOGITS][i, 0], out[gc.IOU_SCORES][i])
        shown = mk.fill_holes(low, s.fill_hole_area) if self.options.fill_holes else low.copy()
        return {"low": low, "score": out[gc.OBJECT_SCORE_LOGITS][:, 0], "masks": shown}

    def _apply(self, tracks, decision: policy.MergeDecision, det: policy.Detections, step, trk_feats, t, hw) -> list[ObjectTrack]:
        """The decision applied to the memory banks: counters, re-anchoring, memories, new objects."""
        for i, tr in enumerate(tracks):
            tr.keep_alive = int(decision.keep_alive[i])
            tr.last_occluded = int(decision.last_occluded[i])
            if tr.obj_id in decision.recond:
                tr.promote(t)
        if tracks:  # `_tracker_update_memories`: memories of existing tracks from the merged masks
            bits = self._encode(trk_feats, decision.memory_masks, np.zeros(len(tracks), bool), decision.memory_scores)
            for tr, b in zip(tracks, bits, strict=True):
                tr.entry(t).maskmem = b
        return self._add_objects(tracks, decision, det, step, trk_feats, t, hw)

    def _encode(self, trk_feats: dict[str, np.ndarray], masks: np.ndarray, binarize: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Memory encoder for N masks (logits at any size; resized like `_encode_new_memory`)."""
        size = (self._mem_size, self._mem_size)
        if masks.shape[-2:] != size:
            masks = resize(masks, size, axes=(1, 2), antialias=True)
        resized = masks[:, None].astype(np.float32)
        out = self.model.run(
            gc.MEMORY_ENCODER,
            {
                gc.TRK_VISION_FEAT: trk_feats[gc.TRK_VISION_FEAT],
                gc.MASK_LOGITS: resized,
                gc.BINARIZE: binarize[:, None],
                gc.OBJECT_SCORE_LOGITS: scores[:, None].astype(np.float32),
            },
        )
        return mk.to_bfloat16(out[gc.MASKMEM_FEATURES])

    def _add_objects(self, tracks, decision: policy.MergeDecision, det: policy.Detections, step, trk_feats, t, hw) -> list[ObjectTrack]:
        """`_tracker_add_new_objects`: new objects from detections (as conditioning frames).

        Tracker semantics "meta" (Meta's video predictor): the init graph gets the detection's
        logits (it thresholds them at 0 at the tracker's input mask size), and the memory is
        encoded as Meta does (through the video resolution, `masks.meta_new_object_memory`).
        "transformers": the logits thresholded at 0.5 (as `Sam3VideoModel` does), resized to
        the image size and binarised.
        With policy "transformers", adding objects also re-runs the tracker on this frame for
        every other object that was not re-anchored (`decision.rerun`), and re-encodes their
        memory from the tracker's own mask, thresholded (the memory encoder binarises the
        whole batch once a mask prompt is in it). The re-run would reproduce the step outputs
        exactly, so they are reused.
        """
        new = decision.new_dets
        if len(new) == 0:
            return []
        meta = self.tracker_semantics == "meta"
        # "meta": the graph thresholds the logits itself (after resizing them, as Meta does)
        binary = (det.masks[new] >= 0.5).astype(np.float32)  # (n, m, m)
        masks_in = det.masks[new].astype(np.float32) if meta else binary
        init = self.model.run(gc.TRACKER_INIT, {**trk_feats, gc.MASKS: masks_in[:, None]})
        new_tracks = []
        for k, (d, obj_id) in enumerate(zip(new, decision.new_obj_ids, strict=True)):
            tr = ObjectTrack(int(obj_id), int(det.prompt_ids[d]), float(det.scores[d]), t, keep_alive=self.settings.init_trk_keep_alive)
            tr.cond[t] = MemoryEntry(init[gc.OBJECT_POINTER][k].copy())
            new_tracks.append(tr)
        self._next_id = int(decision.new_obj_ids[-1]) + 1
        size = (self._image, self._image)
        rerun = decision.rerun
        hr_existing = resize(step["low"][rerun], size, axes=(1, 2), antialias=False) if len(rerun) else np.zeros((0, *size), np.float32)
        if meta:
            mem_in, new_scores = mk.meta_new_object_memory(det.masks[new], hw, self._image, self._mem_size)
            new_bits = self._encode(trk_feats, mem_in[:, 0], np.zeros(len(new), bool), new_scores)
            hr, scores = hr_existing, step["score"][rerun]
        else:
            hr_new = resize(binary, size, axes=(1, 2), antialias=True) * 20.0 - 10.0
            hr = np.concatenate([hr_existing, hr_new])
            scores = np.concatenate([step["score"][rerun], init[gc.OBJECT_SCORE_LOGITS][:, 0]])
        bits = self._encode(trk_feats, hr, np.ones(len(hr), bool), scores) if len(hr) else []
        for i, b in zip(rerun, bits[: len(rerun)], strict=True):
            tracks[i].entry(t).maskmem = b
        for tr, b in zip(new_tracks, new_bits if meta else bits[len(rerun) :], strict=True):
            tr.cond[t].maskmem = b
        for tr in new_tracks:
            self._tracks[tr.obj_id] = tr
        return new_tracks

    def _remove(self, decision: policy.MergeDecision, t: int) -> None:
        """Meta's execution phase: objects the hot-start rules removed (and stale tracks given up
        at the cap) leave after this frame's outputs; the hot-start state keeps tracked objects only."""
        for obj_id in (*decision.removed.tolist(), *decision.evicted.tolist()):
            self._tracks.pop(int(obj_id), None)
        if decision.hotstart is not None:
            self._hotstart = hotstart.prune(decision.hotstart, self._tracks, t, self.policy.hotstart)

    def _outputs(self, hw, tracks, new_tracks, decision: policy.MergeDecision, det: policy.Detections, step, t) -> _Shown:
        """`build_outputs`: every object's low-res logits this frame (hiding and resizing come in `_hide`)."""
        h, w = int(hw[0]), int(hw[1])
        recond = decision.recond
        low = [det.masks[recond[tr.obj_id]] if tr.obj_id in recond else decision.shown[i] for i, tr in enumerate(tracks)]
        if new_tracks:  # new objects are shown as their (hole-filled) detection masks
            new_low = det.masks[decision.new_dets]
            low += list(mk.fill_holes(new_low, self.settings.fill_hole_area) if self.options.fill_holes else new_low)
        every = [*tracks, *new_tracks]
        ids = np.array([tr.obj_id for tr in every], np.int64)
        prompt_ids = np.array([tr.prompt_id for tr in every], np.int64)
        scores = np.array([tr.det_score for tr in every], np.float32)
        tscores = np.concatenate([sigmoid(step["score"]), scores[len(tracks) :]]).astype(np.float32)
        stacked = np.stack(low).astype(np.float32) if every else np.zeros((0, self._m, self._m), np.float32)
        return _Shown(t, (h, w), ids, prompt_ids, scores, tscores, stacked, decision.hidden)

    def _hide(self, shown: _Shown, removed: np.ndarray) -> FrameResult:
        """The video processor's post-processing at input resolution, without hidden/removed objects."""
        h, w = shown.hw
        if len(shown.obj_ids):
            logits = resize(shown.low, (h, w), axes=(1, 2), antialias=False)
        else:
            logits = np.zeros((0, h, w), np.float32)
        hidden = np.isin(shown.obj_ids, shown.hidden) | np.isin(shown.obj_ids, removed)
        objs = policy.frame_objects(logits, shown.prompt_ids, shown.tracker_scores, hidden)
        k = objs.keep
        boxes = mk.boxes_from_masks(objs.masks)
        return FrameResult(
            shown.frame_index,
            self.prompts,
            shown.obj_ids[k],
            shown.prompt_ids[k],
            objs.masks,
            shown.scores[k],
            shown.tracker_scores[k],
            boxes,
            objs.label_map,
        )

    def _finish_frame(self, result: FrameResult, t: int) -> tuple[np.ndarray, ...]:
        """Forget objects by the policy; prune every remaining bank to what later frames read."""
        s = self.settings
        tracks = list(self._tracks.values())
        ids = np.array([tr.obj_id for tr in tracks], np.int64)
        counts = np.array([tr.empty_frames for tr in tracks], np.int64)
        empty, removed = policy.forget(ids, counts, result.object_ids, self.policy.forget_after)
        for tr, n, gone in zip(tracks, empty, removed, strict=True):
            tr.empty_frames = int(n)
            if gone:
                del self._tracks[tr.obj_id]
        alive = list(self._tracks.values())
        valid = valid_frames(alive, t, self.memory_selection) if self.memory_selection is not None else {}
        for tr in alive:
            tr.prune(
                t,
                num_maskmem=s.num_maskmem,
                max_pointers=s.max_object_pointers_in_encoder,
                max_cond=self.max_cond,
                valid=valid.get(tr.first_frame, []) if self.memory_selection is not None else None,
            )
        return ids, counts, result.object_ids, empty, removed
