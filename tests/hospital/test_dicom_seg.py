"""DICOM-SEG output: coded concepts, validity (dciodvfy), read back with highdicom and pydicom.

The study is real brain MRI (Colin27 T1, see dicom_study.py) segmented by the bundled demo
model; the SEG must carry the same labels on the same patient-space grid as the NIfTI output.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import cli
from dicom_study import HAVE_DCIODVFY, NO_DCIODVFY, PROMPTS, SAMPLE, SEGMENT_ARGS, dciodvfy_errors, write_study
from pydicom.uid import generate_uid

from medsam3_rt.demo import demo_model_dir
from medsam3_rt.errors import InputError, UsageError
from medsam3_rt.io.seg_codes import BUILTIN, PRIVATE_SCHEME, ConceptMap, builtin_concept, free_text_concept, load_concepts
from medsam3_rt.io.volumes import read_dicom_series, read_nifti

hd = pytest.importorskip("highdicom", reason="the 'dicom' extra (highdicom) is not installed: pip install 'medsam3-rt[dicom]'")

from medsam3_rt.io.dicom_seg import SegProvenance, build_dicom_seg, read_dicom_seg, seg_volume, write_dicom_seg  # noqa: E402

MODEL = demo_model_dir()


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_study(tmp_path_factory.mktemp("study"), study_uid=generate_uid())[0]


@pytest.fixture(scope="module")
def both_formats(study: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same DICOM series through `segment` twice: NIfTI labels and DICOM-SEG."""
    out = tmp_path_factory.mktemp("out")
    prompts = [a for p in PROMPTS for a in ("-p", p)]
    cli("segment", str(MODEL), str(study), *prompts, *SEGMENT_ARGS, "-o", str(out / "nifti"), check=True)
    cli("segment", str(MODEL), str(study), *prompts, *SEGMENT_ARGS, "--format", "dicom-seg", "-o", str(out / "seg"), check=True)
    return out / "nifti", out / "seg"


def test_builtin_codes_come_from_pydicoms_tables() -> None:
    from pydicom.sr.codedict import codes

    for prompt, (category, kind) in BUILTIN.items():
        c = builtin_concept(prompt)
        assert c is not None and c.coded
        assert (c.type.value, c.type.meaning) == (getattr(codes.SCT, kind).value, getattr(codes.SCT, kind).meaning)
        assert c.category.value == getattr(codes.SCT, category).value
    # spot checks against the SNOMED CT identifiers themselves
    assert builtin_concept("Brain").type.value == "12738006"
    assert builtin_concept("lateral  ventricle").type.value == "66720007"
    assert builtin_concept("liver").type.value == "10200004"
    assert builtin_concept("kidney").type.value == "64033007"
    assert builtin_concept("liver").category.value == "91723000"  # Anatomical Structure (CID 7150)
    assert builtin_concept("polyp").category.value == "49755003"  # Morphologically Abnormal Structure


def test_free_text_and_user_codes(tmp_path: Path) -> None:
    a, b = free_text_concept("basal ganglia"), free_text_concept("Basal  Ganglia")
    assert a.type.scheme == PRIVATE_SCHEME and not a.coded and a.type.value == b.type.value and a.type.meaning == "basal ganglia"
    assert ConceptMap().concept("basal ganglia").source == "free text"
    f = tmp_path / "codes.json"
    f.write_text(
        json.dumps(
            {
                "Basal Ganglia": {
                    "category": "AnatomicalStructure",
                    "type": {"value": "19590005", "scheme": "SCT", "meaning": "Basal ganglia"},
                },
                "liver": {"category": "AnatomicalStructure", "type": "Spleen"},  # overrides a built-in row
            }
        )
    )
    cmap = ConceptMap.from_file(f)
    assert cmap.concept("basal ganglia").type.value == "19590005" and cmap.concept("basal ganglia").source == f"file:{f}"
    assert cmap.concept("liver").type.meaning == "Spleen" and cmap.concept("brain").type.value == "12738006"
    for bad, match in [
        ('{"x": {"type": "Liver"}}', "needs 'category' and 'type'"),
        ('{"x": {"category": "AnatomicalStructure", "type": "NoSuchKeyword"}}', "not a SNOMED CT keyword"),
        ('{"x": {"category": "AnatomicalStructure", "type": {"value": "1"}}}', "missing"),
        ("[1, 2", "not valid JSON"),
    ]:
        f.write_text(bad)
        with pytest.raises(UsageError, match=match):
            load_concepts(f)


