"""Volume and video I/O on real data that installable packages ship (pydicom, nibabel, Debian mricron-data)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pydicom
import pytest

from medsam3_rt.errors import InputError
from medsam3_rt.io.video import probe, read_frames
from medsam3_rt.io.volumes import read_dicom_series, read_nifti, write_label_volume

DICOM_TESTS = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests"
CT_SERIES = DICOM_TESTS / "98892001" / "CT5N"  # 5 real CT slices (16 x 16, downsampled), int16 + rescale
NIB_DATA = Path(nib.__file__).parent / "tests" / "data"
MRICRON_T1 = Path("/usr/share/mricron/templates/ch2.nii.gz")


def test_dicom_series_is_sorted_rescaled_and_placed_in_patient_space() -> None:
    vol = read_dicom_series(CT_SERIES)
    files = [pydicom.dcmread(f) for f in CT_SERIES.iterdir()]
    z = sorted(float(ds.ImagePositionPatient[2]) for ds in files)
    assert vol.shape == (16, 16, 5) and vol.num_slices == 5 and vol.kind == "dicom"
    # slices go along the normal; affine maps voxel (0,0,k) to the k-th position (LPS -> RAS: x, y negated)
    for k in range(5):
        world = vol.affine @ np.array([0, 0, k, 1.0])
        assert world[2] == pytest.approx(z[k], abs=1e-3)
    first = min(files, key=lambda ds: float(ds.ImagePositionPatient[2]))
    expected = first.pixel_array.astype(np.float32) * float(first.RescaleSlope) + float(first.RescaleIntercept)
    np.testing.assert_array_equal(vol.slice(0), expected)  # in Hounsfield units, as the scanner shows the frame
    assert vol.spacing == pytest.approx((0.488281, 0.488281, 2.5), abs=1e-5)
    assert vol.meta["modality"] == "CT"


def test_dicom_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="mixes .* DICOM series"):
        read_dicom_series(DICOM_TESTS / "98892003")  # MR series of one study side by side
    with pytest.raises(InputError, match="orientation changes"):
        read_dicom_series(DICOM_TESTS / "98892003" / "MR700")  # a localizer series, each slice oriented differently
    gap = tmp_path / "gap"
    shutil.copytree(CT_SERIES, gap)
    middle = sorted(gap.iterdir(), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))[2]
    middle.unlink()
    with pytest.raises(InputError, match="missing slices"):
        read_dicom_series(gap)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no DICOM images"):
        read_dicom_series(tmp_path / "empty")
    broken = tmp_path / "broken"
    shutil.copytree(CT_SERIES, broken)
    victim = sorted(broken.iterdir())[0]
    ds = pydicom.dcmread(victim)
    del ds.PixelData
    ds.save_as(victim)
    vol = read_dicom_series(broken)  # headers are fine; the missing pixel data shows when the slice is read
    with pytest.raises(InputError, match="cannot decode pixel data"):
        for k in range(vol.num_slices):
            vol.slice(k)


def test_nifti_slices_and_label_round_trip(tmp_path: Path) -> None:
    src = NIB_DATA / "anatomical.nii"
    img = nib.load(src)
    vol = read_nifti(src, "axial")
    data = np.asarray(img.dataobj, np.float32)
    axis = vol.slice_axis
    assert nib.aff2axcodes(img.affine)[axis] in "SI"
    k = vol.num_slices // 2
    np.testing.assert_array_equal(vol.slice(k), np.rot90(np.take(data, k, axis=axis)))
    labels = np.zeros(vol.shape, np.uint8)
    vol.place((vol.slice(k) > np.median(vol.slice(k))).astype(np.uint8), k, labels)
    out = tmp_path / "labels.nii.gz"
    write_label_volume(out, labels, vol)
    back = nib.load(out)
    np.testing.assert_allclose(back.affine, img.affine, atol=1e-5)
    assert back.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(back.dataobj), labels)
    assert np.array_equal(np.take(labels, k, axis=axis) > 0, np.take(data, k, axis=axis) > np.median(vol.slice(k)))


@pytest.mark.skipif(not MRICRON_T1.exists(), reason="Debian's mricron-data (apt-get install mricron-data) is not installed")
@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
def test_real_t1_planes(plane: str) -> None:
    vol = read_nifti(MRICRON_T1, plane)  # type: ignore[arg-type]
    codes = nib.aff2axcodes(vol.affine)
    assert codes[vol.slice_axis] in {"axial": "SI", "coronal": "AP", "sagittal": "LR"}[plane]
    s = vol.slice(vol.num_slices // 2)
    assert s.ndim == 2 and s.max() > s.min()


def test_nifti_errors(tmp_path: Path) -> None:
    good = (NIB_DATA / "anatomical.nii").read_bytes()
    cases = {
        "empty.nii": b"",
        "garbage.nii": b"\x00" * 400,
        "header-only.nii": good[:352],
    }
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(InputError):
            vol = read_nifti(tmp_path / name)
            for k in range(vol.num_slices):
                vol.slice(k)
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(gzip.compress(good)[:2000])
    with pytest.raises(InputError, match="truncated|not a readable"):
        vol = read_nifti(truncated)
        vol.slice(vol.num_slices - 1)
    arr = np.ones((8, 8, 4), np.float32)
    arr[2, 2, 1] = np.nan
    nib.save(nib.Nifti1Image(arr, np.eye(4)), tmp_path / "nan.nii.gz")
    vol = read_nifti(tmp_path / "nan.nii.gz")
    vol.slice(0)
    with pytest.raises(InputError, match="NaN"):
        vol.slice(1)
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4, 3), np.float32), np.eye(4)), tmp_path / "4d.nii.gz")
    with pytest.raises(InputError, match="4D series"):
        read_nifti(tmp_path / "4d.nii.gz")


def test_video_reading_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 12, (64, 48))
    for i in range(7):
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[:, :, 2] = 200  # red in BGR
        cv2.circle(frame, (8 + 6 * i, 24), 6, (255, 255, 255), -1)
        w.write(frame)
    w.release()
    info = probe(path)
    assert (info.width, info.height, info.frames) == (64, 48, 7) and info.fps == pytest.approx(12)
    frames = list(read_frames(path))
    assert len(frames) == 7 and frames[0][10, 60, 0] > 150  # RGB: red channel first
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        probe(tmp_path / "empty.mp4")
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(InputError, match="cannot open|no decodable frames"):
        probe(tmp_path / "noise.mp4")
