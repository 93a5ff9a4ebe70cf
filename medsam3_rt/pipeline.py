"""One frame through the graphs: preprocess -> backbone -> detector -> scores -> top-1.

Shared by the three ways the runtime looks at an image: `Segmenter.segment` (one 2D image),
`FrameDetector` (frames segmented independently) and `Stream` (frames with the tracker,
which takes the backbone features and all detections from here). The detection score
(sigmoid(logit) x sigmoid(presence)) is computed only in `postprocess.detection_scores`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from . import graph_contract as gc
from . import postprocess as post
from .model import Model
from .preprocess import IntensityWindow, pixel_values
from .stopwatch import Stopwatch


@dataclass(frozen=True)
class Top1:
    """Each prompt's highest-scoring query at input resolution (paper Sec. 4.2).

    query_index  int64 (P,); scores float32 (P,); boxes float32 (P, 4) xyxy pixels
    masks        bool (P, H, W), empty where the score is below the threshold
    label_map    uint8 (H, W): pixel-wise most probable prompt (0 background)
    """

    query_index: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray
    label_map: np.ndarray


def detection_scores(out: dict[str, np.ndarray]) -> np.ndarray:
    """(P, Q) detection scores of a detector run."""
    return post.detection_scores(out[gc.PRED_LOGITS], out[gc.PRESENCE_LOGITS])


def top1(out: dict[str, np.ndarray], hw: tuple[int, int], min_score: float, mask_threshold: float) -> Top1:
    """The best query of every prompt; its mask is kept when its score reaches `min_score`."""
    scores_all = detection_scores(out)
    best = post.top1(scores_all)
    rows = np.arange(len(scores_all))
    scores = scores_all[rows, best]
    size = (int(hw[0]), int(hw[1]))
    probs = post.upsample_probabilities(out[gc.PRED_MASKS][rows, best], size)
    masks, label = post.combine(probs, scores >= min_score, mask_threshold)
    boxes = post.scale_boxes(out[gc.PRED_BOXES][rows, best], size)
    return Top1(best, scores.astype(np.float32), boxes, masks, label)


class FramePipeline:
    """Backbone and detector runs of one model for a fixed prompt set and intensity window."""

    def __init__(self, model: Model, prompts: Sequence[str], window: IntensityWindow | None = None) -> None:
        self.model = model
        self.prompts = tuple(prompts)
        self.window = window
        self.text = model.text_batch(list(self.prompts))

    def features(self, frame: np.ndarray, clock: Stopwatch | None = None) -> dict[str, np.ndarray]:
        """Backbone features of one frame (H x W or H x W x 3; same input rules as `segment`)."""
        pixels = pixel_values(frame, self.model.manifest.preprocess, self.window)
        if clock is not None:
            clock.lap("preprocess")
        feats = self.model.encode_image(pixels)
        if clock is not None:
            clock.lap("backbone")
        return feats

    def prefetch(self, frames: Iterable[np.ndarray], batch_size: int) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray], Stopwatch]]:
        """(frame, features, clock) for each frame, the backbone run on up to `batch_size` frames per call.

        For sequences known in advance (a volume's slices, a recorded video): an export with an
        image batch axis (`manifest.image_batch_axis`) encodes several frames in one backbone
        call; features do not depend on any stream state, so frames then go through the
        detector and tracker one by one exactly as `features` + `push` would. Each clock holds
        the frame's share of its batch's preprocess and backbone time. Reads at most
        `batch_size` frames ahead of the one it yields.
        """
        if batch_size <= 1 or not self.model.manifest.image_batch_axis:
            for frame in frames:
                clock = Stopwatch()
                yield frame, self.features(frame, clock), clock
            return
        chunk: list[np.ndarray] = []
        for frame in frames:
            chunk.append(frame)
            if len(chunk) == batch_size:
                yield from self._encode_chunk(chunk)
                chunk = []
        if chunk:
            yield from self._encode_chunk(chunk)

    def _encode_chunk(self, chunk: list[np.ndarray]) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray], Stopwatch]]:
        t0 = time.perf_counter()
        pixels = [pixel_values(f, self.model.manifest.preprocess, self.window) for f in chunk]
        t1 = time.perf_counter()
        feats = self.model.encode_images(pixels)
        t2 = time.perf_counter()
        share = {"preprocess": (t1 - t0) * 1e3 / len(chunk), "backbone": (t2 - t1) * 1e3 / len(chunk)}
        for frame, f in zip(chunk, feats, strict=True):
            clock = Stopwatch()  # this frame's laps start now: what follows is its own detector, tracker, ...
            clock.ms.update(share)
            yield frame, f, clock

    def detect(self, feats: dict[str, np.ndarray], clock: Stopwatch | None = None) -> dict[str, np.ndarray]:
        """Detector outputs for every prompt (one batched call)."""
        out = self.model.detect(feats, self.text)
        if clock is not None:
            clock.lap("detector")
        return out

    def best_detection_score(self, frame: np.ndarray) -> float:
        """Highest detection score of any prompt in `frame`."""
        return float(detection_scores(self.detect(self.features(frame))).max())

    def best_detection_scores(self, frames: Iterable[np.ndarray], batch_size: int = 1) -> list[float]:
        """`best_detection_score` of every frame, `batch_size` frames per backbone call (see `prefetch`)."""
        return [float(detection_scores(self.detect(f)).max()) for _, f, _ in self.prefetch(frames, batch_size)]
