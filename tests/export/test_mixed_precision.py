"""fp16/bf16 graph rewriting with fp32-pinned nodes, and the accuracy gate (both torch- and GPU-free)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import phantom

from medsam3_rt import graph_contract as gc
from medsam3_rt.errors import AccuracyGateError, InputError
from medsam3_rt.manifest import load_manifest
from medsam3_rt.tokenizer import ClipTokenizer

mp = pytest.importorskip("medsam3_export.mixed_precision")
accuracy = pytest.importorskip("medsam3_export.accuracy")


def _types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    return {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.value_info, *g.output)}


def test_pinned_nodes_cover_norms_softmax_and_mask_logits(tiny_export: Path) -> None:
    model = onnx.load(str(tiny_export / "detector.onnx"), load_external_data=False)
    pins = {p.name: p for p in mp.fp32_pinned_nodes(model)}
    ops = {n.name: n.op_type for n in model.graph.node}
    for name, op in ops.items():
        if op in ("LayerNormalization", "GroupNormalization", "Softmax"):
            assert name in pins, f"{op} {name} not pinned"
    producers = {o: n.name for n in model.graph.node for o in n.output}
    for out in (gc.PRED_MASKS, gc.SEMANTIC_SEG):
        assert producers[out] in pins and "final mask logits" in pins[producers[out]].reason
    assert not any(p.op == "MatMul" and "mask" not in p.reason for p in pins.values())  # the ViT/DETR matmuls run low


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("graph", [gc.TEXT_ENCODER, gc.IMAGE_BACKBONE, gc.DETECTOR])
def test_rewritten_graphs_type_check_and_keep_the_contract(tiny_export: Path, tmp_path: Path, graph: str, precision: str) -> None:
    src = tiny_export / f"{graph}.onnx"
    pins = {p.name for p in mp.fp32_pinned_nodes(onnx.load(str(src), load_external_data=False))}
    dst = tmp_path / f"{graph}.{precision}.onnx"
    mp.convert_file(src, dst, precision, pins)
    onnx.checker.check_model(str(dst), full_check=True)  # strict type and shape inference
    model = onnx.load(str(dst))
    orig = onnx.load(str(src), load_external_data=False)
    io = lambda m: [(v.name, v.type.tensor_type.elem_type) for v in (*m.graph.input, *m.graph.output)]  # noqa: E731
    assert io(model) == io(orig)  # fp32 in, fp32 out: the manifest's contract holds
    types = _types(model)
    low = mp.LOW_TYPES[precision]
    by_name = {n.name: n for n in model.graph.node}
    for name in pins:
        node = by_name[name]
        assert all(types.get(o) in (onnx.TensorProto.FLOAT, None) for o in node.output), f"{name} not fp32"
    lows = [n for n in model.graph.node if n.op_type == "MatMul" and n.name not in pins]
    assert lows and all(types[n.output[0]] == low for n in lows)
    assert 0.5 < mp.low_precision_fraction(model, precision) <= 1.0


def test_fp16_pipeline_stays_close_to_fp32(tiny_export: Path, tmp_path: Path) -> None:
    """The rewritten fp16 graphs really compute in fp16 (ONNX Runtime CPU has fp16 kernels)."""
    m = load_manifest(tiny_export)
    ids, attn = ClipTokenizer(tiny_export / m.tokenizer.file, m.tokenizer).encode(["polyp", "left kidney"])
    rng = np.random.default_rng(0)
    pixels = rng.normal(0, 0.5, (1, 3, 224, 224)).astype(np.float32)

    def chain(folder: Path, suffix: str) -> dict[str, np.ndarray]:
        def run(graph: str, feeds: dict) -> dict:
            s = ort.InferenceSession(str(folder / f"{graph}{suffix}.onnx"), providers=["CPUExecutionProvider"])
            return dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds)))

        text = run(gc.TEXT_ENCODER, {gc.INPUT_IDS: ids, gc.ATTENTION_MASK: attn})
        fpn = run(gc.IMAGE_BACKBONE, {gc.PIXEL_VALUES: pixels})
        return run(gc.DETECTOR, {**fpn, gc.TEXT_FEATURES: text[gc.TEXT_FEATURES], gc.TEXT_MASK: attn.astype(bool)})

    for graph in gc.DETECTOR_GRAPHS:
        src = tiny_export / f"{graph}.onnx"
        pins = {p.name for p in mp.fp32_pinned_nodes(onnx.load(str(src), load_external_data=False))}
        mp.convert_file(src, tmp_path / f"{graph}.fp16.onnx", "fp16", pins)
    ref, got = chain(tiny_export, ""), chain(tmp_path, ".fp16")
    for name, r in ref.items():
        err = float(np.max(np.abs(got[name] - r)))
        assert 0 < err <= 1e-2 * float(np.max(np.abs(r))) + 1e-3, f"{name}: max|delta| {err:.2e}"  # > 0: it is not fp32
    signs = float(np.mean((got[gc.PRED_MASKS] > 0) == (ref[gc.PRED_MASKS] > 0)))
    assert signs >= 0.99, signs


def test_bf16_rounding_is_round_to_nearest_even() -> None:
    values = np.array([1.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8, -2.5, 65504.0, np.inf], np.float32)
    t = mp._to_bf16(onnx.numpy_helper.from_array(values, "w"))
    bits = np.frombuffer(t.raw_data, "<u2")
    assert t.data_type == onnx.TensorProto.BFLOAT16
    # 1+2^-8 is halfway between 1 and 1+2^-7: ties to even (1.0); 1+3*2^-8 ties up to 1+2^-6.
    assert bits.tolist() == [0x3F80, 0x3F80, 0x3F82, 0xC020, 0x4780, 0x7F80]


# -- the accuracy gate ------------------------------------------------------------------


def _pair(ref: np.ndarray, new: np.ndarray, truth: np.ndarray | None = None, name: str = "a") -> object:
    return accuracy.MaskPair(name, "liver", ref, new, truth)


def test_gate_agreement_mode() -> None:
    ref = np.zeros((10, 10), bool)
    ref[2:8, 2:8] = True  # 36 px
    same = accuracy.gate([_pair(ref, ref.copy())])
    assert same.passed and same.dice_drop_points == 0.0 and same.mode == "agreement with fp32"
    new = ref.copy()
    new[2, 2] = False  # Dice = 2*35/(36+35)
    r = accuracy.gate([_pair(ref, new), _pair(ref, ref.copy(), name="b")], max_dice_drop=0.5)
    expected = 100 * (1 - (2 * 35 / 71 + 1.0) / 2)
    assert r.dice_drop_points == pytest.approx(expected) and r.passed == (expected <= 0.5)
    assert r.worst["sample"] == "a" and r.pairs == 2 and r.samples == 2
    strict = accuracy.gate([_pair(ref, new)], max_dice_drop=0.5)
    assert not strict.passed  # 1.41 points
    with pytest.raises(AccuracyGateError, match="Dice drop 1.408 points"):
        accuracy.check(strict)
    assert AccuracyGateError("x").exit_code == 6


def test_gate_ground_truth_mode() -> None:
    truth = np.zeros((10, 10), bool)
    truth[0:5] = True  # 50 px
    ref = truth.copy()
    new = truth.copy()
    new[0, :2] = False  # 48 of 50: Dice 96/98
    r = accuracy.gate([_pair(ref, new, truth)], max_dice_drop=1.0)
    assert r.mode == "ground truth" and r.ground_truth["dice_reference"] == 1.0
    assert r.dice_drop_points == pytest.approx(100 * (1 - 96 / 98)) and not r.passed
    better = accuracy.gate([_pair(new, ref, truth)], max_dice_drop=0.0)  # candidate better than reference
    assert better.dice_drop_points < 0 and better.passed
    with pytest.raises(ValueError):
        accuracy.gate([_pair(ref, new)], max_dice_drop=-1)
    with pytest.raises(AccuracyGateError, match="empty"):
        accuracy.gate([])


def test_validation_folder_with_ground_truth(tmp_path: Path) -> None:
    import cv2

    (tmp_path / "masks").mkdir()
    cv2.imwrite(str(tmp_path / "a.png"), phantom(40, 50))
    labels = np.zeros((40, 50), np.uint8)
    labels[10:20, 10:30] = 2
    cv2.imwrite(str(tmp_path / "masks" / "a.png"), labels)
    samples = accuracy.load_samples(tmp_path, n_prompts=2)
    assert len(samples) == 1 and samples[0].labels is not None and int(samples[0].labels.max()) == 2
    with pytest.raises(InputError, match="only 1 prompts"):
        accuracy.load_samples(tmp_path, n_prompts=1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no validation images"):
        accuracy.load_samples(tmp_path / "empty", 1)


def test_hand_built_graph_edge_cases_convert_and_run() -> None:
    """ConstantOfShape without a value (float32 zero by default), Resize scales (must stay float32),
    a shared initializer used by a pinned and an unpinned node, and Shape of a float tensor."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])
    w = onnx.numpy_helper.from_array(np.full((1, 2, 1, 1), 0.5, np.float32), "w")
    scales = onnx.numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], name="shape"),
        helper.make_node("ConstantOfShape", ["shape"], ["zeros"], name="zeros"),  # no value attribute
        helper.make_node("Add", ["x", "zeros"], ["a"], name="add"),
        helper.make_node("Mul", ["a", "w"], ["b"], name="mul"),
        helper.make_node("Softmax", ["b"], ["c"], name="softmax", axis=-1),
        helper.make_node("Add", ["c", "w"], ["d"], name="add_w"),
        helper.make_node("Resize", ["d", "", "scales"], ["y"], name="resize", mode="nearest"),
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w, scales]), opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model, full_check=True)
    out = mp.convert_mixed_precision(model, "fp16", keep_fp32={"softmax", "add_w"})
    onnx.checker.check_model(out, full_check=True)
    inits = {t.name: t.data_type for t in out.graph.initializer}
    assert inits["scales"] == TensorProto.FLOAT and inits["w"] == TensorProto.FLOAT  # w also feeds the fp32 region
    types = _types(out)
    assert types["zeros"] == TensorProto.FLOAT16 and types["c"] == types["d"] == types["y"] == TensorProto.FLOAT
    assert any(n.op_type == "Resize" and types[n.output[0]] == TensorProto.FLOAT16 for n in out.graph.node)
    feed = {"x": np.random.default_rng(0).normal(size=(1, 2, 4, 4)).astype(np.float32)}
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    got = ort.InferenceSession(out.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert got.dtype == np.float32 and np.abs(got - ref).max() < 1e-2
