"""Frame-by-frame segmentation with the detector and the tracker memory (paper Fig. 2).

`Stream.push(frame)` does, for one frame, what transformers' `Sam3VideoModel.forward` does
in streaming mode, on the exported graphs:

1. backbone once, shared by detector and tracker;
2. detection for every prompt (one batched detector call), mask NMS, score threshold;
3. the tracker step for every tracked object, batched with padded memory banks;
4. the merge: detections associated to tracks by mask IoU within a prompt, confident
   unmatched detections become new objects, periodic re-anchoring on confident matches,
   suppression of overlaps by recent occlusion, and the non-overlap constraint;
5. new memory entries, encoded after the merge (the merge changes the masks);
6. outputs at input resolution, overlaps resolved per prompt by tracker confidence.

Per-frame time and memory do not grow with the number of frames: each object's bank is
bounded (see `memory.py`) and the number of objects is capped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from .. import graph_contract as gc
from ..errors import ManifestError
from ..model import Model
from ..postprocess import sigmoid
from ..preprocess import IntensityWindow, pixel_values
from ..resample import resize
from ..stopwatch import Stopwatch
from ..tokenizer import as_prompt_list
from . import masks as mk
from .memory import MemoryEntry, ObjectTrack, gather
from .settings import StreamOptions, TrackerSettings


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


@dataclass
class _Detections:
    masks: np.ndarray  # (D, m, m) logits
    scores: np.ndarray  # (D,)
    prompt_ids: np.ndarray  # (D,)


@dataclass
class _Association:
    new: list[int]  # detection indices that become new objects
    unmatched: list[int]  # obj ids of non-empty tracks no detection matches
    matched: set[int]  # obj ids matched by some detection
    high_conf: dict[int, int]  # obj id -> detection index (confident, high IoU)


class Stream:
    """One video or volume. Not thread-safe: use one stream per thread."""

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
        self._text = model.text_batch(list(self.prompts))
        d = m.dims
        self._hw, self._mem, self._c, self._m = d.feat_size**2, d.memory_channels, d.fpn_channels, d.mask_size
        self._image = d.image_size
        self._mem_size = d.memory_mask_size
        self.max_objects = self.options.max_objects or self.settings.max_num_objects
        self.max_cond = self.options.max_cond_frames or self.settings.max_cond_frame_num
        self.reset()

    # -- public ---------------------------------------------------------------------------
    def reset(self) -> None:
        """Start a new video/volume: forget all objects; prompts and their embeddings stay."""
        self._tracks: dict[int, ObjectTrack] = {}
        self._next_id = 0
        self._t = 0

    @property
    def frame_index(self) -> int:
        """Index the next pushed frame gets."""
        return self._t

    @property
    def num_objects(self) -> int:
        return len(self._tracks)

    @property
    def next_object_id(self) -> int:
        """The id the next new object will get (ids are never reused within a stream)."""
        return self._next_id

    def best_detection_score(self, frame: np.ndarray) -> float:
        """Highest detection score of any prompt in `frame` (detector only; the stream is unchanged)."""
        feats = self.model.encode_image(pixel_values(frame, self.model.manifest.preprocess, self.window))
        out = self.model.detect(feats, self._text)
        return float((sigmoid(out[gc.PRED_LOGITS]) * sigmoid(out[gc.PRESENCE_LOGITS])).max())

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
        t = self._t
        pixels = pixel_values(frame, self.model.manifest.preprocess, self.window)
        clock.lap("preprocess")
        feats = self.model.encode_image(pixels)
        trk_feats = {k: feats[k] for k in gc.TRK_FEATURES}
        clock.lap("backbone")
        det = self._detect(feats)
        clock.lap("detector")
        tracks = list(self._tracks.values())
        step = self._propagate(tracks, trk_feats, t)
        clock.lap("tracker")
        trk_masks, new, new_tracks, recond = self._merge(tracks, step, det, trk_feats, t)
        clock.lap("merge+memory")
        result = self._outputs(frame.shape[:2], tracks, step, trk_masks, new_tracks, new, recond, det, t)
        clock.lap("postprocess")
        self._finish_frame(result, t)
        self._t += 1
        return replace(result, timings_ms=clock.ms)

    # -- steps ----------------------------------------------------------------------------
    def _detect(self, feats: dict[str, np.ndarray]) -> _Detections:
        s = self.settings
        out = self.model.detect(feats, self._text)
        probs = sigmoid(out[gc.PRED_LOGITS]) * sigmoid(out[gc.PRESENCE_LOGITS])  # (P, Q)
        masks, scores, prompt_ids = [], [], []
        for p in range(len(self.prompts)):
            pr = probs[p].copy()
            if self.options.nms and s.det_nms_thresh > 0:
                keep = mk.nms_masks(pr, out[gc.PRED_MASKS][p], s.score_threshold_detection, s.det_nms_thresh)
                pr[~keep] = 0.0
            sel = np.flatnonzero(pr > s.score_threshold_detection)
            masks.append(out[gc.PRED_MASKS][p, sel])
            scores.append(pr[sel])
            prompt_ids.append(np.full(len(sel), p, np.int64))
        return _Detections(np.concatenate(masks), np.concatenate(scores).astype(np.float32), np.concatenate(prompt_ids))

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
        )
        out = self.model.run(gc.TRACKER_STEP, {**trk_feats, **feeds})
        low = out[gc.LOW_RES_MASKS][:, 0]
        for trk, pointer in zip(tracks, out[gc.OBJECT_POINTER], strict=True):
            trk.recent[t] = MemoryEntry(pointer.copy())
        shown = mk.fill_holes(low, s.fill_hole_area) if self.options.fill_holes else low.copy()
        return {"low": low, "score": out[gc.OBJECT_SCORE_LOGITS][:, 0], "masks": shown}

    def _associate(self, det: _Detections, trk_masks: np.ndarray, tracks: list[ObjectTrack]) -> _Association:
        """`Sam3VideoModel._associate_det_trk`: many-to-one matching by mask IoU within a prompt."""
        s = self.settings
        n_det = len(det.scores)
        if not tracks:
            return _Association(list(range(n_det)), [], set(), {})
        trk_bin = trk_masks > 0
        nonempty = trk_bin.any(axis=(1, 2))
        if n_det == 0:
            return _Association([], [tr.obj_id for tr, ne in zip(tracks, nonempty) if ne], set(), {})
        ious = mk.mask_iou(det.masks > 0, trk_bin)
        same_prompt = det.prompt_ids[:, None] == np.array([tr.prompt_id for tr in tracks])[None, :]
        ious = np.where(same_prompt, ious, 0.0)
        trk_matched = (ious >= s.trk_assoc_iou_thresh).any(axis=0)
        unmatched = [tr.obj_id for tr, ne, mt in zip(tracks, nonempty, trk_matched) if ne and not mt]
        is_new = (det.scores >= s.new_det_thresh) & ~(ious >= s.assoc_iou_thresh).any(axis=1)
        matched = {tracks[j].obj_id for j in np.flatnonzero((ious >= s.assoc_iou_thresh).any(axis=0))}
        high_conf: dict[int, int] = {}
        confident = (det.scores >= s.high_conf_thresh) & ~is_new & (ious.max(axis=1) >= s.high_iou_thresh)
        for d in np.flatnonzero(confident):
            high_conf[tracks[int(np.argmax(ious[d]))].obj_id] = int(d)
        return _Association([int(i) for i in np.flatnonzero(is_new)], unmatched, matched, high_conf)

    def _merge(
        self, tracks: list[ObjectTrack], step: dict[str, np.ndarray], det: _Detections, trk_feats: dict[str, np.ndarray], t: int
    ) -> tuple[np.ndarray, list[int], list[ObjectTrack], dict[int, int]]:
        """Returns the shown track masks, the detections that became objects, those objects, re-anchorings."""
        s = self.settings
        trk_masks = step["masks"]
        assoc = self._associate(det, trk_masks, tracks)
        new = assoc.new
        if len(tracks) + len(new) > self.max_objects:  # keep the best-scoring new detections
            room = max(self.max_objects - len(tracks), 0)
            new = [new[i] for i in np.argsort(-det.scores[new], kind="stable")[:room]]
        # keep-alive bookkeeping (Sam3VideoModel's hotstart counters; no removal in streaming)
        for obj_id in assoc.matched:
            self._tracks[obj_id].keep_alive = min(s.max_trk_keep_alive, self._tracks[obj_id].keep_alive + 1)
        for obj_id in assoc.unmatched:
            self._tracks[obj_id].keep_alive = max(s.min_trk_keep_alive, self._tracks[obj_id].keep_alive - 1)
        # periodic re-anchoring on confident detections
        recond: dict[int, int] = {}
        if s.recondition_every_nth_frame > 0 and t % s.recondition_every_nth_frame == 0:
            index = {tr.obj_id: i for i, tr in enumerate(tracks)}
            for obj_id, d in assoc.high_conf.items():
                # transformers compares the tracker's *logit* with high_conf_thresh; kept as is
                if step["score"][index[obj_id]] > s.high_conf_thresh:
                    recond[obj_id] = d
        if tracks:
            trk_masks = self._suppress_recently_occluded(tracks, trk_masks, t)
            self._encode_track_memories(tracks, trk_masks, recond, det, trk_feats, t)
        new_tracks = self._add_objects(tracks, step, recond, det, new, trk_feats, t)
        return trk_masks, new, new_tracks, recond

    def _suppress_recently_occluded(self, tracks: list[ObjectTrack], trk_masks: np.ndarray, t: int) -> np.ndarray:
        """Of two tracks of one prompt overlapping at IoU >= threshold, hide the one occluded more recently."""
        thr = self.settings.suppress_overlapping_based_on_recent_occlusion_threshold
        binary = trk_masks > 0
        last = np.array([tr.last_occluded for tr in tracks])
        suppress = np.zeros(len(tracks), bool)
        if thr > 0:
            prompts = np.array([tr.prompt_id for tr in tracks])
            for p in np.unique(prompts):
                idx = np.flatnonzero(prompts == p)
                if len(idx) <= 1:
                    continue
                pairs = np.triu(mk.mask_iou(binary[idx], binary[idx]) >= thr, k=1)
                li, lj = last[idx][:, None], last[idx][None, :]
                sup_i = (pairs & (li > lj) & (lj > -1)).any(axis=1)
                sup_j = (pairs & (lj > li) & (li > -1)).any(axis=0)
                suppress[idx] = sup_i | sup_j
        occluded = ~binary.any(axis=(1, 2)) | suppress
        for tr, occ in zip(tracks, occluded, strict=True):
            if occ:
                tr.last_occluded = t
        out = trk_masks.copy()
        out[suppress] = mk.NO_OBJ_LOGIT
        return out

    def _encode(self, trk_feats: dict[str, np.ndarray], masks: np.ndarray, binarize: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Memory encoder for N masks (logits at any size; resized like `_encode_new_memory`)."""
        size = (self._mem_size, self._mem_size)
        resized = resize(masks, size, axes=(1, 2), antialias=True)[:, None].astype(np.float32)
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

    def _encode_track_memories(self, tracks, trk_masks, recond, det, trk_feats, t) -> None:
        """`_tracker_update_memories`: memories of existing tracks from the merged masks."""
        s = self.settings
        mem_in = trk_masks.copy()
        for i, tr in enumerate(tracks):
            if tr.obj_id in recond:
                if not s.recondition_on_trk_masks:
                    mem_in[i] = (det.masks[recond[tr.obj_id]] >= 0.5).astype(np.float32)
                tr.promote(t)
        mem_in = mk.suppress_shrunk(mem_in, np.array([tr.prompt_id for tr in tracks]))
        scores = np.where((mem_in > 0).any(axis=(1, 2)), 10.0, -10.0)
        bits = self._encode(trk_feats, mem_in, np.zeros(len(tracks), bool), scores)
        for tr, b in zip(tracks, bits, strict=True):
            tr.entry(t).maskmem = b

    def _add_objects(self, tracks, step, recond, det, new, trk_feats, t) -> list[ObjectTrack]:
        """`_tracker_add_new_objects`: new objects from detections (as conditioning frames).

        Like transformers, adding objects re-runs the tracker on this frame for every other
        object that was not re-anchored, and re-encodes their memory from the tracker's own
        mask, thresholded (the memory encoder binarises the whole batch once a mask prompt
        is in it). The re-run would reproduce the step outputs exactly, so they are reused.
        """
        if not new:
            return []
        binary = (det.masks[new] >= 0.5).astype(np.float32)  # (n, m, m)
        init = self.model.run(gc.TRACKER_INIT, {**trk_feats, gc.MASKS: binary[:, None]})
        new_tracks = []
        for k, d in enumerate(new):
            tr = ObjectTrack(self._next_id, int(det.prompt_ids[d]), float(det.scores[d]), t, keep_alive=self.settings.init_trk_keep_alive)
            tr.cond[t] = MemoryEntry(init[gc.OBJECT_POINTER][k].copy())
            self._next_id += 1
            new_tracks.append(tr)
        size = (self._image, self._image)
        rerun = [i for i, tr in enumerate(tracks) if tr.obj_id not in recond]
        hr_existing = resize(step["low"][rerun], size, axes=(1, 2), antialias=False) if rerun else np.zeros((0, *size), np.float32)
        hr_new = resize(binary, size, axes=(1, 2), antialias=True) * 20.0 - 10.0
        hr = np.concatenate([hr_existing, hr_new])
        scores = np.concatenate([step["score"][rerun], init[gc.OBJECT_SCORE_LOGITS][:, 0]])
        bits = self._encode(trk_feats, hr, np.ones(len(hr), bool), scores)
        for i, b in zip(rerun, bits[: len(rerun)], strict=True):
            tracks[i].entry(t).maskmem = b
        for tr, b in zip(new_tracks, bits[len(rerun) :], strict=True):
            tr.cond[t].maskmem = b
        for tr in new_tracks:
            self._tracks[tr.obj_id] = tr
        return new_tracks

    def _outputs(self, hw, tracks, step, trk_masks, new_tracks, new, recond, det, t) -> FrameResult:
        """`build_outputs` + the video processor's post-processing, at input resolution."""
        h, w = int(hw[0]), int(hw[1])
        low = [det.masks[recond[tr.obj_id]] if tr.obj_id in recond else trk_masks[i] for i, tr in enumerate(tracks)]
        if new_tracks:  # new objects are shown as their (hole-filled) detection masks
            new_low = det.masks[new]
            low += list(mk.fill_holes(new_low, self.settings.fill_hole_area) if self.options.fill_holes else new_low)
        every = [*tracks, *new_tracks]
        ids = np.array([tr.obj_id for tr in every], np.int64)
        prompt_ids = np.array([tr.prompt_id for tr in every], np.int64)
        scores = np.array([tr.det_score for tr in every], np.float32)
        tscores = np.concatenate([sigmoid(step["score"]), scores[len(tracks) :]]).astype(np.float32)
        if every:
            logits = resize(np.stack(low), (h, w), axes=(1, 2), antialias=False)
        else:
            logits = np.zeros((0, h, w), np.float32)
        masks = logits > 0
        keep = masks.any(axis=(1, 2))
        ids, prompt_ids, scores, tscores, masks, logits = (a[keep] for a in (ids, prompt_ids, scores, tscores, masks, logits))
        masks = mk.object_wise_non_overlap(masks, tscores, prompt_ids)
        label = np.zeros((h, w), np.uint8)
        if len(masks):
            conf = np.where(masks, sigmoid(logits), -1.0)
            label = np.where(masks.any(axis=0), prompt_ids[np.argmax(conf, axis=0)] + 1, 0).astype(np.uint8)
        return FrameResult(t, self.prompts, ids, prompt_ids, masks, scores, tscores, mk.boxes_from_masks(masks), label)

    def _finish_frame(self, result: FrameResult, t: int) -> None:
        shown = set(result.object_ids.tolist())
        s = self.settings
        for tr in list(self._tracks.values()):
            tr.empty_frames = 0 if tr.obj_id in shown else tr.empty_frames + 1
            if self.options.forget_after is not None and tr.empty_frames >= self.options.forget_after:
                del self._tracks[tr.obj_id]
                continue
            tr.prune(t, num_maskmem=s.num_maskmem, max_pointers=s.max_object_pointers_in_encoder, max_cond=self.max_cond)
