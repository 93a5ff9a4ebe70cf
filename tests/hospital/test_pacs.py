"""`medsam3-rt pacs` end to end against a real Orthanc + DICOMweb plugin on loopback.

A real MR study (Colin27 T1, dicom_study.py) is stored in Orthanc, pulled back over
QIDO/WADO, segmented by the bundled demo model and stored as DICOM-SEG over STOW; the SEG
that Orthanc returns must pass dciodvfy and carry the labels `segment` writes as NIfTI.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import orthanc_server
import pydicom
import pytest
from conftest import cli
from dicom_study import HAVE_DCIODVFY, PROMPTS, SEGMENT_ARGS, dciodvfy_errors, write_study
from orthanc_server import PASSWORD, REFUSED_PATIENT, USER, OrthancServer, free_port
from pydicom.uid import generate_uid

from medsam3_rt.demo import demo_model_dir

pytest.importorskip("highdicom", reason="the 'dicom' extra is not installed: pip install 'medsam3-rt[dicom]'")
pytest.importorskip("dicomweb_client", reason="the 'dicom' extra is not installed: pip install 'medsam3-rt[dicom]'")

from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass

from medsam3_rt.io.dicom_seg import read_dicom_seg, seg_volume
from medsam3_rt.io.volumes import read_dicom_series

MODEL = demo_model_dir()
orthanc = orthanc_server.orthanc  # the session-scoped Orthanc fixture
PROMPT_ARGS = tuple(a for p in PROMPTS for a in ("-p", p))


def client(server: OrthancServer) -> DICOMwebClient:
    return DICOMwebClient(server.url, session=create_session_from_user_pass(USER, PASSWORD))


def upload(server: OrthancServer, files: list[Path]) -> None:
    client(server).store_instances([pydicom.dcmread(f) for f in files])


def pacs_cli(
    server: OrthancServer, study: str, *extra: str, password: str = PASSWORD, prompts: tuple[str, ...] = PROMPT_ARGS
) -> subprocess.CompletedProcess[str]:
    os.environ["MEDSAM3_RT_PACS_PASSWORD"] = password  # read by the child process
    try:
        return cli("pacs", str(MODEL), server.url, "--study", study, *prompts, *SEGMENT_ARGS, "--user", USER, *extra)
    finally:
        del os.environ["MEDSAM3_RT_PACS_PASSWORD"]


def seg_series(server: OrthancServer, study: str) -> list[dict]:
    return [s for s in client(server).search_for_series(study) if s["00080060"]["Value"][0] == "SEG"]


def test_round_trip_is_valid_equals_nifti_and_idempotent(orthanc: OrthancServer, tmp_path: Path) -> None:
    study = generate_uid()
    series_dirs = write_study(tmp_path / "study", study_uid=study, series=2)
    upload(orthanc, [f for d in series_dirs for f in sorted(d.iterdir())])

    dry = pacs_cli(orthanc, study, "--dry-run")
    assert dry.returncode == 0 and "0 SEG(s) stored, 0 already there, 2 to segment (--dry-run)" in dry.stderr
    assert seg_series(orthanc, study) == []
    out = tmp_path / "out"
    proc = pacs_cli(orthanc, study, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "2 SEG(s) stored, 0 already there" in proc.stderr
    segs = seg_series(orthanc, study)
    assert len(segs) == 2

    # the SEG as the PACS hands it out (WADO-RS) for series 1
    local = read_dicom_series(series_dirs[0], "sagittal")
    source_uid = local.meta["series_uid"]
    record = json.loads((out / f"{source_uid}.json").read_text())
    [stored] = client(orthanc).retrieve_series(study, record["seg_series_uid"])
    seg_file = tmp_path / "from-pacs.seg.dcm"
    stored.save_as(seg_file, enforce_file_format=True)
    assert stored.ReferencedSeriesSequence[0].SeriesInstanceUID == source_uid
    assert [s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in stored.SegmentSequence] == ["66720007", "83251001", "78277001"]
    if HAVE_DCIODVFY:
        assert dciodvfy_errors(seg_file) == []

    # the NIfTI path on the same series: same labels, same geometry
    cli("segment", str(MODEL), str(series_dirs[0]), *PROMPT_ARGS, *SEGMENT_ARGS, "-o", str(tmp_path / "nifti"), check=True)
    img = nib.load(tmp_path / "nifti" / "series1.labels.nii.gz")
    nifti_labels = np.asarray(img.dataobj)
    assert nifti_labels.any()
    assert np.array_equal(read_dicom_seg(seg_file, local).labels, nifti_labels)
    labels, affine = seg_volume(seg_file)
    idx = np.argwhere(labels > 0).T
    vox = np.rint(np.linalg.inv(img.affine) @ affine @ np.vstack([idx, np.ones(idx.shape[1])])).astype(int)[:3]
    assert np.array_equal(nifti_labels[vox[0], vox[1], vox[2]], labels[idx[0], idx[1], idx[2]])
    nifti_ml = {p["prompt"]: p["volume_ml"] for p in json.loads((tmp_path / "nifti" / "series1.json").read_text())["prompts"]}
    assert record["volumes_ml"] == pytest.approx(nifti_ml, abs=1e-3)

    # a rerun stores nothing new; other prompts make a new SEG next to the first
    again = pacs_cli(orthanc, study)
    assert again.returncode == 0 and "0 SEG(s) stored, 2 already there, 2 non-image series skipped" in again.stderr
    assert len(seg_series(orthanc, study)) == 2
    other = pacs_cli(orthanc, study, "--series", source_uid, prompts=("-p", "brain"))
    assert other.returncode == 0 and "1 SEG(s) stored, 0 already there" in other.stderr
    assert len(seg_series(orthanc, study)) == 3


def test_half_stored_study_is_finished_by_a_rerun(orthanc: OrthancServer, tmp_path: Path) -> None:
    study = generate_uid()
    complete, partial = write_study(tmp_path / "study", study_uid=study, series=2)
    files = sorted(partial.iterdir(), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[0]))
    late = files[4]  # a middle slice has not arrived yet
    upload(orthanc, sorted(complete.iterdir()) + [f for f in files if f != late])
    out = tmp_path / "out"
    proc = pacs_cli(orthanc, study, "-o", str(out))
    assert proc.returncode == 3
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 of 2 series not segmented") and "slice spacing is inconsistent" in last
    assert len(seg_series(orthanc, study)) == 1  # the complete series is stored
    partial_uid = pydicom.dcmread(late).SeriesInstanceUID
    assert not (out / f"{partial_uid}.json").exists() and not list(out.glob(".*tmp*"))

    upload(orthanc, [late])  # the missing slice arrives
    proc = pacs_cli(orthanc, study, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "1 SEG(s) stored, 1 already there" in proc.stderr
    assert len(seg_series(orthanc, study)) == 2 and (out / f"{partial_uid}.json").exists()


def test_pacs_errors_are_one_line(orthanc: OrthancServer, tmp_path: Path) -> None:
    study = generate_uid()
    [series] = write_study(tmp_path / "study", study_uid=study, patient_id=REFUSED_PATIENT)
    upload(orthanc, sorted(series.iterdir()))

    def check(proc: subprocess.CompletedProcess[str], code: int, text: str) -> None:
        assert proc.returncode == code, proc.stderr
        assert text in proc.stderr and proc.stderr.strip().splitlines()[-1].startswith("error:"), proc.stderr
        assert "Traceback" not in proc.stderr

    check(pacs_cli(orthanc, study, password="wrong"), 7, "HTTP 401")
    check(pacs_cli(orthanc, generate_uid()), 3, "is not on the PACS")
    check(pacs_cli(orthanc, study, "--series", "1.2.3"), 3, "series 1.2.3 not in study")
    check(cli("pacs", str(MODEL), "ftp://x", "--study", study, "-p", "brain"), 3, "is not a DICOMweb URL")
    closed = f"http://127.0.0.1:{free_port()}/dicom-web"
    check(cli("pacs", str(MODEL), closed, "--study", study, "-p", "brain", "--retries", "0"), 7, "cannot reach the PACS")
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/dicom-web"
        proc = cli("pacs", str(MODEL), url, "--study", study, "-p", "brain", "--timeout", "0.5", "--retries", "0")
        check(proc, 7, "did not answer within 0.5 s")
    # Orthanc's Lua filter drops SEGs of this patient while answering the STOW without a failure
    out = tmp_path / "out"
    check(pacs_cli(orthanc, study, "-o", str(out)), 7, "does not list it afterwards")
    assert seg_series(orthanc, study) == []
    uid = pydicom.dcmread(next(series.iterdir())).SeriesInstanceUID
    assert sorted(p.name for p in out.iterdir()) == [f"{uid}.seg.dcm"]  # whole local SEG, no "stored" record
    pydicom.dcmread(out / f"{uid}.seg.dcm")
