"""Streaming constants: the model's (from the manifest) and the caller's (options)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from ..errors import ManifestError, UsageError

MODES: tuple[str, ...] = ("meta", "transformers")
# Objects tracked at once by default (mode "meta"): bounds per-frame time and memory on a
# live stream. Meta's video model compiles its tracker for 16 objects (num_obj_for_compile).
DEFAULT_MAX_OBJECTS = 16


@dataclass(frozen=True)
class TrackerSettings:
    """`Sam3VideoModel` / `Sam3TrackerVideoModel` config values the merge logic uses.

    Written by the exporter into the manifest's `tracker` section; names follow
    transformers' configs so they can be looked up there.
    """

    score_threshold_detection: float
    det_nms_thresh: float
    assoc_iou_thresh: float
    trk_assoc_iou_thresh: float
    new_det_thresh: float
    recondition_on_trk_masks: bool
    hotstart_delay: int
    hotstart_unmatch_thresh: int
    hotstart_dup_thresh: int
    suppress_unmatched_only_within_hotstart: bool
    init_trk_keep_alive: int
    max_trk_keep_alive: int
    min_trk_keep_alive: int
    suppress_overlapping_based_on_recent_occlusion_threshold: float
    decrease_trk_keep_alive_for_empty_masklets: bool
    fill_hole_area: int
    max_num_objects: int
    recondition_every_nth_frame: int
    high_conf_thresh: float
    high_iou_thresh: float
    num_maskmem: int
    max_cond_frame_num: int
    max_object_pointers_in_encoder: int

    @classmethod
    def from_manifest(cls, data: Mapping[str, Any]) -> TrackerSettings:
        casts = {"bool": bool, "int": int, "float": float}
        try:
            settings = cls(**{f.name: casts[str(f.type)](data[f.name]) for f in fields(cls)})
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestError(f"manifest 'tracker' section is missing or has a bad value for {e}") from None
        if settings.num_maskmem < 1 or settings.max_object_pointers_in_encoder < 1 or settings.max_cond_frame_num < 1:
            raise ManifestError("manifest 'tracker': num_maskmem, max_cond_frame_num and max_object_pointers_in_encoder must be >= 1")
        return settings


@dataclass(frozen=True)
class StreamOptions:
    """How a stream runs; the defaults are SAM3's own rules (Meta's code), bounded.

    policy             "meta" (default): Meta's track management (hot-start removal of young
                       tracks that stay unmatched or duplicate another; keep-alive counters),
                       at most `max_objects` objects, a stale track (empty, or no longer
                       confirmed by the detector) making room for a confident new detection.
                       "transformers": transformers' Sam3VideoModel in streaming mode (no
                       removal; new detections beyond the cap dropped; the cap defaults to
                       the model's max_num_objects, 10,000)
    nms / fill_holes   detection NMS and hole filling, which transformers runs only with its
                       optional hub kernels; on by default here
    max_objects        cap on simultaneously tracked objects (None: 16 with policy "meta",
                       the model's max_num_objects with "transformers")
    max_cond_frames    conditioning frames kept per object (None: the model's max_cond_frame_num).
                       transformers keeps every one (each reconditioning adds one) and feeds all
                       their pointers to memory attention, so its per-frame cost grows with video
                       length; medsam3-rt keeps the most recent ones, which are the ones it reads
    forget_after       remove an object after this many consecutive frames with an empty mask
                       (None: never, as transformers' streaming mode); its id is not reused
    detection_threshold / new_object_threshold
                       override the model's score_threshold_detection (a detection counts)
                       and new_det_thresh (an unmatched detection starts a new object)
    detect_every       run the detector on every k-th frame only (and on any frame after one
                       that showed no object); the frames between are tracker-only: the
                       tracker's masks are shown and written to memory, no object is added,
                       re-anchored or counted as unmatched. 1 (default): every frame, as
                       transformers. Python runtime only (libmedsam3rt detects every frame)
    memory_selection   read only tracked frames whose memory score (object score x predicted
                       IoU) is above the threshold, counted by rank, as Meta's video tracker
                       (True), or the last frames whatever their score, as transformers
                       (False). None (default): the manifest's `tracker.memory_selection`
                       (on for exports with tracker semantics "meta")
    """

    policy: Literal["meta", "transformers"] = "meta"
    nms: bool = True
    fill_holes: bool = True
    max_objects: int | None = None
    max_cond_frames: int | None = None
    forget_after: int | None = None
    detection_threshold: float | None = None
    new_object_threshold: float | None = None
    detect_every: int = 1
    memory_selection: bool | None = None

    def __post_init__(self) -> None:
        if self.policy not in MODES:
            raise UsageError(f"stream policy must be one of {', '.join(MODES)}, got {self.policy!r}")
        if isinstance(self.detect_every, bool) or not isinstance(self.detect_every, int) or self.detect_every < 1:
            raise UsageError(f"detect_every must be an integer >= 1, got {self.detect_every!r}")
        if self.memory_selection is not None and not isinstance(self.memory_selection, bool):
            raise UsageError(f"memory_selection must be True, False or None, got {self.memory_selection!r}")
        for name in ("max_objects", "max_cond_frames", "forget_after"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"{name} must be >= 1 or None, got {value}")
        for name in ("detection_threshold", "new_object_threshold"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise UsageError(f"{name} must be within 0..1, got {value}")

    def resolved_max_objects(self, settings: TrackerSettings) -> int:
        """The cap this stream runs with (see `max_objects`)."""
        if self.max_objects is not None:
            return self.max_objects
        return DEFAULT_MAX_OBJECTS if self.policy == "meta" else settings.max_num_objects

    def apply(self, settings: TrackerSettings) -> TrackerSettings:
        """The model's settings with this stream's threshold overrides."""
        changes = {}
        if self.detection_threshold is not None:
            changes["score_threshold_detection"] = self.detection_threshold
        if self.new_object_threshold is not None:
            changes["new_det_thresh"] = self.new_object_threshold
        return replace(settings, **changes)
