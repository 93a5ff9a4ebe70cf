"""Whole volumes (NIfTI, DICOM series, 3D arrays) through the streaming tracker, slice by slice.

The paper treats slices as video frames (Medical SAM3, Fig. 2). `segment_volume` streams
the slices in order; with `bidirectional=True` (an extension beyond the paper, which names
planar 3D treatment as a limitation) it first scans every slice with the detector, starts
at the slice with the most confident detection and tracks towards both ends, so structures
are anchored where they are clearest rather than wherever they first appear.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError, UsageError
from .io.volumes import Axis, Volume, is_nifti, read_dicom_series, read_nifti
from .preprocess import IntensityWindow
from .tokenizer import as_prompt_list
from .tracker.per_frame import FrameDetector
from .tracker.settings import StreamOptions
from .tracker.streaming import FrameResult, Stream

VOLUME_SAMPLE_SLICES = 32  # slices sampled for the volume's intensity range


@dataclass(frozen=True)
class ObjectSummary:
    object_id: int
    prompt_id: int
    prompt: str
    score: float  # detection score when first found
    first_slice: int
    last_slice: int
    voxels: int
    volume_ml: float


@dataclass(frozen=True)
class VolumeResult:
    """Labels on the input's voxel grid (uint8: 0 background, k = k-th prompt) and what they measure."""

    labels: np.ndarray
    affine: np.ndarray  # voxel -> RAS mm, as the input
    spacing: tuple[float, float, float]
    prompts: tuple[str, ...]
    objects: tuple[ObjectSummary, ...]
    prompt_volumes_ml: dict[str, float]
    slice_axis: int
    start_slice: int  # where tracking started (0, or the anchor of a bidirectional run)
    timings_ms: dict[str, float] = field(default_factory=dict)
    mode: str = "tracker"  # or "per-frame detection" for exports without tracker graphs


def open_volume(
    source: str | os.PathLike[str] | np.ndarray | Volume,
    *,
    axis: Axis = "axial",
    spacing: Sequence[float] | None = None,
    series_uid: str | None = None,
) -> Volume:
    """A `Volume` from a NIfTI file, a DICOM series folder, or a (slices, H, W) array."""
    if isinstance(source, Volume):
        return source
    if isinstance(source, np.ndarray):
        return _array_volume(source, spacing)
    path = Path(source)
    if path.is_dir():
        return read_dicom_series(path, axis, series_uid)
    if is_nifti(path):
        return read_nifti(path, axis)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    raise InputError(f"{path}: not a volume (expected .nii/.nii.gz or a DICOM series folder)")


def _array_volume(arr: np.ndarray, spacing: Sequence[float] | None) -> Volume:
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise InputError(f"volume arrays must be (slices, H, W), got shape {list(arr.shape)}")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating) or arr.dtype == bool):
        raise InputError(f"volume dtype {arr.dtype} is not supported")
    sz, sy, sx = (float(v) for v in (spacing or (1.0, 1.0, 1.0)))
    affine = np.diag([sz, sy, sx, 1.0])
    # voxel axes (z, y, x): slices along axis 0 are already (H, W) images
    return Volume(
        Path("<array>"),
        tuple(arr.shape),
        affine,
        0,
        "array",  # type: ignore[arg-type]
        lambda k: np.asarray(arr[k], np.float32),
        display="identity",
    )


def volume_window(volume: Volume) -> IntensityWindow | None:
    """One intensity mapping for all slices: the range over evenly spaced sample slices."""
    idx = np.unique(np.linspace(0, volume.num_slices - 1, min(VOLUME_SAMPLE_SLICES, volume.num_slices)).astype(int))
    lo, hi = np.inf, -np.inf
    for i in idx:
        s = volume.slice(int(i))
        lo, hi = min(lo, float(s.min())), max(hi, float(s.max()))
    return IntensityWindow(lo, hi) if hi > lo else None


