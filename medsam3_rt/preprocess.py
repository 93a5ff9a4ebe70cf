"""Image arrays -> the backbone's `pixel_values`.

Input rules (docs/segment.md states them too):

* arrays are H x W (grayscale) or H x W x C with C in {1, 3, 4}; 3 channels are **RGB**,
  a 4th (alpha) channel is dropped, grayscale is repeated to 3 channels;
* uint8 images are used as they are (0..255), exactly as transformers' processor sees them;
* any other dtype (uint16, int16 CT in HU, float) is mapped to 0..255 by a **window**
  (lo, hi) when one is given (values clipped to it), otherwise by the image's own
  min..max (a constant image maps to 0); NaN/Inf are rejected;
* then the manifest's resize (stretch, antialiased bilinear) and normalisation apply.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError, UsageError
from .manifest import Preprocess
from .resample import resize, resize_uint8

MIN_SIDE = 2
MAX_PIXELS = 1 << 28  # 268 M pixels (16384^2): beyond that the caller almost certainly passed the wrong array


@dataclass(frozen=True)
class IntensityWindow:
    """Map [low, high] to 0..255; values outside are clipped. CT presets live in `io.medical`."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.low) and np.isfinite(self.high)) or self.high <= self.low:
            raise InputError(f"intensity window needs finite low < high, got ({self.low}, {self.high})")

    @classmethod
    def from_center_width(cls, center: float, width: float) -> IntensityWindow:
        return cls(center - width / 2.0, center + width / 2.0)


# Common CT display windows as (level/centre, width) in Hounsfield units (radiology convention).
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
    "soft-tissue": (50.0, 400.0),
    "abdomen": (50.0, 400.0),
    "liver": (30.0, 150.0),
    "mediastinum": (50.0, 350.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}


def parse_window(text: str) -> IntensityWindow:
    """A CT preset name (see CT_WINDOWS) or "LOW,HIGH" in the image's own units."""
    key = text.strip().lower()
    if key in CT_WINDOWS:
        return IntensityWindow.from_center_width(*CT_WINDOWS[key])
    parts = key.split(",")
    try:
        low, high = (float(v) for v in parts)
    except ValueError:
        raise UsageError(f"--window '{text}' is neither LOW,HIGH (e.g. -1000,400) nor a preset ({', '.join(CT_WINDOWS)})") from None
    try:
        return IntensityWindow(low, high)
    except InputError as e:
        raise UsageError(str(e)) from None


def to_rgb(image: np.ndarray, window: IntensityWindow | None = None) -> tuple[np.ndarray, bool]:
    """Validate an image and return (H x W x 3 array, is_uint8).

    uint8 images stay uint8; others become float32 in 0..255 by the window or min-max rule.
    """
    if not isinstance(image, np.ndarray):
        raise InputError(f"expected a numpy array image, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] in (1, 3, 4):
        arr = image[:, :, :3] if image.shape[2] == 4 else image
    elif image.ndim == 2:
        arr = image[:, :, None]
    else:
        raise InputError(f"image must be H x W or H x W x C with C in 1, 3, 4; got shape {list(image.shape)}")
    h, w = arr.shape[:2]
    if h < MIN_SIDE or w < MIN_SIDE:
        raise InputError(f"image is {h} x {w} pixels; at least {MIN_SIDE} x {MIN_SIDE} is needed")
    if h * w > MAX_PIXELS:
        raise InputError(f"image is {h} x {w} pixels, over the {MAX_PIXELS:,}-pixel limit; downsample it first")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype == np.uint8 and window is None:
        out = arr
        is_uint8 = True
    elif np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating):
        f = arr.astype(np.float32)
        if not np.isfinite(f).all():
            raise InputError("image contains NaN or infinite values")
        if window is not None:
            lo, hi = window.low, window.high
        else:
            lo, hi = float(f.min()), float(f.max())
        f = (np.clip(f, lo, hi) - lo) * np.float32(255.0 / (hi - lo)) if hi > lo else np.zeros_like(f)
        out, is_uint8 = f, False
    else:
        raise InputError(f"image dtype {arr.dtype} is not supported; use uint8, uint16, int16/int32 or float")
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return out, is_uint8


def pixel_values(image: np.ndarray, pre: Preprocess, window: IntensityWindow | None = None) -> np.ndarray:
    """(1, 3, S, S) float32 normalised input of the image backbone."""
    rgb, is_uint8 = to_rgb(image, window)
    size = (pre.image_size, pre.image_size)
    if is_uint8 and pre.antialias:
        resized = resize_uint8(rgb, size).astype(np.float32)
    else:
        resized = resize(rgb, size, antialias=pre.antialias)
    scale = np.asarray(pre.std, np.float32) / np.float32(pre.rescale_factor)
    offset = np.asarray(pre.mean, np.float32) / np.float32(pre.rescale_factor)
    # Same fused form as transformers: (x - mean/rescale) / (std/rescale).
    chw = ((resized - offset) / scale).transpose(2, 0, 1)
    return np.ascontiguousarray(chw[None], dtype=np.float32)
