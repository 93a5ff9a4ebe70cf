"""`medsam3-rt build` and the TensorRT backend, driven against NAMED STAND-INS of TensorRT and CUDA.

TensorRT cannot be installed on CI machines, so these tests run the builder and runtime
code against `tests/fakes/tensorrt_standin.py` and `tests/fakes/cudart_standin.py` (host
memory; the "engine" runs the graph ONNX Runtime on the CPU). They check our side: plans,
profiles, flags, pinned layers, timing cache, calibrator protocol, manifest entries, the
accuracy gate, compatibility refusals before deserialisation, buffer reuse, device handoff,
CUDA-graph replay and batch chunking. What TensorRT itself does is tested by the real-library
twins in tests/gpu/test_gpu_real.py, which skip without TensorRT and a GPU.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import phantom

import medsam3_rt
from medsam3_rt import engines as eng
from medsam3_rt import graph_contract as gc
from medsam3_rt.backends import BackendOptions, _cuda, as_numpy
from medsam3_rt.backends.tensorrt import TensorrtBackend
from medsam3_rt.errors import BackendUnavailableError, EngineIncompatibleError, InputError, UsageError
from medsam3_rt.manifest import MANIFEST_NAME, load_manifest

tb = pytest.importorskip("medsam3_export.tensorrt_build")

PROMPTS = ["polyp", "left kidney"]


@pytest.fixture(scope="module")
def standin():
    """Install the stand-ins for this module: `import tensorrt` and the CUDA runtime resolve to them."""
    from fakes import cudart_standin, tensorrt_standin

    cudart_standin.reset()
    tensorrt_standin.reset()
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "tensorrt", tensorrt_standin)
        mp.setattr(_cuda, "_module", cudart_standin)
        yield tensorrt_standin, cudart_standin


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def built_fp16(standin, tiny_export: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tiny export with fp16 engines built by `build_engines` (shared, read-only)."""
    root = _copy(tiny_export, tmp_path_factory.mktemp("trt") / "fp16")
    result = tb.build_engines(root, tb.BuildOptions(precision="fp16"))
    return root, result


@pytest.fixture(scope="module")
def built_fp32(standin, tiny_export: Path, tmp_path_factory: pytest.TempPathFactory):
    """fp32 engines with a deliberately small prompt profile (P max 2), built through the CLI."""
    from medsam3_rt.cli.main import run

    root = _copy(tiny_export, tmp_path_factory.mktemp("trt") / "fp32")
    run(["build", str(root), "--precision", "fp32", "--axis", "P=1:1:2", "--workspace", "2", "-q"])  # exits only on error
    return root


def _ort(root: Path):
    return medsam3_rt.load(root, "ort-cpu", verify="none")


# -- the build --------------------------------------------------------------------------


def test_fp16_build_records_everything(built_fp16, standin) -> None:
    trt, _ = standin
    root, result = built_fp16
    m = load_manifest(root)  # the export still verifies: engines live beside, not in `files`
    assert sorted(e.graph for e in m.engines) == sorted(gc.DETECTOR_GRAPHS)
    by_graph = {e.graph: e for e in m.engines}
    text = by_graph[gc.TEXT_ENCODER]
    assert text.profiles[0][gc.INPUT_IDS] == eng.ShapeRange((1, 32), (1, 32), (16, 32))
    assert text.tensorrt == trt.__version__ and text.compute_capability == "9.0" and "Stand-in" in text.device_name
    assert text.flags == ("fp16", "strongly_typed") and text.source_onnx_sha256 == m.files["text_encoder.onnx"].sha256
    for e in m.engines:
        assert (root / e.file).is_file() and e.file.startswith("engines/") and ".staging" not in e.file
        assert e.sha256 == medsam3_rt.manifest.sha256_file(root / e.file)
        assert e.accuracy["passed"] and e.accuracy["dice_drop_points"] <= 0.5
        assert e.accuracy["validation_set"].startswith("6 synthetic")
        assert e.graph in e.accuracy["graph_deltas"]
    pinned = by_graph[gc.DETECTOR].pinned_fp32
    assert any("softmax" in p.lower() for p in pinned) and any("norm" in p.lower() for p in pinned)
    assert by_graph[gc.DETECTOR].build["pinned_fp32_summary"]["attention softmax"] >= 1
    headers = [h for h in trt.Builder.built if h["strongly_typed"]]
    assert headers and all(not {"FP16", "BF16", "INT8"} & set(h["flags"]) for h in headers)  # precision lives in the graph
    assert result.plan.timing_cache.is_file() and result.plan.timing_cache.name.startswith("timing.sm90.stand-in-gpu-host")
    assert not list((root / "engines").glob(".staging*"))
    # The gate measured real fp16 arithmetic: the deltas are small but not zero.
    delta = by_graph[gc.DETECTOR].accuracy["graph_deltas"][gc.DETECTOR]["pred_masks.max_rel"]
    assert 0 < delta < 1e-2
    assert result.report.passed


