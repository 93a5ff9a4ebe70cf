"""Engine entries, profiles and compatibility (medsam3_rt.engines): everything here needs no GPU."""

from __future__ import annotations

import json
import multiprocessing
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from medsam3_export.manifest_writer import append_engine_entries

from medsam3_rt import engines as eng
from medsam3_rt import graph_contract as gc
from medsam3_rt.errors import EngineIncompatibleError, ManifestError, UsageError
from medsam3_rt.manifest import MANIFEST_NAME, load_manifest

ENV = eng.GpuEnvironment(tensorrt="10.3.0", device_name="NVIDIA H100 80GB HBM3", compute_capability="9.0")
TINY_TRACKER_DIMS = gc.ModelDims(
    image_size=224,
    patch_size=14,
    fpn_channels=64,
    text_context=32,
    num_queries=20,
    tracker_feat_s0_channels=8,
    tracker_feat_s1_channels=16,
    memory_channels=32,
)


def entry(**kw) -> eng.EngineEntry:
    base = {
        "graph": gc.DETECTOR,
        "file": "engines/detector.fp16.sm90.trt10.3.0.engine",
        "sha256": "ab" * 32,
        "bytes": 10,
        "precision": "fp16",
        "tensorrt": ENV.tensorrt,
        "device_name": ENV.device_name,
        "compute_capability": ENV.compute_capability,
        "source_onnx": "detector.onnx",
        "source_onnx_sha256": "cd" * 32,
        "flags": ("fp16", "strongly_typed"),
    }
    base.update(kw)
    return eng.EngineEntry(**base)


# -- axes and profiles --------------------------------------------------------------------


def test_axis_override_parsing() -> None:
    assert eng.parse_axis_override("P=1:4:32") == ("P", eng.AxisRange(1, 4, 32))
    assert eng.parse_axis_override("N=8") == ("N", eng.AxisRange(1, 8, 8))
    for bad in ("P", "P=1:2", "P=a:b:c", "=1:1:1", "P=4:2:8", "P=0:1:1"):
        with pytest.raises(UsageError):
            eng.parse_axis_override(bad)


def test_axis_ranges_take_tracker_settings_then_overrides() -> None:
    tracker = {"num_maskmem": 7, "max_cond_frame_num": 4, "max_object_pointers_in_encoder": 12}
    r = eng.axis_ranges(tracker, {"P": eng.AxisRange(1, 2, 8)})
    assert r["M"] == eng.AxisRange(1, 7, 10) and r["K"] == eng.AxisRange(1, 12, 12)
    assert eng.axis_ranges({"num_maskmem": 5})["M"] == eng.AxisRange(1, 5, 5)  # no reconditioning frames
    assert r["P"] == eng.AxisRange(1, 2, 8) and r["N"] == eng.AXIS_DEFAULTS["N"]
    assert eng.axis_ranges(None) == eng.AXIS_DEFAULTS
    assert eng.axis_ranges({"num_maskmem": True}) == eng.AXIS_DEFAULTS  # a bool is not a count


def test_profiles_follow_the_graph_contract() -> None:
    specs = gc.expected_specs(TINY_TRACKER_DIMS)
    ranges = eng.axis_ranges()
    text = eng.derive_profile(specs[gc.TEXT_ENCODER], ranges)
    assert text[gc.INPUT_IDS] == eng.ShapeRange((1, 32), (1, 32), (16, 32))
    backbone = eng.derive_profile(specs[gc.IMAGE_BACKBONE], ranges)
    assert backbone[gc.PIXEL_VALUES].min == backbone[gc.PIXEL_VALUES].max == (1, 3, 224, 224)
    step = eng.derive_profile(specs[gc.TRACKER_STEP], ranges)
    s = TINY_TRACKER_DIMS.feat_size
    assert step[gc.MEM_FEATS] == eng.ShapeRange((1, 1, s * s, 32), (4, 7, s * s, 32), (32, 10, s * s, 32))
    assert step[gc.OBJ_PTRS].max == (32, 16, 64)
    assert step[gc.TRK_VISION_FEAT].min == step[gc.TRK_VISION_FEAT].max == (1, 64, s, s)
    with pytest.raises(UsageError, match="--axis M"):
        eng.derive_profile(specs[gc.TRACKER_STEP], {"N": eng.AxisRange(1, 1, 1)})


