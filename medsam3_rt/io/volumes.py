"""3D volumes as sequences of 2D slices: NIfTI (nibabel) and DICOM series (pydicom).

Slices are read lazily, one at a time, so a large CT never has to fit in memory. A
`Volume` knows its voxel-to-patient affine (RAS, NIfTI convention), so label volumes are
written back on exactly the input's grid.
"""

from __future__ import annotations

import logging
import os
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)

Axis = Literal["axial", "coronal", "sagittal"]
AXES: tuple[Axis, ...] = ("axial", "coronal", "sagittal")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
# anatomical letters of each slicing plane's normal, in RAS terms
_PLANE_CODES = {"axial": "SI", "coronal": "AP", "sagittal": "LR"}


def is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and name.endswith(NIFTI_SUFFIXES)


@dataclass
class Volume:
    """A 3D image read slice by slice along `slice_axis` (a voxel axis: 0, 1 or 2).

    Slices are handed out the way viewers display them: DICOM axial frames as stored
    (rows x columns), everything else rotated 90 degrees from voxel order (`np.rot90`, the
    usual display of RAS-oriented NIfTI). `place` undoes that when labels are written back.
    """

    source: Path
    shape: tuple[int, int, int]  # voxel grid, i-j-k order as stored
    affine: np.ndarray  # (4, 4) voxel -> RAS millimetres
    slice_axis: int
    kind: str  # "nifti" | "dicom"
    _reader: Callable[[int], np.ndarray] = field(repr=False)  # voxel-order 2D slice
    display: Literal["rot90", "transpose", "identity"] = "rot90"
    header: Any = field(default=None, repr=False)  # nibabel header, to write labels with the same metadata
    meta: dict[str, Any] = field(default_factory=dict)
    files: tuple[Path, ...] = ()  # DICOM: the series' files in slice order (voxel k = files[k]), for DICOM-SEG references

    @property
    def num_slices(self) -> int:
        return self.shape[self.slice_axis]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the three voxel axes."""
        return tuple(float(v) for v in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]

    @property
    def voxel_ml(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    def slice(self, index: int) -> np.ndarray:
        """2D float32 slice `index` in display orientation; NaN/Inf are rejected."""
        if not 0 <= index < self.num_slices:
            raise IndexError(index)
        arr = self._reader(index)
        if not np.isfinite(arr).all():
            raise InputError(f"{self.source}: slice {index} contains NaN or infinite values")
        return np.ascontiguousarray(self.to_display(arr))

    def to_display(self, arr: np.ndarray) -> np.ndarray:
        """Voxel order of a slice -> display orientation."""
        if self.display == "transpose":
            return arr.T
        return arr if self.display == "identity" else np.rot90(arr)

    def from_display(self, labels: np.ndarray) -> np.ndarray:
        """Display orientation -> voxel order of the slice (inverse of what `slice` applies)."""
        if self.display == "transpose":
            return labels.T
        return labels if self.display == "identity" else np.rot90(labels, -1)

    def slices(self) -> Iterator[np.ndarray]:
        for i in range(self.num_slices):
            yield self.slice(i)

    def place(self, labels: np.ndarray, index: int, out: np.ndarray) -> None:
        """Write one display-oriented slice of labels into a volume array of `shape`."""
        idx: list[Any] = [slice(None)] * 3
        idx[self.slice_axis] = index
        out[tuple(idx)] = self.from_display(labels)


def slice_axis_for(affine: np.ndarray, axis: Axis) -> int:
    """The voxel axis whose direction is closest to the plane's normal (via nibabel's axcodes)."""
    import nibabel as nib

    codes = nib.aff2axcodes(affine)
    for i, code in enumerate(codes):
        if code is not None and code in _PLANE_CODES[axis]:  # None: nibabel finds no direction for that axis
            return i
    raise InputError(f"cannot tell which voxel axis is {axis} from the orientation {codes}")


def read_nifti(path: str | os.PathLike[str], axis: Axis = "axial") -> Volume:
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = nib.load(str(p))
            shape = tuple(int(s) for s in img.shape)
    except (ImageFileError, nib.spatialimages.HeaderDataError, EOFError, OSError, zlib.error, ValueError) as e:
        raise InputError(f"{p}: not a readable NIfTI file ({e})") from None
    if not shape or min(shape) < 1:
        raise InputError(f"{p}: the header declares invalid dimensions {list(shape)} (every dimension must be >= 1)")
    while len(shape) > 3 and shape[-1] == 1:  # dim[0] up to 7 with trailing singleton dimensions
        shape = shape[:-1]
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) != 3:
        raise InputError(f"{p}: expected a 3D volume, got shape {list(img.shape)} (4D series are not supported)")
    affine = img.affine if img.affine is not None else np.eye(4)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(f"{p}: the header's voxel-to-world transform is invalid (singular or non-finite)")
    try:
        axis_index = slice_axis_for(affine, axis)
    except InputError as e:
        raise InputError(f"{p}: {e.message}; the header's voxel-to-world transform is degenerate") from None
    proxy = img.dataobj
    ndim = len(img.shape)

    def read(k: int) -> np.ndarray:
        idx: list[Any] = [slice(None)] * ndim
        if ndim == 2:
            return np.asarray(proxy, dtype=np.float32)
        idx[axis_index] = k
        for extra in range(3, ndim):  # trailing singleton dimensions
            idx[extra] = 0
        try:
            return np.asarray(proxy[tuple(idx)], dtype=np.float32)
        except (EOFError, OSError, zlib.error, ValueError) as e:
            raise InputError(f"{p}: cannot read slice {k}: the file is truncated or corrupt ({e})") from None
        except TypeError as e:  # e.g. RGB24 or complex voxels
            raise InputError(f"{p}: voxel type {img.get_data_dtype()} is not supported ({e})") from None

    return Volume(p, shape, np.asarray(affine, np.float64), axis_index, "nifti", read, header=img.header)


def _dicom():
    import pydicom

    return pydicom


def read_dicom_series(folder: str | os.PathLike[str], axis: Axis = "axial", series_uid: str | None = None) -> Volume:
    """One DICOM series from a folder: sorted along the slice normal, rescaled to stored units (HU for CT)."""
    pydicom = _dicom()
    from pydicom.errors import InvalidDicomError

    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    headers = []
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception as e:  # pydicom raises many types for damaged headers
            if not isinstance(e, InvalidDicomError) and _has_dicom_preamble(f):
                # a DICOM file that cannot be read would otherwise silently drop a slice
                why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                raise InputError(f"{f}: a DICOM file whose header cannot be read ({why})") from None
            continue  # not DICOM (README, DICOMDIR payload, thumbnails): skipped
        if _has_dicom_preamble(f) and "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
            # "DICM" promises a file meta group; without it the header is damaged, not foreign
            raise InputError(f"{f}: a DICOM file whose header cannot be read (no file meta information after the DICM marker)")
        if "SeriesInstanceUID" in ds and "ImagePositionPatient" in ds:
            headers.append((f, ds))
    if not headers:
        raise InputError(f"{root}: no DICOM images with patient geometry (ImagePositionPatient) found")
    series: dict[str, list] = {}
    for f, ds in headers:
        series.setdefault(str(ds.SeriesInstanceUID), []).append((f, ds))
    if series_uid is not None:
        if series_uid not in series:
            raise InputError(f"{root}: series {series_uid} not found (has: {', '.join(series)})")
        chosen = series[series_uid]
    elif len(series) > 1:
        summary = "; ".join(f"{uid} ({len(v)} images)" for uid, v in series.items())
        raise InputError(f"{root}: the folder mixes {len(series)} DICOM series ({summary}); pass one series folder or --series UID")
    else:
        chosen = next(iter(series.values()))
    return _build_dicom_volume(root, chosen, axis)


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _geometry(f: Path, ds: Any) -> tuple[np.ndarray, np.ndarray, list[float], int, int]:
    """(orientation (6,), position (3,), pixel spacing, rows, columns) of one file, validated."""
    try:
        orient = np.array([float(v) for v in ds.ImageOrientationPatient], np.float64)
        pos = np.array([float(v) for v in ds.ImagePositionPatient], np.float64)
        spacing = [float(v) for v in ds.PixelSpacing]
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, ValueError, TypeError, KeyError) as e:
        raise InputError(f"{f}: DICOM geometry tags are missing or invalid ({e})") from None
    if orient.shape != (6,) or pos.shape != (3,) or len(spacing) != 2 or not (np.isfinite(orient).all() and np.isfinite(pos).all()):
        raise InputError(f"{f}: DICOM geometry tags have the wrong number of values or are not finite")
    if min(spacing) <= 0 or not np.isfinite(spacing).all() or rows < 1 or cols < 1:
        raise InputError(f"{f}: DICOM PixelSpacing {spacing} or size {rows}x{cols} is invalid")
    if np.linalg.norm(np.cross(orient[:3], orient[3:])) < 1e-3:
        raise InputError(f"{f}: DICOM ImageOrientationPatient {list(orient)} does not span a plane")
    return orient, pos, spacing, rows, cols


def _build_dicom_volume(root: Path, items: list, axis: Axis) -> Volume:
    first = items[0][1]
    orient, _, spacing, rows, cols = _geometry(items[0][0], first)
    row_dir, col_dir = orient[:3], orient[3:]
    normal = np.cross(row_dir, col_dir)
    positions = []
    for f, ds in items:
        o, position, _, r, c = _geometry(f, ds)
        if not np.allclose(o, orient, atol=1e-3):
            raise InputError(f"{root}: slice orientation changes within the series ({f.name}); it is not one volume")
        if (r, c) != (rows, cols):
            raise InputError(f"{root}: {f.name} is {r}x{c}, other slices {rows}x{cols}; it is not one volume")
        positions.append(position)
    pos = np.array(positions)
    order = np.argsort(pos @ normal, kind="stable")
    items = [items[i] for i in order]
    dist = (pos @ normal)[order]
    gaps = np.diff(dist)
    if len(gaps) and (np.abs(gaps) < 1e-4).any():
        raise InputError(f"{root}: two slices share a position; duplicate images or several acquisitions in one series")
    if len(gaps) and (np.abs(gaps - np.median(gaps)) > 0.1 * abs(np.median(gaps)) + 1e-3).any():
        raise InputError(f"{root}: slice spacing is inconsistent (from {gaps.min():.3g} to {gaps.max():.3g} mm): missing slices?")
    step = float(np.median(gaps)) if len(gaps) else float(first.get("SliceThickness", 1.0) or 1.0)
    # voxel (i=column, j=row, k=slice) -> LPS, then LPS -> RAS (NIfTI) by flipping x and y
    lps = np.eye(4)
    lps[:3, 0] = row_dir * spacing[1]
    lps[:3, 1] = col_dir * spacing[0]
    lps[:3, 2] = normal * step
    lps[:3, 3] = pos[order][0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    shape = (cols, rows, len(items))
    files = [f for f, _ in items]
    try:
        axis_index = slice_axis_for(affine, axis)
    except InputError as e:
        raise InputError(f"{root}: {e.message}; check ImageOrientationPatient and PixelSpacing") from None
    pydicom = _dicom()
    cache: dict[int, np.ndarray] = {}

    def pixels(k: int) -> np.ndarray:
        """(cols, rows) rescaled slice k, i.e. voxel order i, j."""
        if k not in cache:
            ds = None
            try:
                ds = pydicom.dcmread(files[k])
                arr = ds.pixel_array.astype(np.float32)
            except Exception as e:  # pydicom raises many types for missing handlers / bad data
                why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
                syntax = f"transfer syntax {ts.name} ({ts}): " if ts is not None else ""
                raise InputError(f"{files[k]}: cannot decode pixel data ({syntax}{why})") from None
            if arr.ndim != 2:
                raise InputError(f"{files[k]}: expected one grayscale frame per file, got shape {list(arr.shape)}")
            slope, inter = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
            cache.clear()  # keep at most one decoded slice: volumes are read slice by slice
            cache[k] = (arr * slope + inter).T
        return cache[k]

    def read(index: int) -> np.ndarray:
        if axis_index == 2:
            return pixels(index)
        # through-plane views assemble one line from every file (slow but lazy)
        lines = [pixels(k)[index, :] if axis_index == 0 else pixels(k)[:, index] for k in range(len(files))]
        return np.stack(lines, axis=1)

    meta = {
        "modality": str(first.get("Modality", "")),
        "series_uid": str(first.SeriesInstanceUID),
        "series_description": str(first.get("SeriesDescription", "")),
        "num_files": len(files),
    }
    display = "transpose" if axis_index == 2 else "rot90"  # axial DICOM frames as the scanner stored them
    return Volume(root, shape, affine, axis_index, "dicom", read, display=display, meta=meta, files=tuple(files))


def write_label_volume(path: str | os.PathLike[str], labels: np.ndarray, volume: Volume) -> None:
    """Write a uint8 label volume on the input's grid (affine; NIfTI header fields kept) atomically."""
    import nibabel as nib

    from .atomic import atomic_path

    if volume.header is not None:
        header = volume.header.copy()
        header.set_data_dtype(np.uint8)
        header.set_slope_inter(1.0, 0.0)
        img = nib.Nifti1Image(labels.astype(np.uint8), volume.affine, header)
    else:
        img = nib.Nifti1Image(labels.astype(np.uint8), volume.affine)
    img.header["descrip"] = b"medsam3-rt labels (research use only)"
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
