"""2D image files (PNG, JPEG, BMP, TIFF; 8/16-bit; grayscale or colour) via OpenCV.

OpenCV decodes a truncated JPEG or PNG into a partly grey image with only a warning on
stderr, so the container trailers are checked first: a file that was cut off is an error,
never a silently half-black input. libjpeg decodes corrupt entropy data into a partly
grey image and only warns ("Corrupt JPEG data: ..."): the warning is captured and is an
error too. The pixel count a header declares is checked before anything is decoded, so a
small file claiming 30000 x 30000 pixels never allocates gigabytes.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError
from ..preprocess import MAX_PIXELS
from ._native import native_stderr, reason

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
    elif suffix in (".tif", ".tiff"):
        # OpenCV picks the decoder from the content: a .tif must really be a TIFF
        if data[:4] not in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
            raise InputError(f"{path}: not a TIFF file (bad signature)")
    elif suffix == ".bmp" and not data.startswith(b"BM"):
        raise InputError(f"{path}: not a BMP file (bad signature)")


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """H x W (grayscale) or H x W x 3 (**RGB**) array, uint8, uint16, int16 or float32 as stored."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if not p.is_file():
        raise InputError(f"{p}: not a file")
    data = p.read_bytes()
    _check_container(p, data)
    size = declared_size(data)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise InputError(f"{p}: the image is {size[1]} x {size[0]} pixels, over the {MAX_PIXELS:,}-pixel limit; downsample it first")
    with native_stderr() as messages:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    why = reason(messages)
    if image is None or image.size == 0:
        raise InputError(f"{p}: cannot decode the image ({why or 'corrupt, or not PNG/JPEG/BMP/TIFF'})")
    if "Corrupt JPEG data" in why or "Premature end of JPEG" in why:
        raise InputError(f"{p}: the JPEG data is corrupt ({why})")
    if image.ndim == 3:
        if image.shape[2] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
        elif image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        elif image.shape[2] == 1:
            image = image[:, :, 0]
        else:
            raise InputError(f"{p}: {image.shape[2]}-channel images are not supported")
    if image.dtype not in (np.uint8, np.uint16, np.int16, np.float32):  # int16: CT slices in HU
        raise InputError(f"{p}: pixel type {image.dtype} is not supported (8/16-bit integer or 32-bit float)")
    return image


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, BMP or TIFF header without decoding; None if not found."""
    try:
        if data.startswith(_PNG_SIGNATURE) and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if data.startswith(b"BM") and len(data) >= 26:
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)
        if data.startswith(b"\xff\xd8"):
            i = 2
            while i + 9 <= len(data):
                if data[i] != 0xFF:  # libjpeg skips stray bytes up to the next marker, and so do we
                    i = data.find(b"\xff", i)
                    if i < 0:
                        return None
                    continue
                marker = data[i + 1]
                if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                    i += 1 if marker == 0xFF else 2
                    continue
                if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                    h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                    return w, h
                if marker == 0xDA:  # scan data: no frame header before it
                    return None
                i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
            return None
        if data[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
            order = "<" if data[:2] == b"II" else ">"
            big = data[2:4] in (b"+\0", b"\0+")  # BigTIFF: 8-byte offsets and counts, 20-byte entries
            (ifd,) = struct.unpack(order + ("Q" if big else "I"), data[8:16] if big else data[4:8])
            (count,) = struct.unpack(order + ("Q" if big else "H"), data[ifd : ifd + (8 if big else 2)])
            first, width = ifd + (8 if big else 2), 20 if big else 12
            dims: dict[int, int] = {}
            for k in range(min(count, 4096)):
                entry = data[first + width * k : first + width * (k + 1)]
                tag, kind = struct.unpack(order + "HH", entry[:4])
                if tag in (256, 257):
                    raw = entry[12:] if big else entry[8:]
                    code = {3: "H", 4: "I", 16: "Q"}.get(kind, "I")
                    dims[tag] = struct.unpack(order + code, raw[: struct.calcsize(code)])[0]
            return (dims[256], dims[257]) if len(dims) == 2 else None
    except (struct.error, IndexError):
        return None
    return None


def list_images(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if is_image_file(f))


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write an RGB or single-channel image as PNG (the caller makes it atomic)."""
    arr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    if not cv2.imwrite(str(path), arr):
        raise OSError(f"cannot write {path}")