def test_dicom_series_writer_keeps_every_voxel_in_place(study: Path) -> None:
    nifti, dicom = read_nifti(SAMPLE, "sagittal"), read_dicom_series(study, "sagittal")
    src = np.stack([np.asarray(nifti._reader(k)) for k in range(nifti.num_slices)], axis=nifti.slice_axis)
    got = np.stack([dicom._reader(k) for k in range(dicom.num_slices)], axis=2)
    idx = np.indices(dicom.shape).reshape(3, -1)
    vox = np.rint(np.linalg.inv(nifti.affine) @ dicom.affine @ np.vstack([idx, np.ones(idx.shape[1])])).astype(int)[:3]
    assert np.array_equal(got.reshape(-1), src[vox[0], vox[1], vox[2]])
    if HAVE_DCIODVFY:
        assert dciodvfy_errors(next(study.iterdir())) == []


@pytest.mark.skipif(not HAVE_DCIODVFY, reason=NO_DCIODVFY)
def test_segment_dicom_seg_is_valid(both_formats: tuple[Path, Path]) -> None:
    _, seg_dir = both_formats
    assert sorted(p.name for p in seg_dir.iterdir()) == ["series1.json", "series1.overlay.png", "series1.seg.dcm"]
    seg_file = seg_dir / "series1.seg.dcm"
    assert dciodvfy_errors(seg_file) == []


def test_segment_dicom_seg_matches_nifti_output(study: Path, both_formats: tuple[Path, Path]) -> None:
    nifti_dir, seg_dir = both_formats
    assert sorted(p.suffix for p in seg_dir.iterdir()) == [".dcm", ".json", ".png"]
    img = nib.load(next(nifti_dir.glob("*.labels.nii.gz")))
    nifti_labels = np.asarray(img.dataobj)
    seg_file = next(seg_dir.glob("*.seg.dcm"))
    volume = read_dicom_series(study, "sagittal")
    assert nifti_labels.any() and len(np.unique(nifti_labels)) == 4  # the demo model finds all three structures

    # highdicom, placed by the referenced source instances: the same label map
    back = read_dicom_seg(seg_file, volume)
    assert back.segment_labels == PROMPTS and not back.fractional
    assert np.array_equal(back.labels, nifti_labels)
    assert back.codes == (("91723000", "66720007"), ("91723000", "83251001"), ("91723000", "78277001"))

    # highdicom, from the SEG's own plane positions: every labelled voxel at the NIfTI's position
    labels, affine = seg_volume(seg_file)
    idx = np.argwhere(labels > 0).T
    vox = np.rint(np.linalg.inv(img.affine) @ affine @ np.vstack([idx, np.ones(idx.shape[1])])).astype(int)[:3]
    assert np.array_equal(nifti_labels[vox[0], vox[1], vox[2]], labels[idx[0], idx[1], idx[2]])
    assert int((labels > 0).sum()) == int((nifti_labels > 0).sum())

    # pydicom: the references and geometry a PACS viewer uses
    ds = pydicom.dcmread(seg_file)
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in volume.files]
    sources = {str(h.SOPInstanceUID): h for h in headers}
    first = next(iter(sources.values()))
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    assert ds.StudyInstanceUID == first.StudyInstanceUID and ds.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
    shared = ds.SharedFunctionalGroupsSequence[0]
    orientation = shared.PlaneOrientationSequence[0].ImageOrientationPatient
    assert [float(v) for v in orientation] == [float(v) for v in first.ImageOrientationPatient]
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == [float(v) for v in first.PixelSpacing]
    for frame in ds.PerFrameFunctionalGroupsSequence:
        src = sources[str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)]
        assert [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient] == [float(v) for v in src.ImagePositionPatient]
    types = [(s.SegmentLabel, s.SegmentedPropertyTypeCodeSequence[0].CodeValue) for s in ds.SegmentSequence]
    assert types == [("lateral ventricle", "66720007"), ("frontal lobe", "83251001"), ("temporal lobe", "78277001")]
    record = json.loads(next(seg_dir.glob("*.json")).read_text())["dicom_seg"]
    assert record["sop_instance_uid"] == ds.SOPInstanceUID and record["segments"][0]["type"]["value"] == "66720007"


