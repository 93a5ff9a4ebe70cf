"""Frame-by-frame detection without the tracker: the fallback for exports that have none.

Each frame is segmented on its own, as in 2D (highest-scoring query per prompt), and a
prompt's mask is kept when its score reaches the detection threshold. Each prompt is one
object whose id is the prompt's index, so volumes and videos still get per-structure
results; there is no memory, so nothing carries over between slices. `Stream` is the real
thing; this exists so a detector-only export (e.g. the bundled demo model, whose tracker
was not trained) can still process volumes and videos, and says so.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from .. import graph_contract as gc
from .. import postprocess as post
from ..model import Model
from ..preprocess import IntensityWindow, pixel_values
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
        self._text = model.text_batch(list(self.prompts))
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

    def _detect(self, frame: np.ndarray) -> dict[str, np.ndarray]:
        feats = self.model.encode_image(pixel_values(frame, self.model.manifest.preprocess, self.window))
        return self.model.detect(feats, self._text)

    def best_detection_score(self, frame: np.ndarray) -> float:
        out = self._detect(frame)
        return float(post.detection_scores(out[gc.PRED_LOGITS], out[gc.PRESENCE_LOGITS]).max())

    def push(self, frame: np.ndarray) -> FrameResult:
        t0 = time.perf_counter()
        out = self._detect(frame)
        t1 = time.perf_counter()
        scores_all = post.detection_scores(out[gc.PRED_LOGITS], out[gc.PRESENCE_LOGITS])
        best = post.top1(scores_all)
        rows = np.arange(len(self.prompts))
        scores = scores_all[rows, best].astype(np.float32)
        h, w = frame.shape[:2]
        probs = post.upsample_probabilities(out[gc.PRED_MASKS][rows, best], (int(h), int(w)))
        masks, label = post.combine(probs, scores >= self.threshold, self.model.manifest.postprocess.mask_threshold)
        keep = masks.any(axis=(1, 2))
        ids = rows[keep].astype(np.int64)
        result = FrameResult(
            frame_index=self._t,
            prompts=self.prompts,
            object_ids=ids,
            prompt_ids=ids.copy(),
            masks=masks[keep],
            scores=scores[keep],
            tracker_scores=scores[keep],
            boxes=mk.boxes_from_masks(masks[keep]),
            label_map=label,
            timings_ms={"backbone+detector": (t1 - t0) * 1e3, "postprocess": (time.perf_counter() - t1) * 1e3},
        )
        self._t += 1
        return result
