"""Clips for tracker training: runs of consecutive slices (volumes) or frames (videos) with masks.

The tracker learns to carry an object from a prompted first frame through the next ones
(SAM2's video recipe), so its unit of data is a clip: `length` consecutive 2D frames, one
concept's binary mask on each, the concept present on the first frame (the prompt needs a
mask) and free to vanish later (the object-score head must learn absence too).

Two sources, both with the label-to-text dictionary of the image recipe (label 0 background,
several labels may share a concept):

* volumes: an image NIfTI and its label NIfTI on the same grid, sliced along an axis;
* videos: a folder of frames and a folder of label-map masks with the same file stems.

Clips are grouped for the train/validation split by `block` neighbouring start positions,
so held-out clips never share a frame with training clips when `block >= length`. A volume
can instead take the split of an image run (`HeldoutBlocks`): its held-out slices are then
held out from the tracker too, clip by clip (`Clip.side`), and clips straddling the two
sides are dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from medsam3_rt.errors import InputError
from medsam3_rt.preprocess import Preprocess, pixel_values

from .data.sources import AXES, load_volume, take_slice, volume_to_uint8
from .tracker_config import HeldoutBlocks

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Clip:
    """`length` frames (uint8, H x W) and one concept's masks (bool, H x W) on each."""

    frames: np.ndarray  # (T, H, W) uint8
    masks: np.ndarray  # (T, H, W) bool
    concept: str
    group: str  # split unit: clips of one group land on the same side
    name: str
    side: str | None = None  # "train" / "val" when fixed by an image run's split, else drawn by group


