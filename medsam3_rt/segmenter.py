"""The public entry point: `medsam3_rt.load(model_dir).segment(image, prompts)`."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .backends import Backend, BackendOptions
from .errors import UsageError
from .io.volumes import Axis, Volume
from .manifest import Manifest, Verify
from .model import Model
from .pipeline import FramePipeline, top1
from .preprocess import IntensityWindow, pixel_values
from .stopwatch import Stopwatch
from .tokenizer import as_prompt_list
from .tracker.per_frame import FrameDetector
from .tracker.settings import StreamOptions
from .tracker.streaming import Stream
from .volume import VolumeResult, new_volume_stream, open_volume, segment_volume

log = logging.getLogger(__name__)

MAX_PROMPTS = 255  # label maps are uint8


@dataclass(frozen=True)
class SegmentResult:
    """Segmentation of one 2D image for P prompts (paper protocol: top-1 mask per prompt).

    masks      bool (P, H, W): each prompt's highest-confidence mask, at input resolution
               (empty where the score is below `min_score`); masks of different prompts may overlap
    scores     float32 (P,): sigmoid(logit) x sigmoid(presence) of that query, always reported
    boxes      float32 (P, 4): its box, xyxy in input pixels
    label_map  uint8 (H, W): 0 background, k for the k-th prompt; overlaps go to the prompt
               with the highest mask probability at that pixel
    """

    prompts: tuple[str, ...]
    masks: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    label_map: np.ndarray
    query_index: np.ndarray
    min_score: float
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def areas(self) -> np.ndarray:
        """(P,) mask areas in pixels."""
        return self.masks.reshape(len(self.prompts), -1).sum(axis=1)


class Segmenter:
    """Text-prompted segmentation with an exported SAM3 model.

    Thread safety: `segment` may be called from several threads at once (ONNX Runtime
    sessions are thread-safe and the prompt cache is locked); each stream object returned
    by `stream()` belongs to one thread.
    """

    def __init__(self, model: Model) -> None:
        self.model = model

    @property
    def manifest(self) -> Manifest:
        return self.model.manifest

    @property
    def backend_name(self) -> str:
        return self.model.backend.name

    def segment(
        self,
        image: np.ndarray,
        prompts: str | Sequence[str],
        *,
        min_score: float = 0.0,
        window: IntensityWindow | tuple[float, float] | None = None,
    ) -> SegmentResult:
        """Segment `prompts` in one image (H x W or H x W x 3 RGB; see `preprocess` for dtypes)."""
        prompt_list, window = _check_segment_args(prompts, min_score, window)
        sw = Stopwatch()
        frames = FramePipeline(self.model, prompt_list, window)
        sw.lap("text")
        out = frames.detect(frames.features(image, sw), sw)
        result = self._postprocess(prompt_list, out, image.shape[:2], min_score)
        sw.lap("postprocess")
        return SegmentResult(**result, timings_ms=sw.ms)

    def segment_batch(
        self,
        images: Sequence[np.ndarray],
        prompts: str | Sequence[str],
        *,
        batch_size: int = 4,
        min_score: float = 0.0,
        window: IntensityWindow | tuple[float, float] | None = None,
    ) -> list[SegmentResult]:
        """Segment `prompts` in many images: the results of `segment` on each, with less overhead.

        For offline batches (folders, slices of a volume segmented independently): up to
        `batch_size` images share one backbone call when the export has an image batch axis
        (`manifest.image_batch_axis`; others run the backbone per image), and every prompt of
        an image goes through one detector call. Images may differ in size. Timings per result:
        `backbone` is the batch's backbone time divided by its images.
        """
        if batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, got {batch_size}")
        prompt_list, window = _check_segment_args(prompts, min_score, window)
        t0 = time.perf_counter()
        frames = FramePipeline(self.model, prompt_list, window)
        text_ms = (time.perf_counter() - t0) * 1e3
        results: list[SegmentResult] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            t0 = time.perf_counter()
            pixels = [pixel_values(im, self.manifest.preprocess, window) for im in chunk]
            t1 = time.perf_counter()
            feats = self.model.encode_images(pixels)
            t2 = time.perf_counter()
            pre_ms, bb_ms = (t1 - t0) * 1e3 / len(chunk), (t2 - t1) * 1e3 / len(chunk)
            for im, f in zip(chunk, feats, strict=True):
                sw = Stopwatch()
                out = frames.detect(f, sw)
                result = self._postprocess(prompt_list, out, im.shape[:2], min_score)
                sw.lap("postprocess")
                timings = {"text": 0.0 if results else text_ms, "preprocess": pre_ms, "backbone": bb_ms, **sw.ms}
                results.append(SegmentResult(**result, timings_ms=timings))
        return results

    def _postprocess(self, prompts: list[str], out: dict[str, np.ndarray], hw: tuple[int, int], min_score: float) -> dict:
        best = top1(out, hw, min_score, self.manifest.postprocess.mask_threshold)
        return {
            "prompts": tuple(prompts),
            "masks": best.masks,
            "scores": best.scores,
            "boxes": best.boxes,
            "label_map": best.label_map,
            "query_index": best.query_index,
            "min_score": float(min_score),
        }

    def stream(
        self,
        prompts: str | Sequence[str],
        *,
        options: StreamOptions | None = None,
        window: IntensityWindow | tuple[float, float] | None = None,
        mode: Literal["track", "detect", "auto"] = "track",
    ) -> Stream | FrameDetector:
        """A frame-by-frame session (video, live ultrasound/endoscopy, volume slices) for `prompts`.

        mode "track" (default) runs detector + tracker memory and needs an export with tracker
        graphs; "detect" segments every frame on its own (no memory); "auto" tracks when the
        export can and otherwise detects per frame, logging which. The stream keeps a bounded
        memory per object; `reset()` starts a new video with the same prompts.
        """
        if window is not None and not isinstance(window, IntensityWindow):
            window = IntensityWindow(*window)
        if mode not in ("track", "detect", "auto"):
            raise UsageError(f"stream mode must be track, detect or auto, got {mode!r}")
        if mode == "detect" or (mode == "auto" and not self.manifest.has_tracker):
            if mode == "auto":
                log.warning("this export has no tracker graphs: frames are segmented independently (per-frame detection)")
            threshold = options.detection_threshold if options is not None else None
            return FrameDetector(self.model, prompts, detection_threshold=threshold, window=window)
        return Stream(self.model, prompts, options=options, window=window)

    def segment_volume(
        self,
        volume: str | os.PathLike[str] | np.ndarray | Volume,
        prompts: str | Sequence[str],
        *,
        axis: Axis = "axial",
        spacing: Sequence[float] | None = None,
        window: IntensityWindow | tuple[float, float] | None = None,
        bidirectional: bool = False,
        options: StreamOptions | None = None,
        progress: Callable[[int, int], None] | None = None,
        mode: Literal["track", "detect", "auto"] = "auto",
        batch_size: int = 1,
    ) -> VolumeResult:
        """Segment a NIfTI file, a DICOM series folder or a (slices, H, W) array, slice by slice.

        Returns the label volume on the input's voxel grid with its affine, and per-object and
        per-prompt volumes in millilitres. Without `window`, one intensity mapping (the volume's
        range) is used for every slice. mode: see `stream` (default "auto": the tracker when
        the export has one, else independent per-slice detection; `VolumeResult.mode` says which).
        batch_size: slices per backbone call for exports with an image batch axis (`export
        --batch-axis`; others run one by one); the same results, the tracker still steps slice by slice.
        """
        vol = open_volume(volume, axis=axis, spacing=spacing)
        if window is not None and not isinstance(window, IntensityWindow):
            window = IntensityWindow(*window)
        stream = new_volume_stream(self, prompts, vol, window=window, options=options, mode=mode)
        return segment_volume(stream, vol, bidirectional=bidirectional, progress=progress, batch_size=batch_size)

    def close(self) -> None:
        self.model.close()

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_segment_args(
    prompts: str | Sequence[str], min_score: float, window: IntensityWindow | tuple[float, float] | None
) -> tuple[list[str], IntensityWindow | None]:
    prompt_list = as_prompt_list(prompts)
    if len(prompt_list) > MAX_PROMPTS:
        raise UsageError(f"{len(prompt_list)} prompts given; at most {MAX_PROMPTS} fit one label map")
    if not 0.0 <= min_score <= 1.0:
        raise UsageError(f"min_score must be within 0..1, got {min_score}")
    if window is not None and not isinstance(window, IntensityWindow):
        window = IntensityWindow(*window)
    return prompt_list, window


def load(
    model_dir: str | os.PathLike[str],
    backend: str | Backend = "auto",
    *,
    threads: int | None = None,
    options: BackendOptions | None = None,
    verify: Verify = "hash",
    prompt_packs: Iterable[str | os.PathLike[str]] = (),
) -> Segmenter:
    """Open an export directory.

    backend  "auto" (best available: ort-trt, ort-cuda, ort-cpu) or an explicit name, which
             never falls back silently
    threads  CPU threads per graph (ONNX Runtime intra-op); default: the library's choice
    verify   "hash" checks every file's SHA-256 against the manifest (cached per process),
             "size" only sizes (fast start), "none" skips the check
    """
    if options is None:
        options = BackendOptions(intra_op_threads=threads)
    return Segmenter(Model(model_dir, backend, options=options, verify=verify, prompt_packs=prompt_packs))
