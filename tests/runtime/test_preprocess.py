"""Preprocessing: input rules, and equality with transformers' Sam3 image processor.

transformers' `Sam3ImageProcessor` needs torchvision, which cannot be installed beside the
CPU torch build these machines use (PyPI's torchvision fails with "operator torchvision::nms
does not exist"). Its computation for a uint8 RGB image is torchvision's resize (which, for
uint8 CPU tensors, is torch's `interpolate(bilinear, antialias=True)`), then
(x - 127.5) / 127.5. `test_matches_processor_math` checks exactly that chain in torch;
`test_matches_real_processor` runs the real processor wherever torchvision imports.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import phantom

from medsam3_rt.errors import InputError, UsageError
from medsam3_rt.manifest import Preprocess
from medsam3_rt.preprocess import CT_WINDOWS, IntensityWindow, parse_window, pixel_values, to_rgb

PRE = Preprocess(image_size=224)


def _reference(img: np.ndarray, size: int = 224) -> np.ndarray:
    rgb = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img
    t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].contiguous()
    t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False).float()
    return ((t - 127.5) / 127.5).numpy()


@pytest.mark.parametrize("shape", [(300, 200, 3), (180, 240), (97, 131, 3), (224, 224, 3), (1200, 900, 3)])
def test_matches_processor_math(shape) -> None:
    img = phantom(shape[0], shape[1], channels=3 if len(shape) == 3 else 1)
    got = pixel_values(img, PRE)
    ref = _reference(img)
    assert got.shape == (1, 3, 224, 224) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)  # bit-exact resize, same normalisation


def test_matches_real_processor() -> None:
    try:
        from transformers import Sam3ImageProcessor

        proc = Sam3ImageProcessor(size={"height": 224, "width": 224})
    except ImportError as e:  # torchvision missing (the CPU torch build here cannot have it)
        pytest.skip(f"transformers' Sam3ImageProcessor needs torchvision, not importable here: {' '.join(str(e).split())[:120]}")
    img = phantom(300, 200)
    ref = proc(images=img, return_tensors="pt")["pixel_values"].numpy()
    np.testing.assert_allclose(pixel_values(img, PRE), ref, rtol=0, atol=1e-6)


def test_uint16_and_float_use_min_max_unless_windowed() -> None:
    img16 = phantom(120, 100, channels=1, dtype=np.uint16)
    rgb, is_u8 = to_rgb(img16)
    assert not is_u8 and rgb.shape == (120, 100, 3)
    assert rgb.min() == 0 and abs(rgb.max() - 255) < 1e-3
    ct = phantom(64, 64, channels=1, dtype=np.float32)
    win = IntensityWindow.from_center_width(40, 400)  # -160..240 HU
    rgb, _ = to_rgb(ct, win)
    expected = (np.clip(ct, -160, 240) + 160) * (255 / 400)
    np.testing.assert_allclose(rgb[..., 0], expected, rtol=1e-5, atol=1e-3)


def test_uint8_with_window_and_constant_images() -> None:
    flat = np.full((10, 10), 7, np.uint16)
    rgb, _ = to_rgb(flat)
    assert (rgb == 0).all()
    u8 = np.arange(100, dtype=np.uint8).reshape(10, 10)
    rgb, is_u8 = to_rgb(u8, IntensityWindow(0, 50))
    assert not is_u8 and rgb.max() == 255 and rgb[0, 0, 0] == 0


def test_channel_rules() -> None:
    rgba = np.zeros((8, 9, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 17
    rgb, _ = to_rgb(rgba)
    assert rgb.shape == (8, 9, 3) and (rgb[..., 0] == 200).all()
    one = np.full((8, 9, 1), 3, np.uint8)
    assert to_rgb(one)[0].shape == (8, 9, 3)
    boolean = np.eye(5, dtype=bool)
    assert to_rgb(boolean)[0].max() == 255


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((5, 5, 2), np.uint8), "H x W or H x W x C"),
        (np.zeros((2, 3, 4, 5), np.uint8), "H x W or H x W x C"),
        (np.zeros((1, 50), np.uint8), "at least 2 x 2"),
        (np.array([[np.nan, 1.0], [2.0, 3.0]]), "NaN or infinite"),
        (np.array([[np.inf, 1.0], [2.0, 3.0]], np.float32), "NaN or infinite"),
        (np.zeros((4, 4), np.complex64), "dtype complex64 is not supported"),
        ([[1, 2], [3, 4]], "numpy array"),
    ],
)
def test_bad_arrays_are_input_errors(image, message: str) -> None:
    with pytest.raises(InputError, match=message):
        to_rgb(image)


def test_too_large_is_refused_without_allocating() -> None:
    big = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), shape=(30000, 30000), strides=(0, 0))
    with pytest.raises(InputError, match="pixel limit"):
        to_rgb(big)


def test_window_parsing() -> None:
    assert parse_window("lung") == IntensityWindow.from_center_width(*CT_WINDOWS["lung"])
    assert parse_window("-1000, 400") == IntensityWindow(-1000, 400)
    for bad in ("foo", "1,2,3", "5,5"):
        with pytest.raises(UsageError):
            parse_window(bad)
