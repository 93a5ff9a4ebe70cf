"""Volumes (NIfTI, DICOM series) and videos (files, image sequences) for `medsam3-rt segment`."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._version import __version__
from ..io.atomic import atomic_path, atomic_write_text
from ..io.images import list_images, read_image, write_png
from ..io.video import VideoWriter, probe, read_frames
from ..io.volumes import Axis, Volume
from ..manifest import INTENDED_USE
from ..overlay import draw_overlay
from ..preprocess import IntensityWindow
from ..segmenter import Segmenter
from ..tracker.settings import StreamOptions
from ..tracker.streaming import FrameResult
from ..volume import VolumeResult, new_volume_stream, open_volume, segment_volume

if TYPE_CHECKING:
    from ..io.dicom_seg import SegOutput

VOLUME_OUTPUTS = (".labels.nii.gz", ".overlay.png", ".json")
DICOM_SEG_OUTPUTS = (".seg.dcm", ".overlay.png", ".json")  # --format dicom-seg
VIDEO_OUTPUTS = (".overlay.mp4", ".labels.npz", ".json")

Tick = Callable[[int, int], None]


def _legend(prompts: tuple[str, ...]) -> list[str]:
    return [f"{k + 1} {p}" for k, p in enumerate(prompts)]


def run_volume(
    seg: Segmenter,
    source: Path,
    prompts: list[str],
    paths: list[Path],
    *,
    axis: Axis,
    window: IntensityWindow | None,
    bidirectional: bool,
    options: StreamOptions,
    series_uid: str | None,
    tick: Tick,
    seg_output: SegOutput | None = None,
    batch_size: int = 1,
) -> VolumeResult:
    volume = open_volume(source, axis=axis, series_uid=series_uid)
    stream = new_volume_stream(seg, prompts, volume, window=window, options=options, mode="auto")
    result = segment_volume(stream, volume, bidirectional=bidirectional, progress=tick, batch_size=batch_size)
    labels_path, overlay_path, json_path = paths
    from ..io.volumes import write_label_volume

    extra = {}
    if seg_output is not None:  # DICOM-SEG instead of NIfTI labels
        extra = seg_output.write(labels_path, volume, result.labels, result.prompts)
    else:
        write_label_volume(labels_path, result.labels, volume)
    best = _largest_slice(volume, result)
    with atomic_path(overlay_path) as tmp:
        image = volume.slice(best)
        label = _slice_labels(volume, result.labels, best)
        write_png(tmp, draw_overlay(image, label, _legend(result.prompts), window=stream.window))
    payload = {
        "input": str(source),
        "kind": volume.kind,
        "shape": list(volume.shape),
        "spacing_mm": [round(v, 6) for v in volume.spacing],
        "slice_axis": axis,
        "num_slices": volume.num_slices,
        "mode": result.mode,
        "tracking_start_slice": result.start_slice,
        "bidirectional": bidirectional,
        "model": seg.manifest.model.get("name"),
        "backend": seg.backend_name,
        "prompts": [
            {"label": k + 1, "prompt": p, "volume_ml": round(result.prompt_volumes_ml[p], 4)} for k, p in enumerate(result.prompts)
        ],
        "objects": [
            {
                "object_id": o.object_id,
                "prompt": o.prompt,
                "label": o.prompt_id + 1,
                "score": round(o.score, 6),
                "slices": [o.first_slice, o.last_slice],
                "voxels": o.voxels,
                "volume_ml": round(o.volume_ml, 4),
            }
            for o in result.objects
        ],
        "overlay_slice": best,
        "labels_file": labels_path.name,
        "timings_ms": {k: round(v, 1) for k, v in result.timings_ms.items()},
        **({"dicom": volume.meta} if volume.meta else {}),
        **extra,
        "producer": f"medsam3-rt {__version__}",
        "intended_use": INTENDED_USE,
    }
    atomic_write_text(json_path, json.dumps(payload, indent=2, ensure_ascii=False))
    return result


def _slice_labels(volume: Volume, labels: np.ndarray, index: int) -> np.ndarray:
    idx: list = [slice(None)] * 3
    idx[volume.slice_axis] = index
    return np.ascontiguousarray(volume.to_display(labels[tuple(idx)]))


def _largest_slice(volume: Volume, result: VolumeResult) -> int:
    other = tuple(a for a in range(3) if a != volume.slice_axis)
    areas = (result.labels > 0).sum(axis=other)
    return int(np.argmax(areas)) if areas.any() else volume.num_slices // 2


def _frame_objects(fr: FrameResult) -> list[dict]:
    rows = zip(fr.object_ids, fr.prompt_ids, fr.scores, fr.tracker_scores, fr.boxes, fr.masks, strict=True)
    return [
        {
            "object_id": int(o),
            "prompt": fr.prompts[int(p)],
            "label": int(p) + 1,
            "score": round(float(s), 6),
            "tracker_score": round(float(ts), 6),
            "box_xyxy": [round(float(v), 1) for v in b],
            "area_px": int(m.sum()),
        }
        for o, p, s, ts, b, m in rows
    ]


def frames_of(source: Path) -> tuple[Iterator[np.ndarray], float, int]:
    """Frames, frame rate and (approximate) count of a video file or a folder of images."""
    if source.is_dir():
        files = list_images(source)
        return (read_image(f) for f in files), 25.0, len(files)
    info = probe(source)
    return read_frames(source), info.fps, info.frames


def run_video(
    seg: Segmenter,
    source: Path,
    prompts: list[str],
    paths: list[Path],
    *,
    window: IntensityWindow | None,
    options: StreamOptions,
    tick: Tick,
) -> list[FrameResult]:
    """Stream a video (or image sequence): overlay mp4, label stack (npz), per-frame JSON."""
    frames, fps, total = frames_of(source)
    overlay_path, labels_path, json_path = paths
    per_frame: list[dict] = []
    labels: list[np.ndarray] = []
    results: list[FrameResult] = []
    writer: VideoWriter | None = None
    read: deque[np.ndarray] = deque()  # frames whose results `run` still holds back

    def reading() -> Iterator[np.ndarray]:
        for frame in frames:
            read.append(frame)
            yield frame

    with atomic_path(overlay_path) as tmp, seg.stream(prompts, options=options, window=window, mode="auto") as stream:
        try:
            for i, fr in enumerate(stream.run(reading())):
                frame = read.popleft()
                if writer is None:
                    writer = VideoWriter(tmp, fps, (frame.shape[1], frame.shape[0]))
                if labels and fr.label_map.shape != labels[0].shape:
                    from ..errors import InputError

                    raise InputError(f"{source}: frame {i} is {fr.label_map.shape}, earlier frames {labels[0].shape}")
                writer.write(draw_overlay(frame, fr.label_map, _legend(fr.prompts), window=window))
                labels.append(fr.label_map)
                per_frame.append(
                    {"frame": i, "objects": _frame_objects(fr), "timings_ms": {k: round(v, 2) for k, v in fr.timings_ms.items()}}
                )
                results.append(fr)
                tick(i + 1, max(total, i + 1))
        finally:
            if writer is not None:
                writer.close()
        if not labels:
            from ..errors import InputError

            raise InputError(f"{source}: no frames to segment")
    with atomic_path(labels_path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, labels=np.stack(labels), prompts=np.array(prompts))
    payload = {
        "input": str(source),
        "kind": "image-sequence" if source.is_dir() else "video",
        "mode": "tracker" if seg.manifest.has_tracker else "per-frame detection",
        "frames": len(per_frame),
        "fps": fps,
        "model": seg.manifest.model.get("name"),
        "backend": seg.backend_name,
        "prompts": [{"label": k + 1, "prompt": p} for k, p in enumerate(prompts)],
        "per_frame": per_frame,
        "labels_file": labels_path.name,
        "producer": f"medsam3-rt {__version__}",
        "intended_use": INTENDED_USE,
    }
    atomic_write_text(json_path, json.dumps(payload, indent=1, ensure_ascii=False))
    return results