def _concept_labels(labels: dict[int, str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for value, concept in sorted(labels.items()):
        if value == 0:
            raise InputError("label 0 is background and cannot name a concept")
        out.setdefault(concept, []).append(value)
    return out


def _runs(
    frames: np.ndarray,
    labelmaps: np.ndarray,
    labels: dict[int, str],
    *,
    length: int,
    stride: int,
    block: int,
    key: str,
    min_pixels: int,
    indices: np.ndarray | None = None,
    val_slices: frozenset[int] | None = None,
) -> Iterator[Clip]:
    """Every clip of `length` frames starting every `stride` frames, per concept present on its first frame.

    With `val_slices` (held-out slice indices; `indices` maps frames to slices), a clip is on
    the validation side when every frame is held out, on the training side when none is, and
    skipped otherwise.
    """
    present = set(np.unique(labelmaps).tolist()) - {0}
    unknown = sorted(present - set(labels))
    if unknown:
        raise InputError(
            f"{key}: label {unknown[0]} is not in the label-to-text dictionary (labels: {', '.join(map(str, sorted(labels)))})"
        )
    for concept, values in _concept_labels(labels).items():
        masks = np.isin(labelmaps, values)
        for start in range(0, frames.shape[0] - length + 1, stride):
            if int(masks[start].sum()) < min_pixels:
                continue
            side = None
            if val_slices is not None:
                pos = indices[start : start + length] if indices is not None else range(start, start + length)
                held = sum(int(i) in val_slices for i in pos)
                if 0 < held < length:
                    continue
                side = "val" if held else "train"
            yield Clip(
                frames=frames[start : start + length],
                masks=masks[start : start + length],
                concept=concept,
                group=f"{key}:{start // max(block, 1):04d}",
                name=f"{key}:{concept}:{start:04d}",
                side=side,
            )


def volume_clips(
    image: str | Path,
    label: str | Path,
    labels: dict[int, str],
    *,
    axis: str = "axial",
    length: int = 8,
    stride: int = 4,
    block: int = 16,
    step: int = 1,
    min_pixels: int = 50,
    window: tuple[float, float] | None = None,
    heldout: HeldoutBlocks | None = None,
) -> list[Clip]:
    """Clips along `axis` of an image volume and its label volume (every `step`-th slice).

    `heldout`: take the side of each clip from an image run's split (see `heldout_slices`).
    """
    if axis not in AXES:
        raise InputError(f"axis {axis!r} is not one of {', '.join(AXES)}")
    vol, _ = load_volume(Path(image))
    lab, _ = load_volume(Path(label))
    if vol.shape != lab.shape:
        raise InputError(f"{label}: label volume shape {list(lab.shape)} differs from the image's {list(vol.shape)}")
    vol8 = volume_to_uint8(vol, window)
    idx = range(0, vol.shape[AXES[axis]], step)
    frames = np.stack([take_slice(vol8, axis, i) for i in idx])
    maps = np.stack([take_slice(lab, axis, i) for i in idx]).astype(np.int64)
    key = f"{Path(image).name.split('.')[0]}:{axis}"
    val_slices = None
    if heldout is not None:
        n = vol.shape[AXES[axis]]
        val_slices = heldout_slices(heldout.split_file, heldout.dataset, heldout.volume_key, axis, heldout.block, n)
    return list(
        _runs(
            frames,
            maps,
            labels,
            length=length,
            stride=stride,
            block=block,
            key=key,
            min_pixels=min_pixels,
            indices=np.asarray(idx),
            val_slices=val_slices,
        )
    )


def heldout_slices(split_file: str | Path, dataset: str, volume_key: str, axis: str, block: int, n: int) -> frozenset[int]:
    """The slice indices along `axis` (of `n`) that an image run's split holds out for one volume.

    The image recipe names a volume's groups `<volume_key>:<axis>:<block index>` (blocks of
    `block` slices), or `<volume_key>` when whole volumes are split.
    """
    import json

    from .config import ConfigError

    try:
        data = json.loads(Path(split_file).read_text(encoding="utf-8"))
        entry = data["datasets"][dataset]
        train, val = set(entry["train"]), set(entry["val"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConfigError(f"heldout: cannot read dataset '{dataset}' of the split '{split_file}' ({type(e).__name__}: {e})") from None
    if volume_key in val:
        return frozenset(range(n))
    prefix = f"{volume_key}:{axis}:"
    if volume_key not in train and not any(g.startswith(prefix) for g in train | val):
        raise ConfigError(f"heldout: the split '{split_file}' has no group of volume '{volume_key}' along the {axis} axis")
    out: set[int] = set()
    for g in val:
        if g.startswith(prefix) and g[len(prefix) :].isdigit():
            b = int(g[len(prefix) :])
            out.update(range(b * block, min((b + 1) * block, n)))
    return frozenset(out)


def video_clips(
    frames_dir: str | Path,
    masks_dir: str | Path,
    labels: dict[int, str],
    *,
    length: int = 8,
    stride: int = 4,
    block: int = 16,
    min_pixels: int = 50,
) -> list[Clip]:
    """Clips of a video stored as frame images (sorted by name) and label-map masks of the same stems."""
    import cv2

    frame_files = sorted(p for p in Path(frames_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not frame_files:
        raise InputError(f"{frames_dir}: no frame images ({', '.join(IMAGE_SUFFIXES)})")
    by_stem = {p.stem: p for p in Path(masks_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    frames, maps = [], []
    for f in frame_files:
        m = by_stem.get(f.stem)
        if m is None:
            raise InputError(f"{f.name}: no mask named {f.stem}.* in {masks_dir}")
        img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        lab = cv2.imread(str(m), cv2.IMREAD_UNCHANGED)
        if img is None or lab is None:
            raise InputError(f"{f.name}: cannot read the frame or its mask")
        if lab.ndim == 3:
            lab = lab[..., 0]
        if lab.shape != img.shape:
            raise InputError(f"{m.name}: mask size {lab.shape[::-1]} differs from the frame's {img.shape[::-1]}")
        frames.append(img)
        maps.append(lab.astype(np.int64))
    key = Path(frames_dir).name
    return list(_runs(np.stack(frames), np.stack(maps), labels, length=length, stride=stride, block=block, key=key, min_pixels=min_pixels))


def clip_tensors(clip: Clip, image_size: int, mask_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, 3, S, S) backbone inputs (the runtime's preprocessing) and (T, 1, m, m) float masks."""
    pre = Preprocess(image_size=image_size)
    pixels = torch.from_numpy(np.concatenate([pixel_values(f, pre) for f in clip.frames]))
    return pixels, clip_masks(clip, mask_size)


def clip_masks(clip: Clip, mask_size: int) -> torch.Tensor:
    """(T, 1, m, m) float masks in {0, 1} at the tracker's low-resolution mask size."""
    masks = torch.from_numpy(clip.masks.astype(np.float32))[:, None]
    return (F.interpolate(masks, size=(mask_size, mask_size), mode="area") > 0.5).float()


def group_clips(clips: list[Clip], objects: int) -> list[list[Clip]]:
    """Clips on the same frames (one position of one volume axis or video, other concepts) in groups of at most `objects`."""
    by_frames: dict[str, list[Clip]] = {}
    for c in clips:
        by_frames.setdefault(c.name.replace(f":{c.concept}:", ":", 1), []).append(c)
    out = []
    for same in by_frames.values():
        out += [same[i : i + objects] for i in range(0, len(same), objects)]
    return out


def split_clips(clips: list[Clip], val_fraction: float, seed: int) -> tuple[list[Clip], list[Clip]]:
    """Clips split by group (85/15, seed 42 in the recipe), as the image recipe splits slices."""
    from .data.split import draw_split

    groups = sorted({c.group for c in clips if c.side is None})
    split = draw_split(groups, val_fraction, seed)

    def side(c: Clip) -> str:
        return c.side if c.side is not None else split.side(c.group)

    train = [c for c in clips if side(c) == "train"]
    val = [c for c in clips if side(c) != "train"]
    return train, val
