"""`medsam3-rt quantize` end to end on the tiny export with real MRI slices (mricron's ch2 template)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
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


def _ops(path: Path) -> dict[str, onnx.NodeProto]:
    return {n.name: n for n in onnx.load(str(path), load_external_data=False).graph.node}


def test_quantize_both_graphs_passes_gate_and_writes_a_runnable_export(tiny_export: Path, calib_dir: Path, tmp_path: Path) -> None:
    from medsam3_export.quantize_scopes import DEFAULT_KEEP_FP32, activation_matmuls, nodes_to_keep_fp32

    out = tmp_path / "int8"
    args = ["--output", str(out), "--graphs", "backbone,detector", "--max-dice-drop", "100", "-p", "brain", "-p", "ventricle"]
    proc = cli("quantize", str(tiny_export), str(calib_dir), *args)
    assert proc.returncode == 0, proc.stderr
    assert "Dice int8 vs fp32" in proc.stdout and "image_backbone" in proc.stdout and "detector" in proc.stdout
    data = json.loads((out / "manifest.json").read_text())
    q = data["quantization"]
    assert q["int8_graphs"] == ["image_backbone", "detector"] and q["engine"] == "ort"
    assert len(q["calibration"]["images"]) == 6 and len(q["calibration"]["holdout"]) == 2
    assert set(q["per_prompt_dice"]) == {"brain", "ventricle"}
    for g in ("image_backbone", "detector"):  # per-graph error and speed report
        rep = q["graphs"][g]
        assert rep["fp32_ms"] > 0 and rep["int8_ms"] > 0 and rep["quantised_nodes"] > 0
        assert all(np.isfinite(v) for v in rep["errors"].values())
        assert data["graphs"][g]["file"].endswith(".int8.onnx")
    det = _ops(out / data["graphs"]["detector"]["file"])
    produced_by = {o: n for n in det.values() for o in n.output}

    def quantised(name: str) -> bool:  # a weight or activation input comes through DequantizeLinear
        return any(i in produced_by and produced_by[i].op_type == "DequantizeLinear" for i in det[name].input)

    src = tiny_export / "detector.onnx"
    kept = nodes_to_keep_fp32(src, DEFAULT_KEEP_FP32["detector"])
    for name in kept + activation_matmuls(src):  # mixed precision: heads and attention stay fp32
        assert name in det and not quantised(name), name
    assert sum(quantised(n.name) for n in det.values() if n.op_type in ("MatMul", "Conv", "Gemm")) > 0
    assert cli("info", str(out)).returncode == 0
    import medsam3_rt
    from medsam3_rt.io.images import list_images, read_image

    seg = medsam3_rt.load(out, "ort-cpu")
    res = seg.segment(read_image(list_images(calib_dir)[0]), ["brain"])
    assert res.masks.shape[0] == 1
    seg.close()
    assert [p.name for p in tmp_path.iterdir()] == ["int8"]  # no temp folder left behind


def test_quantize_openvino_engine_writes_nncf_ir_the_openvino_backend_runs(tiny_export: Path, calib_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("nncf", reason="nncf is not installed (the openvino extra)")
    out = tmp_path / "int8-ov"
    args = ["--output", str(out), "--engine", "openvino", "--graphs", "detector", "--max-dice-drop", "100", "-p", "brain"]
    proc = cli("quantize", str(tiny_export), str(calib_dir), *args)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "manifest.json").read_text())
    q = data["quantization"]
    assert q["engine"] == "openvino" and q["int8_graphs"] == ["detector"] and "NNCF" in q["method"]
    entry = data["graphs"]["detector"]
    assert entry["file"] == "detector.int8.xml" and entry["external_data"] == ["detector.int8.bin"]
    assert data["graphs"]["image_backbone"]["file"].endswith(".onnx")  # not asked for: stays fp32 ONNX
    xml = (out / entry["file"]).read_text()
    assert "FakeQuantize" in xml  # NNCF's int8 quantisers, executed in int8 by OpenVINO
    import medsam3_rt
    from medsam3_rt.io.images import list_images, read_image

    seg = medsam3_rt.load(out, "openvino")  # hash-verified like any export
    res = seg.segment(read_image(list_images(calib_dir)[0]), ["brain"])
    assert res.masks.shape[0] == 1
    seg.close()
    assert [p.name for p in tmp_path.iterdir()] == ["int8-ov"]


def test_quantize_refuses_when_gate_fails(tiny_export: Path, calib_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "int8"
    args = ["--output", str(out), "--graphs", "backbone,detector", "--max-dice-drop", "0", "-p", "brain", "-p", "ventricle"]
    proc = cli("quantize", str(tiny_export), str(calib_dir), *args)
    assert proc.returncode == 6, proc.stderr
    assert "accuracy gate FAILED" in proc.stderr and "Traceback" not in proc.stderr
    assert "image_backbone+detector" in proc.stderr  # says what it tried
    assert list(tmp_path.iterdir()) == []  # nothing half-written


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--engine", "tflite"], "--engine"),
        (["--graphs", "text_encoder"], "--graphs"),
        (["--method", "mse"], "--method"),
        (["--engine", "openvino", "--method", "entropy"], "--engine ort"),
    ],
)
def test_quantize_bad_options(tiny_export: Path, calib_dir: Path, tmp_path: Path, args: list[str], says: str) -> None:
    proc = cli("quantize", str(tiny_export), str(calib_dir), "--output", str(tmp_path / "out"), *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert says in proc.stderr.strip().splitlines()[-1]
    assert list(tmp_path.iterdir()) == []


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
