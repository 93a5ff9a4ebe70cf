"""The host-side steps of the Triton Python-backend models, importable and testable outside Triton.

`triton-repo` writes thin `model.py` files that hand Triton's tensors to these handlers: the
segment model answers one image + prompts per request; the stream model keeps one stream per
sequence correlation id (Triton's sequence batcher routes a sequence's requests to one instance).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, UsageError


def _prompts(raw: np.ndarray) -> list[str]:
    items = [p.decode("utf-8") if isinstance(p, bytes) else str(p) for p in np.asarray(raw).reshape(-1)]
    if not items:
        raise UsageError("PROMPTS is empty: send at least one text prompt")
    return items


class SegmentHandler:
    """One image and its prompts -> label map, scores, boxes (what `Segmenter.segment` returns)."""

    def __init__(self, export_dir: str | os.PathLike[str], backend: str = "auto", threads: int | None = None) -> None:
        from ..segmenter import load

        self.seg = load(Path(export_dir), backend, threads=threads)

    def __call__(self, image: np.ndarray, prompts: np.ndarray) -> dict[str, np.ndarray]:
        if image.ndim not in (2, 3):
            raise InputError(f"IMAGE must be H x W or H x W x 3, got shape {tuple(image.shape)}")
        result = self.seg.segment(image, _prompts(prompts))
        return {
            "LABEL_MAP": result.label_map.astype(np.uint8),
            "SCORES": np.asarray(result.scores, np.float32),
            "BOXES": np.asarray(result.boxes, np.float32).reshape(-1, 4),
        }


class StreamHandler:
    """Frames of many sequences, one stream per correlation id; START opens it, END closes it."""

    def __init__(
        self, export_dir: str | os.PathLike[str], backend: str = "auto", threads: int | None = None, max_streams: int = 64
    ) -> None:
        from ..segmenter import load

        self.seg = load(Path(export_dir), backend, threads=threads)
        self.streams: dict[int, Any] = {}
        self.max_streams = max_streams

    def __call__(self, corrid: int, start: bool, end: bool, frame: np.ndarray, prompts: np.ndarray) -> dict[str, np.ndarray]:
        if start:
            if corrid not in self.streams and len(self.streams) >= self.max_streams:
                raise UsageError(f"{len(self.streams)} streams are open; close one (END) before starting another")
            self.streams[corrid] = self.seg.stream(_prompts(prompts), mode="auto")
        stream = self.streams.get(corrid)
        if stream is None:
            raise UsageError(f"sequence {corrid} has no open stream: its first request must set START")
        try:
            fr = stream.push(frame)
        finally:
            if end:
                self.streams.pop(corrid, None)
        return {
            "LABEL_MAP": fr.label_map.astype(np.uint8),
            "OBJECT_IDS": np.asarray(fr.object_ids, np.int64),
            "SCORES": np.asarray(fr.scores, np.float32),
        }

    def drop(self, corrid: int) -> None:
        """Forget a sequence whose client vanished (Triton's idle timeout ends it)."""
        self.streams.pop(corrid, None)