def test_fractional_and_overlapping_segments(study: Path, tmp_path: Path) -> None:
    volume = read_dicom_series(study, "sagittal")
    rng = np.random.default_rng(0)
    prob = np.zeros((2, *volume.shape), np.float32)
    prob[0, 60:120, 50:90, 2:8] = rng.uniform(0.2, 1.0, (60, 40, 6))
    prob[1, 100:150, 70:100, 4:6] = 0.5  # overlaps segment 1: allowed per object / per prompt stack
    prov = SegProvenance("test", "0" * 64, {"kind": "fractional"})
    path = tmp_path / "frac.seg.dcm"
    write_dicom_seg(path, volume, prob, ["brain", "a structure the table does not know"], prov)
    if HAVE_DCIODVFY:
        assert dciodvfy_errors(path) == []
    back = read_dicom_seg(path, volume)
    assert back.fractional and back.labels.shape == prob.shape
    assert np.abs(back.labels - prob).max() <= 0.5 / 255 + 1e-6  # stored as 8-bit fractions
    ds = pydicom.dcmread(path)
    assert ds.SegmentationType == "FRACTIONAL"
    assert ds.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == PRIVATE_SCHEME
    assert ds.CodingSchemeIdentificationSequence[-1].CodingSchemeDesignator == PRIVATE_SCHEME
    # the same inputs make the same object (UIDs from the fingerprint): what makes PACS stores idempotent
    again = build_dicom_seg(volume, prob, ["brain", "a structure the table does not know"], prov)
    assert (again.SOPInstanceUID, again.SeriesInstanceUID) == (ds.SOPInstanceUID, ds.SeriesInstanceUID)
    other = build_dicom_seg(volume, prob, ["brain", "another prompt"], prov)
    assert other.SeriesInstanceUID != ds.SeriesInstanceUID


def test_dicom_seg_input_errors(study: Path, tmp_path: Path) -> None:
    volume = read_dicom_series(study, "sagittal")
    prov = SegProvenance("test", "0" * 64)
    with pytest.raises(InputError, match="do not fit the series"):
        build_dicom_seg(volume, np.zeros((3, 3, 3), np.uint8), ["brain"], prov)
    with pytest.raises(InputError, match="integers 0..1"):
        build_dicom_seg(volume, np.full(volume.shape, 2, np.uint8), ["brain"], prov)
    with pytest.raises(UsageError, match="needs a DICOM series"):
        build_dicom_seg(read_nifti(SAMPLE, "sagittal"), np.zeros((10, 217, 181), np.uint8), ["brain"], prov)
    # the CLI: one line, exit 2, nothing written
    out = tmp_path / "out"
    proc = cli("segment", str(MODEL), str(SAMPLE), "-p", "brain", "--format", "dicom-seg", "-o", str(out))
    assert proc.returncode == 2 and "needs DICOM series folders" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = cli("segment", str(MODEL), str(study), "-p", "brain", "--format", "rtstruct", "-o", str(out))
    assert proc.returncode == 2 and "--format must be one of nifti, dicom-seg" in proc.stderr
    assert not out.exists()


def test_missing_extra_is_one_line_and_runtime_stays_torch_free(study: Path, tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['highdicom'] = None\n"  # as if the 'dicom' extra were not installed
        "from medsam3_rt.cli.main import run\n"
        f"run(['segment', {str(MODEL)!r}, {str(study)!r}, '-p', 'brain', '--format', 'dicom-seg', '-o', {str(tmp_path / 'o')!r}])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 5 and "pip install 'medsam3-rt[dicom]'" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    modules = "highdicom, dicomweb_client, medsam3_rt.io.dicom_seg, medsam3_rt.io.pacs, medsam3_rt.cli.pacs"
    probe = f"import sys, {modules}; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "False"