def test_profile_strings_for_onnxruntime() -> None:
    spec = gc.expected_specs(TINY_TRACKER_DIMS)[gc.TEXT_ENCODER]
    lo, opt, hi = eng.profile_shape_strings(eng.derive_profile(spec, eng.axis_ranges()))
    assert lo == opt == "input_ids:1x32,attention_mask:1x32" and hi == "input_ids:16x32,attention_mask:16x32"


def test_batch_axis_of_each_graph() -> None:
    specs = gc.expected_specs(TINY_TRACKER_DIMS)
    found = {name: eng.batch_axis(spec) for name, spec in specs.items()}
    assert found == {
        gc.TEXT_ENCODER: "P",
        gc.DETECTOR: "P",
        gc.IMAGE_BACKBONE: None,
        gc.TRACKER_INIT: "N",
        gc.TRACKER_STEP: "N",
        gc.MEMORY_ENCODER: "N",
    }


# -- entries ---------------------------------------------------------------------------


def test_entry_round_trip_and_validation() -> None:
    profile = {gc.TEXT_FEATURES: eng.ShapeRange((1, 32, 64), (1, 32, 64), (16, 32, 64))}
    e = entry(profiles=(profile,), pinned_fp32=("node_Softmax_1",), accuracy={"passed": True}, build={"created": "x"})
    assert eng.EngineEntry.from_json(json.loads(json.dumps(e.to_json()))) == e
    good = e.to_json()
    cases = [
        ({"graph": None}, "needs string fields"),
        ({"file": "/abs/x.engine"}, "relative path"),
        ({"file": "../x.engine"}, "relative path"),
        ({"precision": "int4"}, "precision 'int4'"),
        ({"profiles": [{"x": {"min": [2], "opt": [1], "max": [3]}}]}, "min <= opt <= max"),
        ({"profiles": [{"x": {"min": [1]}}]}, "'min', 'opt' and 'max'"),
        ({"bytes": "many"}, "malformed"),
    ]
    for change, message in cases:
        with pytest.raises(ManifestError, match=message):
            eng.EngineEntry.from_json({**good, **change})
    with pytest.raises(ManifestError, match="does not have"):
        eng.parse_engines([good], graphs=[gc.TEXT_ENCODER])
    with pytest.raises(ManifestError, match="must be a list"):
        eng.parse_engines({"a": 1})


# -- compatibility ------------------------------------------------------------------------


def test_incompatibility_rules() -> None:
    assert eng.incompatibility(entry(), ENV) is None
    assert "TensorRT 10.3.0, this machine has TensorRT 10.4.0" in eng.incompatibility(entry(), replace(ENV, tensorrt="10.4.0"))
    assert "sm 9.0" in eng.incompatibility(entry(), replace(ENV, compute_capability="8.6", device_name="NVIDIA A10"))
    assert "NVIDIA H100 PCIe" in eng.incompatibility(entry(), replace(ENV, device_name="NVIDIA H100 PCIe"))
    vc = entry(flags=("fp16", "version_compatible"))
    assert eng.incompatibility(vc, replace(ENV, tensorrt="10.7.1")) is None
    assert eng.incompatibility(vc, replace(ENV, tensorrt="10.2.0")) is not None  # older runtime
    assert eng.incompatibility(vc, replace(ENV, tensorrt="11.0.0")) is not None  # other major
    hc = entry(flags=("fp16", "hardware_compatible"))
    assert eng.incompatibility(hc, replace(ENV, device_name="NVIDIA A10", compute_capability="8.6")) is None
    assert "Ampere" in eng.incompatibility(hc, replace(ENV, device_name="Tesla T4", compute_capability="7.5"))


def test_check_compatible_refuses_with_one_line_rebuild_hint(tmp_path: Path) -> None:
    e = entry()
    (tmp_path / "engines").mkdir()
    (tmp_path / e.file).write_bytes(b"0123456789")
    eng.check_compatible(e, ENV, tmp_path, e.source_onnx_sha256)
    t4 = eng.GpuEnvironment("10.3.0", "Tesla T4", "7.5")
    with pytest.raises(EngineIncompatibleError) as info:
        eng.check_compatible(e, t4, tmp_path)
    msg = str(info.value)
    assert "\n" not in msg and "Tesla T4 (sm 7.5)" in msg and f"medsam3-rt build {tmp_path} --precision fp16" in msg
    with pytest.raises(EngineIncompatibleError, match="re-exported since"):
        eng.check_compatible(e, ENV, tmp_path, "ef" * 32)
    with pytest.raises(EngineIncompatibleError, match="--int8 --calib DIR"):
        eng.check_compatible(entry(flags=("fp16", "int8")), t4, tmp_path)
    (tmp_path / e.file).unlink()
    with pytest.raises(EngineIncompatibleError, match="missing"):
        eng.check_compatible(e, ENV, tmp_path)


