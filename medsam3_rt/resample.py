"""Separable bilinear resampling in numpy, numerically matching torch's `F.interpolate`.

SAM3's image processor resizes with antialiased bilinear filtering (torchvision -> torch
`interpolate(..., mode="bilinear", antialias=True)`), and transformers' post-processing
upsamples masks with plain bilinear (`align_corners=False`). Both are separable filters,
written here as per-output-pixel tap lists so the runtime needs neither torch nor PIL, and
the C++ library can implement the same weights.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=64)
def taps(in_size: int, out_size: int, antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    idx, w = _taps64(in_size, out_size, antialias)
    return idx, w.astype(np.float32)


@lru_cache(maxsize=64)
def fixed_point_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Antialiased taps as torch's uint8 kernel uses them: int16 weights and their precision.

    torch (like Pillow) scales the float64 weights by 2**p, with p the largest precision
    for which the biggest weight still fits an int16, and rounds half away from zero.
    """
    idx, w = _taps64(in_size, out_size, True)
    w_max = float(w.max())
    precision = 0
    while precision < 22 and int(0.5 + w_max * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    wi = np.trunc(0.5 + w * (1 << precision)).astype(np.int64)
    return idx, wi, precision


def _taps64(in_size: int, out_size: int, antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    """Source indices (out, K) int64 and weights (out, K) float32 for one axis.

    antialias=True follows torch's `_compute_indices_weights_aa` (triangle filter widened by
    the downscale factor, weights normalised); antialias=False is plain bilinear with
    half-pixel centres and edge clamping. When upsampling the two coincide.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"cannot resample {in_size} -> {out_size} pixels")
    scale = in_size / out_size
    i = np.arange(out_size, dtype=np.float64)
    if antialias:
        support = scale if scale >= 1.0 else 1.0
        invscale = 1.0 / scale if scale >= 1.0 else 1.0
        center = scale * (i + 0.5)
        xmin = np.maximum((center - support + 0.5).astype(np.int64), 0)  # astype truncates toward zero, like C
        xmax = np.minimum((center + support + 0.5).astype(np.int64), in_size)
        k = int((xmax - xmin).max())
        idx = xmin[:, None] + np.arange(k)[None, :]
        w = 1.0 - np.abs((idx - center[:, None] + 0.5) * invscale)
        w = np.where((idx < xmax[:, None]) & (w > 0), w, 0.0)
        w /= w.sum(axis=1, keepdims=True)
        idx = np.minimum(idx, in_size - 1)
        return idx, w
    src = np.maximum((i + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(src.astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    l1 = src - i0
    return np.stack([i0, i1], axis=1), np.stack([1.0 - l1, l1], axis=1)


def _resample_axis(x: np.ndarray, axis: int, out_size: int, antialias: bool) -> np.ndarray:
    idx, w = taps(x.shape[axis], out_size, antialias)
    shape = [1] * x.ndim
    shape[axis] = out_size
    out = np.zeros(x.shape[:axis] + (out_size,) + x.shape[axis + 1 :], dtype=np.float32)
    for k in range(idx.shape[1]):
        out += np.take(x, idx[:, k], axis=axis) * w[:, k].reshape(shape)
    return out


def _resample_axis_uint8(x: np.ndarray, axis: int, out_size: int) -> np.ndarray:
    """One antialiased pass in torch's fixed-point arithmetic: uint8 in, uint8 out."""
    idx, w, precision = fixed_point_taps(x.shape[axis], out_size)
    shape = [1] * x.ndim
    shape[axis] = out_size
    acc = np.full((*x.shape[:axis], out_size, *x.shape[axis + 1 :]), 1 << (precision - 1), dtype=np.int64)
    for k in range(idx.shape[1]):
        acc += np.take(x, idx[:, k], axis=axis).astype(np.int64) * w[:, k].reshape(shape)
    return np.clip(acc >> precision, 0, 255).astype(np.uint8)


def resize_uint8(x: np.ndarray, out_hw: tuple[int, int], *, axes: tuple[int, int] = (0, 1)) -> np.ndarray:
    """Antialiased bilinear resize of a uint8 image, bit-exact with torch's uint8 kernel.

    This is what transformers' Sam3ImageProcessor computes for uint8 images (torchvision's
    resize calls torch's `interpolate(..., antialias=True)` on uint8 tensors): the width
    pass first, then the height pass, each rounded to uint8 in int16 fixed point.
    """
    if x.dtype != np.uint8:
        raise ValueError(f"resize_uint8 needs uint8, got {x.dtype}")
    h_axis, w_axis = axes
    y = x
    if y.shape[w_axis] != out_hw[1]:
        y = _resample_axis_uint8(y, w_axis, out_hw[1])
    if y.shape[h_axis] != out_hw[0]:
        y = _resample_axis_uint8(y, h_axis, out_hw[0])
    return y


def resize(
    x: np.ndarray,
    out_hw: tuple[int, int],
    *,
    axes: tuple[int, int] = (0, 1),
    antialias: bool,
) -> np.ndarray:
    """Resize the two spatial `axes` (height, width) of `x` to `out_hw` in float32 (width pass first)."""
    y = x.astype(np.float32, copy=False)
    h_axis, w_axis = axes
    if y.shape[w_axis] != out_hw[1]:
        y = _resample_axis(y, w_axis, out_hw[1], antialias)
    if y.shape[h_axis] != out_hw[0]:
        y = _resample_axis(y, h_axis, out_hw[0], antialias)
    return y
