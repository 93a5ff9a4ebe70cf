"""fp16 weight storage (issue 21): the rewrite, ONNX Runtime keeping the weights fp16, the command on a real export."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import cli
from medsam3_export.weight_storage import FP16_SUFFIX, PARITY_FILE, store_fp16
from onnx import TensorProto, helper, numpy_helper

import medsam3_rt
from medsam3_rt import graph_contract as gc
from medsam3_rt.backends import OrtCpuBackend, OrtCpuOptions
from medsam3_rt.manifest import GraphEntry, load_manifest

D = 1024  # 4 MiB per fp32 weight


def _chain(layers: int, seed: int = 0, big_value: bool = False, bias: bool = True) -> onnx.ModelProto:
    """x -> MatMul(w0) -> Add(b0) -> ... : `layers` DxD weights, small biases (or none)."""
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((D, D)) * 0.03).astype(np.float32)
        if big_value and i == 0:
            w[0, 0] = 1e5  # beyond fp16's range: must stay fp32
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]))
        x = f"m{i}"
        if bias:  # ONNX Runtime fuses MatMul + Add (new nodes, new indices): both orders are covered
            inits.append(numpy_helper.from_array(rng.standard_normal(D).astype(np.float32), f"b{i}"))
            nodes.append(helper.make_node("Add", [x, f"b{i}"], [f"h{i}"]))
            x = f"h{i}"
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", D])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", D])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _entry(weights: str) -> GraphEntry:
    spec = gc.GraphSpec("chain", (gc.TensorSpec("x", "float32", ("N", D)),), (gc.TensorSpec("out", "float32", ("N", D)),))
    return GraphEntry("chain", "chain.onnx", spec, weights=weights)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_large_weights_become_fp16_with_a_cast_and_outputs_stay_close() -> None:
    model = _chain(3, big_value=True)
    x = np.random.default_rng(1).standard_normal((4, D)).astype(np.float32)
    ref = _run(model, x)
    info = store_fp16(model, min_elements=D + 1)
    onnx.checker.check_model(model, full_check=True)
    dtypes = {i.name: i.data_type for i in model.graph.initializer}
    assert dtypes["w0"] == TensorProto.FLOAT  # holds 1e5, out of fp16's range
    assert dtypes[f"w1{FP16_SUFFIX}"] == dtypes[f"w2{FP16_SUFFIX}"] == TensorProto.FLOAT16
    assert all(dtypes[f"b{i}"] == TensorProto.FLOAT for i in range(3))  # below min_elements: kept
    assert (info.converted, info.kept_fp32) == (2, 4)
    assert info.fp16_bytes * 2 == info.fp32_bytes == 2 * D * D * 4
    casts = [n for n in model.graph.node if n.op_type == "Cast"]
    assert sorted(n.output[0] for n in casts) == ["w1", "w2"]  # consumers read the original names
    got = _run(model, x)
    assert 0 < np.max(np.abs(got - ref)) <= 1e-2 * np.max(np.abs(ref))  # rounded weights, not the same graph


def _optimized_initializer_types(tmp_path: Path, model_path: Path, backend_entry: GraphEntry | None) -> set[int]:
    """Initializer types of the graph ONNX Runtime actually runs (its optimized model, saved)."""
    backend = OrtCpuBackend(OrtCpuOptions(lean=True))
    so = backend.session_options()
    optimized = tmp_path / f"optimized-{backend_entry.weights if backend_entry else 'default'}.onnx"
    so.optimized_model_filepath = str(optimized)
    disabled = backend.disabled_optimizers(backend_entry) if backend_entry else []
    ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"], disabled_optimizers=disabled or None)
    return {i.data_type for i in onnx.load(str(optimized)).graph.initializer if i.dims and i.dims[0] == D}


def test_ort_keeps_fp16_weights_only_with_the_runtime_settings(tmp_path: Path) -> None:
    model = _chain(2)
    store_fp16(model)
    path = tmp_path / "chain.onnx"
    onnx.save_model(model, str(path))
    # ONNX Runtime's own defaults fold every Cast back into an fp32 weight (why the backend changes them)
    assert _optimized_initializer_types(tmp_path, path, None) == {TensorProto.FLOAT}
    assert _optimized_initializer_types(tmp_path, path, _entry("fp16")) == {TensorProto.FLOAT16}
    assert OrtCpuBackend().disabled_optimizers(_entry("fp32")) == []


_RSS_CHILD = """
import json, sys
import numpy as np, onnxruntime as ort
from medsam3_rt.backends import OrtCpuBackend, OrtCpuOptions
from medsam3_rt.manifest import GraphEntry
from medsam3_rt import graph_contract as gc
path, weights = sys.argv[1], sys.argv[2]
spec = gc.GraphSpec("chain", (gc.TensorSpec("x", "float32", ("N", 1024)),), (gc.TensorSpec("out", "float32", ("N", 1024)),))
entry = GraphEntry("chain", "chain.onnx", spec, weights=weights)
backend = OrtCpuBackend(OrtCpuOptions(lean=True))
def status(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key))
open("/proc/self/clear_refs", "w").write("5")  # peak RSS (VmHWM) restarts from the current RSS
before = status("VmRSS:")
s = ort.InferenceSession(path, backend.session_options(), providers=["CPUExecutionProvider"],
                         disabled_optimizers=backend.disabled_optimizers(entry) or None)