def test_engine_bytes_must_match_the_entry(tmp_path: Path) -> None:
    data = b"serialized engine"
    import hashlib

    e = entry(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    eng.verify_engine_bytes(e, data, tmp_path)
    with pytest.raises(EngineIncompatibleError, match="modified or truncated"):
        eng.verify_engine_bytes(e, data[:-1], tmp_path)
    with pytest.raises(EngineIncompatibleError, match="modified or truncated"):
        eng.verify_engine_bytes(e, data[:-1] + b"X", tmp_path)


def test_select_engine_prefers_fitting_fp16_then_newest() -> None:
    fp32 = entry(precision="fp32", file="engines/a.engine", build={"created": "2026-01-02"})
    old16 = entry(file="engines/b.engine", build={"created": "2026-01-01"})
    new16 = entry(file="engines/c.engine", build={"created": "2026-01-03"})
    other_gpu = entry(file="engines/d.engine", compute_capability="8.6", device_name="NVIDIA A10")
    int8 = entry(file="engines/e.engine", flags=("fp16", "int8"))
    text = entry(graph=gc.TEXT_ENCODER, file="engines/f.engine")
    pool = [fp32, old16, other_gpu, new16, int8, text]
    best, reasons = eng.select_engine(pool, gc.DETECTOR, ENV)
    assert best == new16 and any("A10" in r for r in reasons)
    assert eng.select_engine(pool, gc.DETECTOR, ENV, "fp32")[0] == fp32
    assert eng.select_engine(pool, gc.DETECTOR, ENV, "fp16+int8")[0] == int8
    assert eng.select_engine([other_gpu], gc.DETECTOR, ENV)[0] is None
    assert eng.engine_file_name("detector", "fp16", True, ENV) == "engines/detector.fp16-int8.sm90.trt10.3.0.engine"


# -- the manifest --------------------------------------------------------------------------


@pytest.fixture
def export_copy(tiny_export: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "export"
    shutil.copytree(tiny_export, dst)
    return dst


def _entry_for(model_dir: Path, graph: str, **kw) -> eng.EngineEntry:
    m = load_manifest(model_dir)
    src = m.graphs[graph].file
    return entry(graph=graph, file=f"engines/{graph}.engine", source_onnx=src, source_onnx_sha256=m.files[src].sha256, **kw)


def test_manifest_parses_typed_engines_and_appends_atomically(export_copy: Path) -> None:
    before = load_manifest(export_copy)
    assert before.engines == ()
    e1 = _entry_for(export_copy, gc.DETECTOR)
    append_engine_entries(export_copy, [e1])
    m = load_manifest(export_copy)  # still passes the integrity check: engines are not in `files`
    assert m.engines == (e1,) and isinstance(m.engines[0], eng.EngineEntry)
    assert m.to_json()["engines"] == [e1.to_json()]
    newer = replace(e1, sha256="ee" * 32, build={"created": "later"})
    other = _entry_for(export_copy, gc.TEXT_ENCODER)
    append_engine_entries(export_copy, [newer, other])
    assert load_manifest(export_copy).engines == (newer, other)  # same key replaced, not duplicated
    raw = (export_copy / MANIFEST_NAME).read_bytes()
    with pytest.raises(ManifestError, match="does not have"):
        append_engine_entries(export_copy, [entry(graph="tracker_step")])
    assert (export_copy / MANIFEST_NAME).read_bytes() == raw  # a rejected append changes nothing
    assert not [p for p in export_copy.iterdir() if p.name.endswith(".tmp.json")]


def _append_one(args: tuple[str, str]) -> None:
    model_dir, graph = args
    e = _entry_for(Path(model_dir), graph)
    for k in range(5):
        append_engine_entries(model_dir, [replace(e, build={"round": k})])


def test_concurrent_appends_keep_every_entry(export_copy: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    graphs = [gc.TEXT_ENCODER, gc.IMAGE_BACKBONE, gc.DETECTOR]
    with ctx.Pool(3) as pool:
        pool.map(_append_one, [(str(export_copy), g) for g in graphs])
    m = load_manifest(export_copy)
    assert sorted(e.graph for e in m.engines) == sorted(graphs)
    assert all(e.build == {"round": 4} for e in m.engines)
