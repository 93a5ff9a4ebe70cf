"""Write a volume (e.g. a NIfTI) as a DICOM MR or CT series, one file per slice.

Why: research data arrives as NIfTI, a PACS only takes DICOM. Each slice is written in the
orientation `Volume.slice` displays it, with ImagePositionPatient / ImageOrientationPatient
/ PixelSpacing computed from the volume's affine, so `read_dicom_series` of the result puts
every voxel at the same patient-space position as the source.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._version import __version__
from ..errors import InputError, OutputExistsError
from .atomic import atomic_directory
from .volumes import Volume

_SOP_CLASS = {"MR": "1.2.840.10008.5.1.4.1.1.4", "CT": "1.2.840.10008.5.1.4.1.1.2"}


@dataclass(frozen=True)
class Patient:
    """Who and which study the series belongs to (anonymous defaults)."""

    name: str = "Anonymous^Patient"
    id: str = "MEDSAM3-0001"
    birth_date: str = ""
    sex: str = "O"
    study_uid: str | None = None  # new one if None
    study_description: str = ""
    accession_number: str = ""


def _display_corner_voxels(volume: Volume, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel indices of display pixels (0,0), (0,1), (1,0) of slice k."""
    dims = [d for a, d in enumerate(volume.shape) if a != volume.slice_axis]
    grids = np.meshgrid(np.arange(dims[0]), np.arange(dims[1]), indexing="ij")
    shown = [volume.to_display(g) for g in grids]  # the voxel index each display pixel shows

    def voxel(r: int, c: int) -> np.ndarray:
        v = [0.0, 0.0, 0.0]
        others = [a for a in range(3) if a != volume.slice_axis]
        v[others[0]], v[others[1]] = float(shown[0][r, c]), float(shown[1][r, c])
        v[volume.slice_axis] = float(k)
        return np.array([*v, 1.0])

    return voxel(0, 0), voxel(0, 1), voxel(1, 0)


def write_dicom_series(
    volume: Volume,
    folder: str | os.PathLike[str],
    *,
    modality: str = "MR",
    patient: Patient | None = None,
    series_description: str = "",
    series_number: int = 1,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write `volume` slice by slice (along its slicing axis) as a DICOM series in `folder` (atomically)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    if modality not in _SOP_CLASS:
        raise InputError(f"modality {modality!r} is not supported (MR or CT)")
    if min(volume.shape) < 1:
        raise InputError(f"{volume.source}: empty volume {list(volume.shape)}")
    target = Path(folder)
    if target.exists() and not overwrite:
        raise OutputExistsError(f"{target} exists; pass overwrite=True to replace it")
    patient = patient or Patient()
    slices = [volume.slice(k) for k in range(volume.num_slices)]
    lo, hi = float(min(s.min() for s in slices)), float(max(s.max() for s in slices))
    integral = all(np.array_equal(s, np.round(s)) for s in slices)
    if integral and lo >= -32768 and hi <= 32767:
        slope, intercept = 1.0, 0.0
    else:  # floats (or a range int16 cannot hold): scale into int16 and record the mapping
        slope = (hi - lo) / 65535.0 if hi > lo else 1.0
        intercept = lo + 32768.0 * slope
    study_uid = patient.study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    for_uid = frame_of_reference_uid or generate_uid()
    now = _dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ras_to_lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    written: list[Path] = []
    with atomic_directory(target, overwrite=overwrite) as staging:
        for k, pixels in enumerate(slices):
            p00, p01, p10 = ((ras_to_lps @ volume.affine @ v)[:3] for v in _display_corner_voxels(volume, k))
            row_step, col_step = p01 - p00, p10 - p00  # along a row (next column), down a column (next row)
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = _SOP_CLASS[modality]
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            name = f"{k + 1:04d}.dcm"
            ds = FileDataset(name, {}, file_meta=meta, preamble=b"\0" * 128)
            ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
            ds.SpecificCharacterSet = "ISO_IR 192"
            ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient.name, patient.id, patient.birth_date, patient.sex
            ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime, ds.StudyID = study_uid, date, time, "1"
            ds.StudyDescription, ds.AccessionNumber, ds.ReferringPhysicianName = patient.study_description, patient.accession_number, ""
            ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = modality, series_uid, series_number
            ds.SeriesDescription, ds.SeriesDate, ds.SeriesTime = series_description, date, time
            ds.Laterality, ds.PatientPosition = "", "HFS"  # unpaired structure; head first supine (a convention, not measured)
            ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = for_uid, ""
            ds.Manufacturer = "medsam3-rt"
            ds.SoftwareVersions = f"medsam3-rt {__version__} (written from {volume.source.name})"
            ds.InstanceNumber, ds.ContentDate, ds.ContentTime = k + 1, date, time
            ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
            ds.ImagePositionPatient = [round(float(v), 6) for v in p00]
            ds.ImageOrientationPatient = [
                round(float(v), 8) for v in (*row_step / np.linalg.norm(row_step), *col_step / np.linalg.norm(col_step))
            ]
            ds.PixelSpacing = [round(float(np.linalg.norm(col_step)), 8), round(float(np.linalg.norm(row_step)), 8)]
            normal_step = np.linalg.norm((ras_to_lps @ volume.affine)[:3, volume.slice_axis])
            ds.SliceThickness = round(float(normal_step), 8)
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            if modality == "CT" or (slope, intercept) != (1.0, 0.0):  # MR integers need no rescale
                ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.10g}", f"{intercept:.10g}"
            if modality == "MR":
                ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "RM", "NONE", "", "3D"
                ds.EchoTime, ds.RepetitionTime, ds.EchoTrainLength = "", "", ""
            else:
                ds.KVP, ds.AcquisitionNumber, ds.RescaleType = "", "", "HU"
            stored = np.round((pixels.astype(np.float64) - intercept) / slope).clip(-32768, 32767).astype("<i2")
            ds.PixelData = stored.tobytes()
            path = staging / name
            pydicom.dcmwrite(path, ds, enforce_file_format=True)
            written.append(target / name)
    return written
