"""Video files in and overlay videos out, via OpenCV."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError
from ._native import native_stderr, reason

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv")


def is_video_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    frames: int  # as the container reports it (may be approximate for some codecs)
    fps: float
    width: int
    height: int


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: file is empty (0 bytes)")
    with native_stderr() as messages:
        cap = cv2.VideoCapture(str(p))
        opened = cap.isOpened()
        ok, first = cap.read() if opened else (False, None)
    why = f" ({reason(messages)})" if messages else ""
    try:
        if not opened:
            raise InputError(f"{p}: cannot open the video (unknown container or codec){why}")
        if not ok or first is None:
            raise InputError(f"{p}: the video has no decodable frames{why}")
        return VideoInfo(
            p, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), float(cap.get(cv2.CAP_PROP_FPS) or 25.0), first.shape[1], first.shape[0]
        )
    finally:
        cap.release()


def read_frames(path: str | os.PathLike[str]) -> Iterator[np.ndarray]:
    """RGB uint8 frames, one at a time.

    A file that stops decoding before the frame count its container declares (a truncated
    or damaged recording) raises `InputError` after the last good frame instead of ending
    quietly; a count off by up to 1 % (estimated by some containers) is tolerated.
    """
    info = probe(path)
    with native_stderr():
        cap = cv2.VideoCapture(str(info.path))
    count = 0
    last: list[str] = []
    try:
        while True:
            with native_stderr() as messages:
                ok, frame = cap.read()
            last = messages or last
            if not ok:
                break
            count += 1
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if frame.ndim == 3 else frame
    finally:
        cap.release()
    if info.frames > 0 and count < info.frames - max(1, info.frames // 100):
        why = f" ({reason(last)})" if last else ""
        raise InputError(
            f"{info.path}: decoding stopped after {count} of the {info.frames} frames the container declares: "
            f"the file is truncated or corrupt{why}"
        )


class VideoWriter:
    """mp4 (mp4v) writer of RGB frames; the caller makes the file atomic."""

    def __init__(self, path: str | os.PathLike[str], fps: float, size_wh: tuple[int, int]) -> None:
        self._w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size_wh)
        if not self._w.isOpened():
            raise OSError(f"cannot write video {path} (OpenCV has no mp4v encoder?)")

    def write(self, rgb: np.ndarray) -> None:
        self._w.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self._w.release()
