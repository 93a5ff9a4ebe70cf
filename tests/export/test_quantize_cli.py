"""`medsam3-rt quantize` end to end on the tiny export with real MRI slices (mricron's ch2 template)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import cli

CH2 = Path("/usr/share/mricron/templates/ch2.nii.gz")


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight axial slices of a real T1 MRI, saved as PNG like a user's calibration folder."""
    import cv2
    import nibabel as nib

    vol = np.asarray(nib.load(CH2).dataobj, dtype=np.float32)
    out = tmp_path_factory.mktemp("calib") / "slices"
    out.mkdir()
    for i, z in enumerate(np.linspace(vol.shape[2] * 0.3, vol.shape[2] * 0.7, 8).astype(int)):
        s = vol[:, :, z]
        s = (255 * (s - s.min()) / max(float(np.ptp(s)), 1e-6)).astype(np.uint8)
        cv2.imwrite(str(out / f"slice{i:02d}.png"), s)
    return out


def test_quantize_passes_gate_and_writes_a_runnable_export(tiny_export: Path, calib_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "int8"
    proc = cli(
        "quantize", str(tiny_export), str(calib_dir), "--output", str(out), "--max-dice-drop", "100", "-p", "brain", "-p", "ventricle"
    )
    assert proc.returncode == 0, proc.stderr
    assert "Dice int8 vs fp32" in proc.stdout and "image_backbone" in proc.stdout
    data = json.loads((out / "manifest.json").read_text())
    q = data["quantization"]
    assert q["int8_graphs"] == ["image_backbone"]
    assert len(q["calibration"]["images"]) == 6 and len(q["calibration"]["holdout"]) == 2
    assert set(q["per_prompt_dice"]) == {"brain", "ventricle"}
    assert data["graphs"]["image_backbone"]["file"].endswith(".int8.onnx")
    import onnx

    ops = {n.op_type for n in onnx.load(str(out / data["graphs"]["image_backbone"]["file"]), load_external_data=False).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert cli("info", str(out)).returncode == 0
    import medsam3_rt
    from medsam3_rt.io.images import list_images, read_image

    seg = medsam3_rt.load(out, "ort-cpu")
    res = seg.segment(read_image(list_images(calib_dir)[0]), ["brain"])
    assert res.masks.shape[0] == 1
    seg.close()
    assert [p.name for p in tmp_path.iterdir()] == ["int8"]  # no temp folder left behind


def test_quantize_refuses_when_gate_fails(tiny_export: Path, calib_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "int8"
    proc = cli("quantize", str(tiny_export), str(calib_dir), "--output", str(out), "--max-dice-drop", "0", "-p", "brain", "-p", "ventricle")
    assert proc.returncode != 0
    assert "accuracy gate FAILED" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing half-written


@pytest.mark.parametrize("case", ["missing", "empty", "one-image"])
def test_quantize_bad_calibration_folder(tiny_export: Path, tmp_path: Path, case: str) -> None:
    calib = tmp_path / "calib"
    if case != "missing":
        calib.mkdir()
    if case == "one-image":
        import cv2

        cv2.imwrite(str(calib / "a.png"), np.zeros((32, 32), np.uint8))
    out = tmp_path / "out"
    proc = cli("quantize", str(tiny_export), str(calib), "--output", str(out))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "calib" in proc.stderr.strip().splitlines()[-1]
    assert not out.exists()


def test_quantize_wrong_model_dir(calib_dir: Path, tmp_path: Path) -> None:
    proc = cli("quantize", str(tmp_path / "nope"), str(calib_dir), "--output", str(tmp_path / "out"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