def test_tensorrt_backend_reproduces_ort_in_fp16(built_fp16) -> None:
    root, _ = built_fp16
    img = phantom(90, 120)
    with medsam3_rt.load(root, "auto", verify="none") as seg, _ort(root) as ref:
        assert seg.backend_name == "tensorrt"  # auto takes it: every graph has an engine for this "GPU"
        got, want = seg.segment(img, PROMPTS), ref.segment(img, PROMPTS)
    np.testing.assert_allclose(got.scores, want.scores, atol=5e-3)
    for k in range(len(PROMPTS)):
        inter = np.logical_and(got.masks[k], want.masks[k]).sum()
        union = np.logical_or(got.masks[k], want.masks[k]).sum()
        assert union == 0 or inter / union >= 0.98


def test_fp32_build_through_the_cli_matches_ort_exactly(built_fp32, standin) -> None:
    trt, _ = standin
    m = load_manifest(built_fp32)
    assert {e.precision for e in m.engines} == {"fp32"} and all("tf32_disabled" in e.flags for e in m.engines)
    assert all(e.pinned_fp32 == () for e in m.engines)
    fp32_headers = [h for h in trt.Builder.built if "TF32" not in h["flags"] and h["strongly_typed"]]
    assert len(fp32_headers) >= 3  # TF32 was cleared for every fp32 graph
    img = phantom(64, 64, channels=1)
    prompts = ["polyp", "liver", "left kidney", "fetal head", "placenta"]  # 5 > profile max 2: chunked
    with medsam3_rt.load(built_fp32, "tensorrt", verify="none") as seg, _ort(built_fp32) as ref:
        got, want = seg.segment(img, prompts), ref.segment(img, prompts)
    np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got.masks, want.masks)
    np.testing.assert_array_equal(got.label_map, want.label_map)


def test_device_handoff_buffer_reuse_and_staleness(built_fp32, standin) -> None:
    _, cudart = standin
    with medsam3_rt.load(built_fp32, "tensorrt", verify="none") as seg:
        model = seg.model
        pixels = np.random.default_rng(0).normal(0, 0.5, (1, 3, 224, 224)).astype(np.float32)
        feats = model.encode_image(pixels)
        assert all(isinstance(feats[k], _cuda.CudaTensor) for k in gc.DET_FPN)  # stays on the "device"
        host = {k: as_numpy(v) for k, v in feats.items()}
        with _ort(built_fp32) as ref:
            want = ref.model.encode_image(pixels)
        for k in gc.DET_FPN:
            np.testing.assert_allclose(host[k], want[k], rtol=0, atol=1e-6)
        seg.segment(phantom(50, 60), ["polyp", "liver"])
        mallocs, copies = cudart.state.malloc_calls, cudart.state.memcpy_calls
        for seed in range(3):
            seg.segment(phantom(50, 60, seed=seed), ["polyp", "liver"])
        assert cudart.state.malloc_calls == mallocs  # buffers allocated once, reused per frame
        # per frame: pixels up; detector text inputs up; outputs down -- and no FPN round trip
        per_frame = (cudart.state.memcpy_calls - copies) / 3
        assert per_frame == 1 + 2 + 5, per_frame
        # A device tensor that is still referenced is never overwritten by later runs ...
        held = model.encode_image(pixels)[gc.DET_FPN[0]]
        held_values = held.numpy()
        other = np.random.default_rng(1).normal(0, 0.5, (1, 3, 224, 224)).astype(np.float32)
        newer = model.encode_image(other)[gc.DET_FPN[0]]
        assert newer.ptr != held.ptr
        np.testing.assert_array_equal(held.numpy(), held_values)
        # ... and once released its buffer is reused: no allocation in steady state.
        del held, newer
        mallocs = cudart.state.malloc_calls
        for _ in range(2):
            model.encode_image(other)
        assert cudart.state.malloc_calls == mallocs
    with pytest.raises(Exception, match="lost its buffer"):
        feats[gc.DET_FPN[0]].numpy()  # the runner was closed


