"""The numpy resampler vs torch's F.interpolate, which transformers' SAM3 processing calls."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medsam3_rt.resample import resize, resize_uint8, taps

SIZES = [
    ((512, 384), (224, 224)),
    ((100, 80), (224, 224)),
    ((301, 299), (224, 224)),
    ((64, 64), (288, 288)),
    ((288, 288), (100, 150)),
    ((288, 288), (1000, 700)),
    ((7, 5), (3, 2)),
]


def _torch(x: np.ndarray, out: tuple[int, int], antialias: bool) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None]
    return F.interpolate(t, size=out, mode="bilinear", antialias=antialias, align_corners=False)[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize(("src", "dst"), SIZES)
@pytest.mark.parametrize("antialias", [True, False])
def test_float_resize_matches_torch(src, dst, antialias: bool) -> None:
    x = np.random.default_rng(0).random((*src, 3)).astype(np.float32) * 255
    got = resize(x, dst, antialias=antialias)
    ref = _torch(x, dst, antialias)
    assert np.abs(got - ref).max() < 2e-4 * 255


@pytest.mark.parametrize(("src", "dst"), [*SIZES[:6], ((224, 300), (224, 224)), ((300, 224), (224, 224)), ((2000, 1500), (1008, 1008))])
def test_uint8_resize_is_bit_exact_with_torch_uint8_kernel(src, dst) -> None:
    x = (np.random.default_rng(1).random((*src, 3)) * 255).astype(np.uint8)
    got = resize_uint8(x, dst)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, _torch(x, dst, True))


def test_taps_are_normalised_and_in_range() -> None:
    for n_in, n_out in [(10, 3), (3, 10), (1008, 224), (1, 5)]:
        for aa in (True, False):
            idx, w = taps(n_in, n_out, aa)
            assert idx.min() >= 0 and idx.max() < n_in
            np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)


def test_resize_rejects_empty_axes() -> None:
    with pytest.raises(ValueError):
        taps(0, 4, True)
