"""A real MR study for the DICOM tests: the demo's Colin27 T1 sample written as DICOM series.

The NIfTI (`medsam3_rt/demo/samples/colin27_sagittal_060-069.nii.gz`, 10 sagittal 1 mm slices
of the Colin27 T1 from Debian's mricron-data) is written with `write_dicom_series`, so the
demo model segments real brain MRI that arrives the way a PACS delivers it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from medsam3_rt.demo import demo_model_dir
from medsam3_rt.io.dicom_series import Patient, write_dicom_series
from medsam3_rt.io.volumes import read_nifti

SAMPLE = demo_model_dir().parent / "samples" / "colin27_sagittal_060-069.nii.gz"
# how the demo model segments the sample (medsam3_rt/demo/samples/samples.json)
SEGMENT_ARGS = ("--axis", "sagittal", "--window", "0,255", "--detection-threshold", "0")
PROMPTS = ("lateral ventricle", "frontal lobe", "temporal lobe")


def write_study(folder: Path, *, study_uid: str, patient_id: str = "MEDSAM3-0001", series: int = 1) -> list[Path]:
    """`series` MR series of the sample in one study, as folders `folder/series<n>`."""
    vol = read_nifti(SAMPLE, "sagittal")
    patient = Patient(id=patient_id, study_uid=study_uid, study_description="Colin27 T1 (medsam3-rt test study)")
    out = []
    for n in range(1, series + 1):
        write_dicom_series(vol, folder / f"series{n}", patient=patient, series_description=f"T1 sagittal {n}", series_number=n)
        out.append(folder / f"series{n}")
    return out


def dciodvfy_errors(path: Path) -> list[str]:
    """The `Error` lines dciodvfy (Debian dicom3tools) reports for a file."""
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]


HAVE_DCIODVFY = shutil.which("dciodvfy") is not None
NO_DCIODVFY = "dciodvfy (Debian dicom3tools: apt-get install dicom3tools) is not installed"