def test_cuda_graph_replay_gives_the_same_results(built_fp32, standin) -> None:
    _, cudart = standin
    img = phantom(70, 80)
    with medsam3_rt.load(built_fp32, "tensorrt", verify="none") as plain:
        want = plain.segment(img, ["polyp"])
    launches = cudart.state.graph_launches
    with medsam3_rt.load(built_fp32, "tensorrt", options=BackendOptions(cuda_graph=True), verify="none") as seg:
        results = [seg.segment(img, ["polyp"]) for _ in range(3)]
    assert cudart.state.graph_launches - launches >= 4  # frames 2 and 3 replay backbone + detector
    for r in results:
        np.testing.assert_array_equal(r.masks, want.masks)
        np.testing.assert_allclose(r.scores, want.scores, atol=0)


def test_inputs_outside_the_profile_are_refused(built_fp32) -> None:
    backend = TensorrtBackend()
    m = load_manifest(built_fp32)
    runner = backend.open(m.graphs[gc.TEXT_ENCODER], built_fp32)
    try:
        assert runner.max_batch() == 2
        ids = np.zeros((1, 32), np.int64)
        out = runner.run({gc.INPUT_IDS: ids, gc.ATTENTION_MASK: np.ones_like(ids)})
        assert out[gc.TEXT_FEATURES].shape == (1, 32, m.dims.fpn_channels)
        with pytest.raises(InputError, match="outside the engine's profile"):
            runner._run_once({gc.INPUT_IDS: np.zeros((3, 32), np.int64), gc.ATTENTION_MASK: np.ones((3, 32), np.int64)}, allow_device=False)
    finally:
        runner.close()


def test_out_of_device_memory_is_one_line(built_fp32, standin) -> None:
    _, cudart = standin
    cudart.state.memory_limit = 1024
    try:
        with pytest.raises(BackendUnavailableError, match="cudaMalloc.*cudaErrorMemoryAllocation"):
            medsam3_rt.load(built_fp32, "tensorrt", verify="none").segment(phantom(40, 40), "polyp")
    finally:
        cudart.state.memory_limit = None


# -- refusing mismatched engines before deserialising ------------------------------------


def _edit_engines(root: Path, **changes) -> None:
    path = root / MANIFEST_NAME
    data = json.loads(path.read_text())
    for e in data["engines"]:
        e.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"compute_capability": "8.6", "device_name": "NVIDIA A10"}, "built for NVIDIA A10 \\(sm 8.6\\)"),
        ({"tensorrt": "10.9.0"}, "built with TensorRT 10.9.0"),
        ({"source_onnx_sha256": "0" * 64}, "re-exported since"),
    ],
)
def test_mismatched_engines_are_refused_before_deserialising(built_fp32, standin, tmp_path: Path, change, message) -> None:
    trt, _ = standin
    root = _copy(built_fp32, tmp_path / "m")
    _edit_engines(root, **change)
    before = len(trt.Runtime.deserialized)
    entry = load_manifest(root).engines[0]
    backend = TensorrtBackend()
    with pytest.raises(EngineIncompatibleError, match=message) as info:
        backend.open(load_manifest(root).graphs[entry.graph], root)
    assert "\n" not in str(info.value) and "medsam3-rt build" in str(info.value)
    assert len(trt.Runtime.deserialized) == before  # refused before TensorRT saw the bytes
    # auto skips TensorRT here, and says why
    assert not TensorrtBackend.supports(load_manifest(root)).ok
    with medsam3_rt.load(root, "auto", verify="none") as seg:
        assert seg.backend_name != "tensorrt"