s.run(None, {"x": np.ones((8, 1024), np.float32)})
print(json.dumps({"added_kib": status("VmHWM:") - before}))
"""


@pytest.mark.parametrize("bias", [True, False])
def test_fp16_weights_lower_the_peak_memory_of_a_run(tmp_path: Path, bias: bool) -> None:
    """16 x 4 MiB of weights: the fp16 graph's run adds clearly less peak memory (ratio, not bytes)."""
    added = {}
    for weights in ("fp32", "fp16"):
        model = _chain(16, bias=bias)
        if weights == "fp16":
            store_fp16(model)
        path = tmp_path / f"{weights}.onnx"
        onnx.save_model(model, str(path), save_as_external_data=True, location=f"{weights}.onnx.data")
        proc = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(path), weights], capture_output=True, text=True, check=True)
        added[weights] = json.loads(proc.stdout.strip().splitlines()[-1])["added_kib"]
    # fp32: 64 MiB of weights; fp16: 32 MiB stored + one 4 MiB Cast at a time (measured 46 vs 74 MiB);
    # with the Casts run all at the start it would be 106 MiB
    assert added["fp16"] < 0.8 * added["fp32"], added


@pytest.fixture(scope="module")
def fp16_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import shutil

    from medsam3_rt.demo import demo_model_dir

    src = tmp_path_factory.mktemp("fp32") / "demo"
    shutil.copytree(demo_model_dir(), src)
    (src / "prompt_packs").mkdir()
    cli("prompts", "pack", str(src), "-p", "brain", "-o", str(src / "prompt_packs" / "brain.m3pack"), check=True)
    out = tmp_path_factory.mktemp("fp16") / "demo-fp16"
    proc = cli("fp16-weights", str(src), "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "as fp16; every output within" in proc.stdout
    return out


def test_fp16_weights_command_writes_a_checked_export(fp16_demo: Path) -> None:
    from medsam3_rt.demo import demo_model_dir

    src = load_manifest(demo_model_dir(), verify="none")
    man = load_manifest(fp16_demo, verify="hash")
    assert {g.weights for g in man.graphs.values()} == {"fp16"} and {g.weights for g in src.graphs.values()} == {"fp32"}
    data = json.loads((fp16_demo / "manifest.json").read_text())
    record = data["weight_storage"]
    assert record["parity"]["passed"] and set(record["graphs"]) == set(man.graphs)
    report = json.loads((fp16_demo / PARITY_FILE).read_text())
    assert report["passed"] and {r["graph"] for r in report["outputs"]} == set(man.graphs)
    all_fp32 = all_saved = 0
    for name, g in man.graphs.items():
        fp32_bytes = sum(src.files[f].bytes for f in (src.graphs[name].file, *src.graphs[name].external_data))
        fp16_bytes = sum(man.files[f].bytes for f in (g.file, *g.external_data))
        saved = record["graphs"][name]["converted_fp16_bytes"]  # half of the converted weights' fp32 bytes
        all_fp32, all_saved = all_fp32 + fp32_bytes, all_saved + saved
        # every graph holds large weights (the demo's tracker_init: 21 % of its bytes saved)
        assert saved > 0.15 * fp32_bytes, name
        assert abs((fp32_bytes - fp16_bytes) - saved) < 0.02 * fp32_bytes, name  # the files shrank by that much
    assert all_saved > 0.3 * all_fp32  # most of the export is large weights


def test_fp16_export_segments_like_the_fp32_export(fp16_demo: Path) -> None:
    import cv2

    from medsam3_rt.demo import SAMPLES_DIR, demo_model_dir

    image = cv2.imread(str(SAMPLES_DIR / "colin27_sagittal_066.png"), cv2.IMREAD_GRAYSCALE)
    truth = cv2.imread(str(SAMPLES_DIR / "colin27_sagittal_066.brain.png"), cv2.IMREAD_GRAYSCALE) > 0
    lean = OrtCpuOptions(lean=True)
    with medsam3_rt.load(demo_model_dir(), "ort-cpu") as ref, medsam3_rt.load(fp16_demo, "ort-cpu", options=lean) as cand:
        a, b = ref.segment(image, ["brain", "liver"]), cand.segment(image, ["brain", "liver"])
    np.testing.assert_allclose(b.scores, a.scores, atol=2e-3)
    assert np.mean(b.masks == a.masks) >= 0.999
    dice = [200 * (m[0] & truth).sum() / (m[0].sum() + truth.sum()) for m in (a.masks, b.masks)]
    assert abs(dice[1] - dice[0]) < 0.2, dice  # Dice points against the atlas mask


def test_bundled_prompt_packs_are_re_encoded_for_the_new_text_encoder(fp16_demo: Path) -> None:
    from medsam3_rt.prompt_pack import read_prompt_pack

    man = load_manifest(fp16_demo, verify="none")
    pack = read_prompt_pack(fp16_demo / "prompt_packs" / "brain.m3pack", expect_text_encoder_sha256=man.text_encoder_sha256)
    with medsam3_rt.load(fp16_demo, "ort-cpu") as seg:  # the pack loads with the model
        direct = seg.model.encode_new_prompts(["brain"])[0]
        assert gc.TEXT_ENCODER in seg.model.open_graphs()
    np.testing.assert_array_equal(pack.features[0], direct.features)


def test_fp16_weights_refuses_a_converted_export_and_an_existing_output(fp16_demo: Path, tmp_path: Path) -> None:
    again = cli("fp16-weights", str(fp16_demo), "--output", str(tmp_path / "x"))
    assert again.returncode != 0 and "already stores its weights as fp16" in again.stderr
    assert "Traceback" not in again.stderr and len(again.stderr.strip().splitlines()) == 1
    exists = cli("fp16-weights", str(fp16_demo), "--output", str(fp16_demo))
    assert exists.returncode != 0 and "already exists" in exists.stderr


def test_manifest_weights_field_is_schema_checked(fp16_demo: Path, tmp_path: Path) -> None:
    import shutil

    from medsam3_rt.errors import ManifestError

    bad = tmp_path / "bad"
    shutil.copytree(fp16_demo, bad)
    data = json.loads((bad / "manifest.json").read_text())
    data["graphs"]["detector"]["weights"] = "int4"
    (bad / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="'weights' must be"):
        load_manifest(bad, verify="none")


def test_tensorrt_build_refuses_fp16_weight_graphs_in_one_line(fp16_demo: Path) -> None:
    from medsam3_export import tensorrt_build as tb

    from medsam3_rt import engines as eng
    from medsam3_rt.errors import UsageError

    env = eng.GpuEnvironment("10.8.0", "NVIDIA H100 80GB HBM3", "9.0")
    with pytest.raises(UsageError, match="build TensorRT engines from the fp32 export") as err:
        tb.plan_build(fp16_demo, load_manifest(fp16_demo), tb.BuildOptions(), env)
    assert "\n" not in str(err.value)
