"""The bundled demo model (issue 10): intact, really trained, runnable with the runtime alone.

The model in `medsam3_rt/demo/model` was trained by `training/recipes/demo_brain.py`; its
Dice on the shipped sample slice and volume must stay above floors set from the values
measured when it was packaged (see `MEASURED`), which an untrained model is far below.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli

import medsam3_rt
from medsam3_rt.demo import MODEL_DIR, REPORT_JSON, SAMPLES_DIR, demo_model_dir, run_demo, sample_info
from medsam3_rt.errors import IntegrityError

# Dice of the packaged model on its samples (ort-cpu), from the packaging run; floors leave
# room for other ONNX Runtime builds and CPUs, not for a different model.
MEASURED: dict[tuple[str, str], float] = {
    ("slice", "brain"): 0.9252,
    ("slice", "lateral ventricle"): 0.8102,
    ("slice", "frontal lobe"): 0.5735,
    ("volume", "lateral ventricle"): 0.6579,  # tracked through the memory
    ("volume", "frontal lobe"): 0.5402,
    ("volume", "temporal lobe"): 0.3296,
    ("volume-detect", "lateral ventricle"): 0.6793,  # per-slice detection of the same slices
    ("volume-detect", "frontal lobe"): 0.5722,
    ("volume-detect", "temporal lobe"): 0.2323,
}
MARGIN = 0.05
MAX_BYTES = 30_000_000


def test_demo_model_dir_is_the_packaged_export() -> None:
    assert demo_model_dir() == MODEL_DIR and (MODEL_DIR / "manifest.json").is_file()
    assert medsam3_rt.demo_model_dir() == MODEL_DIR


def test_manifest_hashes_verify_and_the_model_has_its_trained_tracker() -> None:
    manifest = medsam3_rt.load_manifest(MODEL_DIR, verify="hash")
    for rel, entry in manifest.files.items():  # and independently of the loader
        data = (MODEL_DIR / rel).read_bytes()
        assert len(data) == entry.bytes and hashlib.sha256(data).hexdigest() == entry.sha256, rel
    assert manifest.has_tracker, "the demo ships the tracker trained by demo_brain's tracker stage (issue 16)"
    assert {g for g in manifest.graphs} == {"text_encoder", "image_backbone", "detector", "tracker_init", "tracker_step", "memory_encoder"}


def test_shipped_files_stay_small() -> None:
    demo = MODEL_DIR.parent
    total = sum(f.stat().st_size for f in demo.rglob("*") if f.is_file() and "__pycache__" not in f.parts)
    assert total <= MAX_BYTES, f"medsam3_rt/demo holds {total / 1e6:.1f} MB; the budget is {MAX_BYTES / 1e6:.0f} MB"


def test_a_tampered_copy_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(MODEL_DIR, copy)
    graph = copy / "detector.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        medsam3_rt.load(copy)


def test_dice_on_the_shipped_samples_stays_above_the_floor(tmp_path: Path) -> None:
    result = run_demo(tmp_path, backend="ort-cpu")
    info = sample_info()
    assert [r.prompt for r in result.rows] == [*info["slice"]["prompts"], *info["volume"]["prompts"], *info["volume"]["prompts"]]
    got = {(r.kind, r.prompt): r.dice for r in result.rows}
    assert set(got) == set(MEASURED)
    low = {k: (v, MEASURED[k] - MARGIN) for k, v in got.items() if v < MEASURED[k] - MARGIN}
    assert not low, f"Dice below the floor (got, floor): {low}"
    # the 3D path tracked through the memory, and ran per slice on the same slices; prompts
    # shared by 2D and 3D came from the cache
    assert result.volume_mode == "tracker"
    shared = set(info["slice"]["prompts"]) & set(info["volume"]["prompts"])
    assert result.cache_hits >= len(shared) and result.text_encoder_runs == len(
        set(info["slice"]["prompts"]) | set(info["volume"]["prompts"])
    )
    summary = json.loads((tmp_path / "demo.json").read_text())
    assert summary["volume_mode"] == "tracker"
    for f in result.files:
        assert f.is_file() and f.stat().st_size > 0


def test_medsam3_rt_demo_runs_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = cli("demo", "--output", str(out), check=True, timeout=300)
    text = proc.stdout + proc.stderr
    assert "Dice" in text and "per-slice detection" in text and "prompt cache" in text, text
    assert (out / "demo.json").is_file()
    names = {p.name for p in out.iterdir()}
    assert any(n.endswith(".overlay.png") for n in names) and any(n.endswith(".labels.nii.gz") for n in names)


def test_the_runtime_alone_loads_and_segments_the_demo_model(tmp_path: Path) -> None:
    """`medsam3_rt.load(medsam3_rt.demo_model_dir())` with torch and transformers made unimportable."""
    code = (
        "import sys\n"
        "sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "import medsam3_rt\n"
        "from medsam3_rt.io.images import read_image\n"
        "from medsam3_rt.demo import SAMPLES_DIR, sample_info\n"
        "seg = medsam3_rt.load(medsam3_rt.demo_model_dir())\n"
        "s = sample_info()['slice']\n"
        "res = seg.segment(read_image(SAMPLES_DIR / s['image']), s['prompts'])\n"
        "print(res.masks.shape, res.areas.tolist())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("(3, ")


def test_samples_and_report_are_shipped_and_consistent() -> None:
    info = sample_info()
    for part in ("slice", "volume"):
        assert (SAMPLES_DIR / info[part]["image"]).is_file()
        for prompt in info[part]["prompts"]:
            assert (SAMPLES_DIR / info[part]["masks"][prompt]).is_file(), prompt
    report = json.loads(REPORT_JSON.read_text())
    manifest = json.loads((MODEL_DIR / "manifest.json").read_text())
    assert report["model"]["export_total_bytes"] == sum(e["bytes"] for e in manifest["files"].values())
    assert "trained on the frozen detector" in report["model"]["tracker"]
    assert report["volumes_3d"]["heldout"]["tracker"] and report["volumes_3d"]["heldout"]["modes"] == [
        "per-slice detection",
        "forward tracking",
        "bidirectional tracking",
    ]
    assert info["volume"]["tracking"]["policy"] == "transformers" and info["volume"]["tracking"]["max_objects"] == 1
    trained = report["heldout"]["predictors"]["exported"]["datasets"]
    untrained = report["heldout"]["predictors"]["untrained"]["datasets"]
    for ds, d in trained.items():
        assert d["dice"] > untrained[ds]["dice"] + 0.2, ds
    assert (MODEL_DIR.parent / "LICENSE.md").is_file()
