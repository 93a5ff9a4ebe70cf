"""2D image files (PNG, JPEG, BMP, TIFF; 8/16-bit; grayscale or colour) via OpenCV.

OpenCV decodes a truncated JPEG or PNG into a partly grey image with only a warning on
stderr, so the container trailers are checked first: a file that was cut off is an error,
never a silently half-black input.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xaeB`\x82"


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def _check_container(path: Path, data: bytes) -> None:
    suffix = path.suffix.lower()
    if not data:
        raise InputError(f"{path}: file is empty (0 bytes)")
    if suffix == ".png":
        if not data.startswith(_PNG_SIGNATURE):
            raise InputError(f"{path}: not a PNG file (bad signature)")
        if _PNG_IEND not in data[-64:]:
            raise InputError(f"{path}: PNG is truncated (no IEND chunk at the end)")
    elif suffix in (".jpg", ".jpeg"):
        if not data.startswith(b"\xff\xd8"):
            raise InputError(f"{path}: not a JPEG file (bad signature)")
        if b"\xff\xd9" not in data[-1024:].rstrip(b"\0"):
            raise InputError(f"{path}: JPEG is truncated (no end-of-image marker)")


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """H x W (grayscale) or H x W x 3 (**RGB**) array, uint8 or uint16 as stored."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if not p.is_file():
        raise InputError(f"{p}: not a file")
    data = p.read_bytes()
    _check_container(p, data)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise InputError(f"{p}: cannot decode the image (corrupt, or not PNG/JPEG/BMP/TIFF)")
    if image.ndim == 3:
        if image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
        elif image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        elif image.shape[2] == 1:
            image = image[:, :, 0]
        else:
            raise InputError(f"{p}: {image.shape[2]}-channel images are not supported")
    if image.dtype not in (np.uint8, np.uint16, np.float32):
        raise InputError(f"{p}: pixel type {image.dtype} is not supported (8/16-bit integer or 32-bit float)")
    return image


def list_images(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if is_image_file(f))


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write an RGB or single-channel image as PNG (the caller makes it atomic)."""
    arr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    if not cv2.imwrite(str(path), arr):
        raise OSError(f"cannot write {path}")