def most_confident_slice(stream: Stream | FrameDetector, volume: Volume, batch_size: int = 1) -> int:
    """Detector-only scan: the slice whose best detection (any prompt) scores highest (first on ties)."""
    scores = stream.best_detection_scores((volume.slice(i) for i in range(volume.num_slices)), batch_size)
    return int(np.argmax(scores))


def segment_volume(
    stream: Stream | FrameDetector,
    volume: Volume,
    *,
    bidirectional: bool = False,
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = 1,
) -> VolumeResult:
    """Track `stream`'s prompts through every slice of `volume` (the stream is reset first).

    `batch_size` > 1: the slices are known up front, so the backbone encodes that many per call
    where the export has an image batch axis (`export --batch-axis`); results are the same.
    """
    if batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, got {batch_size}")
    n = volume.num_slices
    labels = np.zeros(volume.shape, np.uint8)
    acc: dict[int, dict] = {}
    timings: dict[str, float] = {}
    done = 0

    def consume(index: int, fr: FrameResult, id_map: Callable[[int], int]) -> None:
        nonlocal done
        volume.place(fr.label_map, index, labels)
        for k, oid in enumerate(fr.object_ids):
            oid = id_map(int(oid))
            area = int(fr.masks[k].sum())
            entry = acc.setdefault(
                oid, {"prompt": int(fr.prompt_ids[k]), "score": float(fr.scores[k]), "first": index, "last": index, "voxels": 0}
            )
            entry["first"], entry["last"] = min(entry["first"], index), max(entry["last"], index)
            entry["voxels"] += area
        for stage, ms in fr.timings_ms.items():
            timings[stage] = timings.get(stage, 0.0) + ms
        done += 1
        if progress is not None:
            progress(done, n)

    bidirectional = bidirectional and isinstance(stream, Stream)  # without a tracker, slices are independent
    start = most_confident_slice(stream, volume, batch_size) if bidirectional and n > 1 else 0
    # `run` holds each slice back as Meta's video predictor does (the hot-start delay), so an
    # object removed a few slices after it appears is hidden from every slice
    stream.reset()
    for fr in stream.run((volume.slice(i) for i in range(start, n)), batch_size=batch_size):
        consume(start + fr.frame_index, fr, lambda o: o)
    if start > 0:
        # The backward pass sees the anchor slice first, so it creates the same objects there, with
        # the same ids, as the forward pass did; objects it finds later get ids after the forward pass's.
        offset = stream.next_object_id
        stream.reset()
        stream.push(volume.slice(start))
        anchored = stream.next_object_id
        for fr in stream.run((volume.slice(i) for i in range(start - 1, -1, -1)), batch_size=batch_size):
            consume(start - fr.frame_index, fr, lambda o: o if o < anchored else offset + (o - anchored))
    objects = tuple(
        ObjectSummary(
            oid, e["prompt"], stream.prompts[e["prompt"]], e["score"], e["first"], e["last"], e["voxels"], e["voxels"] * volume.voxel_ml
        )
        for oid, e in sorted(acc.items())
    )
    per_prompt = {p: float((labels == k + 1).sum() * volume.voxel_ml) for k, p in enumerate(stream.prompts)}
    mode = "tracker" if isinstance(stream, Stream) else FrameDetector.mode
    return VolumeResult(labels, volume.affine, volume.spacing, stream.prompts, objects, per_prompt, volume.slice_axis, start, timings, mode)


def new_volume_stream(
    segmenter,
    prompts: str | Sequence[str],
    volume: Volume,
    *,
    window: IntensityWindow | None,
    options: StreamOptions | None,
    mode: str = "auto",
) -> Stream | FrameDetector:
    """A stream for a volume: one intensity mapping for every slice unless a window is given."""
    prompt_list = as_prompt_list(prompts)
    return segmenter.stream(prompt_list, options=options, window=window if window is not None else volume_window(volume), mode=mode)