def test_tampered_engine_is_refused_and_the_cli_says_how_to_rebuild(built_fp32, standin, tmp_path: Path, capsys) -> None:
    from medsam3_rt.cli.main import run

    trt, _ = standin
    root = _copy(built_fp32, tmp_path / "t")
    backbone = next(e for e in load_manifest(root).engines if e.graph == gc.IMAGE_BACKBONE)  # the first graph opened
    engine = root / backbone.file
    data = bytearray(engine.read_bytes())
    data[-1] ^= 0xFF
    engine.write_bytes(bytes(data))
    before = len(trt.Runtime.deserialized)
    img = tmp_path / "scan.png"
    import cv2

    cv2.imwrite(str(img), phantom(40, 40))
    with pytest.raises(SystemExit) as done:
        run(["segment", str(root), str(img), "-p", "polyp", "-o", str(tmp_path / "out"), "--backend", "tensorrt"])
    err = capsys.readouterr().err.strip()
    assert done.value.code == 4, err
    assert err.startswith("error:") and "modified or truncated" in err and "medsam3-rt build" in err and err.count("\n") == 0
    assert len(trt.Runtime.deserialized) == before


def test_named_backend_without_engines_never_falls_back(tiny_export: Path, standin) -> None:
    with pytest.raises(EngineIncompatibleError, match="no TensorRT engine for graph .* build one with"):
        medsam3_rt.load(tiny_export, "tensorrt", verify="none")


# -- accuracy gate, INT8, plans -------------------------------------------------------------


def test_a_failing_gate_records_nothing(standin, tiny_export: Path, tmp_path: Path, capsys) -> None:
    from medsam3_rt.cli.main import run

    root = _copy(tiny_export, tmp_path / "g")
    before = (root / MANIFEST_NAME).read_bytes()
    with pytest.raises(SystemExit) as done:
        run(["build", str(root), "--precision", "fp16", "--max-dice-drop", "0"])
    err = capsys.readouterr().err
    assert done.value.code == 6, err
    assert "accuracy gate FAILED" in err and "limit 0" in err
    assert (root / MANIFEST_NAME).read_bytes() == before
    assert not list((root / "engines").glob("*.engine")) and not list((root / "engines").glob(".staging*"))


def _calib_dir(tmp_path: Path, n: int) -> Path:
    import cv2

    calib = tmp_path / "calib"
    calib.mkdir(exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(calib / f"c{i}.png"), phantom(80, 100, seed=i))
    return calib


