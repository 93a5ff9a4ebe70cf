"""Frame-by-frame detection without the tracker: the fallback for exports that have none.

Each frame is segmented on its own, as in 2D (highest-scoring query per prompt), and a
prompt's mask is kept when its score reaches the detection threshold. Each prompt is one
object whose id is the prompt's index, so volumes and videos still get per-structure
results; there is no memory, so nothing carries over between slices. `Stream` is the real
thing; this exists so a detector-only export (e.g. the bundled demo model, whose tracker
was not trained) can still process volumes and videos, and says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace

import numpy as np

from ..errors import UsageError
from ..model import Model
from ..pipeline import FramePipeline, top1
from ..preprocess import IntensityWindow
from ..stopwatch import Stopwatch
from ..tokenizer import as_prompt_list
from . import masks as mk
from .streaming import FrameResult

DEFAULT_DETECTION_THRESHOLD = 0.5  # Sam3VideoConfig.score_threshold_detection


class FrameDetector:
    """Same interface as `Stream` (push / reset / prompts / window), no tracker."""

    mode = "per-frame detection"

    def __init__(
        self,
        model: Model,
        prompts: str | Sequence[str],
        *,
        detection_threshold: float | None = None,
        window: IntensityWindow | None = None,
    ) -> None:
        self.model = model
        self.prompts = tuple(as_prompt_list(prompts))
        self.window = window
        tracker = model.manifest.tracker or {}
        self.threshold = (
            detection_threshold
            if detection_threshold is not None
            else float(tracker.get("score_threshold_detection", DEFAULT_DETECTION_THRESHOLD))
        )
        self._frames = FramePipeline(model, self.prompts, window)
        self.reset()

    def reset(self) -> None:
        self._t = 0

    @property
    def frame_index(self) -> int:
        return self._t

    @property
    def next_object_id(self) -> int:
        return len(self.prompts)

    def state_nbytes(self) -> int:
        return 0

    def __enter__(self) -> FrameDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reset()

    def best_detection_score(self, frame: np.ndarray) -> float:
        return self._frames.best_detection_score(frame)

    def best_detection_scores(self, frames: Iterable[np.ndarray], batch_size: int = 1) -> list[float]:
        """`best_detection_score` of every frame, `batch_size` frames per backbone call where the export allows."""
        return self._frames.best_detection_scores(frames, batch_size)

    def run(self, frames: Iterable[np.ndarray], *, delay: int | None = None, batch_size: int = 1) -> Iterator[FrameResult]:
        """`push` on every frame (independent frames have nothing to hold back; `delay` is ignored);
        `batch_size` frames per backbone call where the export has an image batch axis."""
        if batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, got {batch_size}")
        for frame, feats, clock in self._frames.prefetch(frames, batch_size):
            yield self._push(frame, feats, clock)

    def push(self, frame: np.ndarray) -> FrameResult:
        clock = Stopwatch()
        return self._push(frame, self._frames.features(frame, clock), clock)

    def _push(self, frame: np.ndarray, feats: dict[str, np.ndarray], clock: Stopwatch) -> FrameResult:
        out = self._frames.detect(feats, clock)
        best = top1(out, frame.shape[:2], self.threshold, self.model.manifest.postprocess.mask_threshold)
        keep = best.masks.any(axis=(1, 2))
        ids = np.flatnonzero(keep).astype(np.int64)
        masks = best.masks[keep]
        result = FrameResult(
            frame_index=self._t,
            prompts=self.prompts,
            object_ids=ids,
            prompt_ids=ids.copy(),
            masks=masks,
            scores=best.scores[keep],
            tracker_scores=best.scores[keep],
            boxes=mk.boxes_from_masks(masks),
            label_map=best.label_map,
        )
        clock.lap("postprocess")
        self._t += 1
        return replace(result, timings_ms=clock.ms)
