"""The demo recipe's tracker stage: a trained detector, frozen, gets a tracker (smoke-sized, real MRI)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nib = pytest.importorskip("nibabel")

pytestmark = pytest.mark.skipif(not Path("/usr/share/mricron/templates/aal.nii.gz").is_file(), reason="needs mricron-data")


def test_tracker_stage_keeps_the_detector_and_trains_the_tracker(tmp_path: Path) -> None:
    from medsam3_export import load_checkpoint
    from medsam3_training.recipes import demo_brain as R

    R.stage_train(tmp_path, steps=2, threads=1, resume=False, smoke=True)
    labels = R.tracker_labels(tmp_path)
    lab = np.asarray(nib.load(labels).dataobj)
    assert set(np.unique(lab).tolist()) == set(range(len(R.TRACKER_CONCEPTS) + 1))  # every concept is on the grid
    info = R.stage_tracker(tmp_path, steps=2, threads=1, smoke=True)
    assert info["steps"] == 2 and len(info["history"]) == 2

    detector = load_checkpoint(tmp_path / "run" / "best").detector.state_dict()
    start = load_checkpoint(tmp_path / "tracker-start")
    trained = load_checkpoint(tmp_path / "tracker" / "best")
    assert trained.video is not None
    # the detector is frozen: bit-identical to the image recipe's best
    for name, value in trained.video.detector_model.state_dict().items():
        assert torch.equal(value, detector[name]), name
    # the tracker moved
    before = dict(start.video.tracker_model.named_parameters())
    moved = [n for n, p in trained.video.tracker_model.named_parameters() if not torch.equal(p, before[n])]
    assert len(moved) > 10

    # export takes the tracker checkpoint: tracker graphs, within the 30 MB budget of the bundled model
    from medsam3_rt.demo import run_demo

    export = R.stage_export(tmp_path, threads=1)
    names = {p.name for p in export.glob("*.onnx")}
    assert {"tracker_init.onnx", "tracker_step.onnx", "memory_encoder.onnx"} <= names
    assert sum(p.stat().st_size for p in export.rglob("*") if p.is_file()) < 30e6
    # the demo tracks the sample volume through the memory and, next to it, detects per slice
    result = run_demo(tmp_path / "demo", model_dir=export)
    assert result.volume_mode == "tracker"
    kinds = [r.kind for r in result.rows]
    assert kinds.count("volume") == kinds.count("volume-detect") == 3

    # the report's 3D table: per-slice detection vs forward / bidirectional tracking on a held-out slab
    from medsam3_training.volume_eval import MODES, components3d, markdown_3d, neighbour_dice

    slabs = R.heldout_slabs(tmp_path)
    val = R._val_groups(tmp_path)
    for slab in slabs:  # every slice of every slab is in a held-out block of the detector's split
        axis, span = slab.name.split(" ")
        i0, i1 = map(int, span.split("-"))
        assert all(f"colin27:{axis}:{i // R.SPLIT_BLOCK:04d}" in val for i in range(i0, i1 + 1))
        assert len(slab.image) == i1 - i0 + 1
    # ... and no tracker training clip touches one
    split = __import__("json").loads((tmp_path / "tracker" / "split.json").read_text())
    for name in split["train"]:
        src_axis, start = name.split(":")[1], int(name.split(":")[-1])
        assert all(f"colin27:{src_axis}:{2 * (start + k) // R.SPLIT_BLOCK:04d}" not in val for k in range(4)), name
    v3 = R.evaluate_3d(tmp_path, threads=1, max_slabs=1, concepts=("lateral ventricle", "frontal lobe"))
    held = v3["heldout"]
    assert held["tracker"] is True and held["modes"] == list(MODES)
    (ds,) = held["datasets"]
    rows = held["datasets"][ds]["concepts"]
    slab = slabs[0]
    for concept, row in rows.items():
        truth = slab.truths[concept]
        assert row["reference"]["components"] == components3d(truth)
        assert row["reference"]["consistency"] == pytest.approx(neighbour_dice(truth))
        for mode in MODES:
            m = row["modes"][mode]
            assert 0.0 <= m["dice"] <= 1.0 and m["components"] >= 0 and m["ms_per_slice"] > 0
    assert set(v3["second_source"]["datasets"][R.ItkT1Source().name]["concepts"]) == {"brain"}
    text = "\n".join(markdown_3d(held, "Held-out slabs"))
    assert "Dice forward" in text and "components ref" in text and all(c in text for c in rows)