def test_int8_backbone_is_explicit_qdq_in_a_strongly_typed_network(standin, tiny_export: Path, tmp_path: Path) -> None:
    """TensorRT >= 10.1: INT8 from Q/DQ nodes calibrated on the images; no calibrator, no weak typing, no deprecated call."""
    import onnx

    trt, _ = standin
    calib = _calib_dir(tmp_path, 4)
    root = _copy(tiny_export, tmp_path / "i")
    first = len(trt.Builder.built)
    opts = tb.BuildOptions(precision="fp16", int8=True, calib_dir=calib, max_dice_drop=100)  # random weights: gate not the point
    result = tb.build_engines(root, opts)
    headers = trt.Builder.built[first:]
    assert all(h["strongly_typed"] for h in headers) and not trt.deprecations
    (qdq,) = (root / "engines").glob("image_backbone.int8.*.qdq.onnx")  # keyed by graph hash + calibration set
    ops = {n.op_type for n in onnx.load(str(qdq)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    backbone = next(e for e in result.entries if e.graph == gc.IMAGE_BACKBONE)
    assert {"int8", "explicit_quantization", "strongly_typed"} <= set(backbone.flags) and backbone.label == "fp32+int8"
    assert ".fp32-int8." in backbone.file
    assert result.report.validation_set.startswith(str(calib))
    with pytest.raises(UsageError, match="--calib"):
        tb.BuildOptions(int8=True)


def test_int8_on_tensorrt_10_0_uses_the_calibrator(standin, tiny_export: Path, tmp_path: Path) -> None:
    """10.0, where implicit INT8 is not deprecated: the entropy calibrator and precision constraints."""
    trt, _ = standin
    calib = _calib_dir(tmp_path, 4)
    root = _copy(tiny_export, tmp_path / "i0")
    trt.set_version("10.0.1")
    try:
        first = len(trt.Builder.built)
        result = tb.build_engines(root, tb.BuildOptions(precision="fp16", int8=True, calib_dir=calib, graphs=tuple(gc.DETECTOR_GRAPHS)))
    finally:
        trt.set_version("10.8.0.43")
    weak = [h for h in trt.Builder.built[first:] if not h["strongly_typed"]]
    assert len(weak) == 1 and {"FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"} <= set(weak[0]["flags"])
    assert weak[0]["fp32_layers"] and any("softmax" in n.lower() for n in weak[0]["fp32_layers"])
    (cache,) = (root / "engines").glob("image_backbone.int8.*.calib")
    assert cache.read_bytes() == b"standin-calibration:4" and not trt.deprecations
    backbone = next(e for e in result.entries if e.graph == gc.IMAGE_BACKBONE)
    assert backbone.label == "fp16+int8" and ".fp16-int8." in backbone.file


def test_plan_rules(standin, tiny_export: Path) -> None:
    m = load_manifest(tiny_export)
    env = eng.GpuEnvironment("11.4.0", "NVIDIA H100 80GB HBM3", "9.0")
    (q,) = [g for g in tb.plan_build(tiny_export, m, tb.BuildOptions(int8=True, calib_dir=tiny_export), env).graphs if g.int8]
    assert q.strongly_typed and "explicit_quantization" in q.flags  # TensorRT 11 has only explicit quantisation
    plan = tb.plan_build(tiny_export, m, tb.BuildOptions(precision="bf16", graphs=(gc.DETECTOR,), version_compatible=True), env)
    (gp,) = plan.graphs
    assert gp.flags == ("bf16", "strongly_typed", "version_compatible") and gp.engine_file.endswith("detector.bf16.sm90.trt11.4.0.engine")
    assert gp.profile[gc.TEXT_MASK].max == (16, 32) and plan.timing_cache.name == "timing.sm90.nvidia-h100-80gb-hbm3.trt11.4.0.cache"
    with pytest.raises(UsageError, match="--graph tracker_step"):
        tb.plan_build(tiny_export, m, tb.BuildOptions(graphs=("tracker_step",)), env)
    for bad in ({"precision": "int4"}, {"workspace_gb": 0}, {"max_dice_drop": -1}, {"optimization_level": 9}, {"prompts": ()}):
        with pytest.raises(UsageError):
            tb.BuildOptions(**bad)


def test_second_build_hits_the_timing_cache_and_replaces_entries(standin, built_fp32, tmp_path: Path) -> None:
    trt, _ = standin
    root = _copy(built_fp32, tmp_path / "again")
    first = len(trt.Builder.built)
    tb.build_engines(root, tb.BuildOptions(precision="fp32", axes={"P": eng.AxisRange(1, 1, 2)}))
    assert all(h["timing_cache_hit"] for h in trt.Builder.built[first:])  # the cache file was read back
    assert len(load_manifest(root).engines) == 3  # same keys: replaced, not appended twice


def test_dry_run_builds_nothing(standin, tiny_export: Path) -> None:
    trt, _ = standin
    first = len(trt.Builder.built)
    plan = tb.build_engines(tiny_export, tb.BuildOptions(), dry_run=True)
    assert isinstance(plan, tb.BuildPlan) and len(plan.graphs) == 3 and len(trt.Builder.built) == first


def test_concurrent_segments_on_one_tensorrt_model(built_fp32) -> None:
    """Threads share the runners; held device tensors are never overwritten by another thread's frame."""
    from concurrent.futures import ThreadPoolExecutor

    images = [phantom(60, 70, seed=i) for i in range(4)]
    with medsam3_rt.load(built_fp32, "tensorrt", verify="none") as seg, _ort(built_fp32) as ref:
        want = [ref.segment(im, ["polyp", "liver"]) for im in images]
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda im: seg.segment(im, ["polyp", "liver"]), images * 3))
    for i, g in enumerate(got):
        np.testing.assert_allclose(g.scores, want[i % 4].scores, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(g.masks, want[i % 4].masks)


# -- contracts the stand-ins now enforce (each failed before the fix) ------------------------


def test_device_n_builds_probes_and_runs_on_device_n_from_any_thread(standin, tiny_export: Path, tmp_path: Path) -> None:
    """--device 1 builds on GPU 1 (not only records it), auto-selection probes GPU 1, and a worker
    thread (whose current device starts at 0, as in CUDA) still runs on GPU 1."""
    from concurrent.futures import ThreadPoolExecutor

    from medsam3_rt.backends import resolve

    _, cudart = standin
    cudart.state.device_count = 2
    try:
        root = _copy(tiny_export, tmp_path / "dev1")
        result = tb.build_engines(root, tb.BuildOptions(precision="fp32", device_id=1, axes={"P": eng.AxisRange(1, 1, 2)}))
        assert {e.device_name for e in result.entries} == {cudart.OTHER_DEVICE_NAME}
        m = load_manifest(root, verify="none")
        assert resolve("auto", BackendOptions(device_id=1), manifest=m).name == "tensorrt"
        assert resolve("auto", BackendOptions(device_id=0), manifest=m).name != "tensorrt"  # no engine for GPU 0
        img = phantom(60, 70, seed=3)
        with medsam3_rt.load(root, "tensorrt", options=BackendOptions(device_id=1), verify="none") as seg, _ort(root) as ref:
            want = ref.segment(img, ["polyp"])
            with ThreadPoolExecutor(1) as pool:
                got = pool.submit(seg.segment, img, ["polyp"]).result()
        np.testing.assert_array_equal(got.masks, want.masks)
    finally:
        cudart.state.device_count = 1
        cudart.cudaSetDevice(0)


def test_timing_cache_from_another_gpu_is_not_fatal(standin, built_fp32, tmp_path: Path) -> None:
    _, cudart = standin
    root = _copy(built_fp32, tmp_path / "tc")
    shared = tmp_path / "shared.cache"
    cudart.state.device_count = 2
    try:
        tb.build_engines(root, tb.BuildOptions(precision="fp32", device_id=1, timing_cache=shared, axes={"P": eng.AxisRange(1, 1, 2)}))
        lines: list[str] = []
        tb.build_engines(
            root, tb.BuildOptions(precision="fp32", timing_cache=shared, axes={"P": eng.AxisRange(1, 1, 2)}), progress=lines.append
        )
    finally:
        cudart.state.device_count = 1
        cudart.cudaSetDevice(0)
    assert any("measured on another GPU" in line for line in lines)
    assert json.loads(shared.read_bytes())["device"] == cudart.DEVICE_NAME  # replaced by this GPU's timings


def test_int8_calibration_cache_is_not_reused_across_reexports(standin, tiny_export: Path, tmp_path: Path) -> None:
    import cv2

    calib = _calib_dir(tmp_path, 2)
    root = _copy(tiny_export, tmp_path / "q")
    opts = tb.BuildOptions(precision="fp16", int8=True, calib_dir=calib, graphs=tuple(gc.DETECTOR_GRAPHS), max_dice_drop=100)
    tb.build_engines(root, opts)
    cv2.imwrite(str(calib / "c2.png"), phantom(80, 100, seed=7))  # a new calibration set
    tb.build_engines(root, opts)
    assert len(list((root / "engines").glob("image_backbone.int8.*"))) == 2  # calibrated again, not read back


def test_int8_pinning_leaves_shape_tensors_alone(standin, tmp_path: Path) -> None:
    """Setting fp32 on an INT64 shape tensor is an error TensorRT logs (it became the build's last_error)."""
    import onnx
    from onnx import TensorProto, helper

    trt, _ = standin
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])
    s = helper.make_tensor_value_info("s", TensorProto.INT64, [3])
    init = [helper.make_tensor("g", TensorProto.FLOAT, [8], [1.0] * 8), helper.make_tensor("b", TensorProto.FLOAT, [8], [0.0] * 8)]
    nodes = [
        helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], name="mask_head/norm"),
        helper.make_node("Shape", ["y"], ["s"], name="mask_head/shape"),  # pinned by name, but a shape tensor
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y, s], init), opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    logger = trt.Logger()
    errors: list[str] = []
    logger.log = lambda severity, msg: errors.append(msg) if severity <= trt.ILogger.ERROR else None  # type: ignore[method-assign]
    network = trt.Builder(logger).create_network(0)
    assert trt.OnnxParser(network, logger).parse_from_file(str(path))
    assert tb._pin_fp32_layers(network, trt, {"mask_head"}) == 1
    assert errors == [] and network.get_layer(0).output_types == {0: trt.float32}
    network.get_layer(1).set_output_type(0, trt.float32)  # what the old loop did: TensorRT logs an error
    assert errors and "shape tensor" in errors[0]


def test_open_reads_the_attached_manifest_not_the_disk(standin, built_fp32) -> None:
    """`Model` attaches the manifest it validated; the backend takes engine entries from it."""
    from dataclasses import replace

    m = load_manifest(built_fp32, verify="none")
    backend = TensorrtBackend()
    backend.attach(replace(m, engines=()), built_fp32)
    with pytest.raises(EngineIncompatibleError, match="none built"):
        backend.open(m.graphs[gc.TEXT_ENCODER], built_fp32)
