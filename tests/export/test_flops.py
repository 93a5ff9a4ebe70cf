"""Graph FLOPs (`medsam3_export.flops`) against hand counts; the GEMM peak (`medsam3_bench.peak`)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the FLOPs counter needs onnx (the export extra)")
from medsam3_bench.peak import int8_gemm_model, measure_gemm_peak, measure_int8_gemm_peak  # noqa: E402
from medsam3_export.flops import count_flops  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _model() -> onnx.ModelProto:
    """x[B,8,16,16] -> grouped Conv -> ConvTranspose -> flatten -> batched MatMul -> Gemm(transA)."""
    rng = np.random.default_rng(0)
    w_conv = numpy_helper.from_array(rng.standard_normal((12, 4, 3, 3)).astype(np.float32), "w_conv")
    w_ct = numpy_helper.from_array(rng.standard_normal((12, 6, 2, 2)).astype(np.float32), "w_ct")
    w_mm = numpy_helper.from_array(rng.standard_normal((32, 5)).astype(np.float32), "w_mm")
    w_g = numpy_helper.from_array(rng.standard_normal((7, 3)).astype(np.float32), "w_g")
    shape = numpy_helper.from_array(np.array([0, 6 * 32, 32], dtype=np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["x", "w_conv"], ["c"], group=2, pads=[1, 1, 1, 1]),  # [B,12,16,16]
        helper.make_node("ConvTranspose", ["c", "w_ct"], ["t"], strides=[2, 2]),  # [B,6,32,32]
        helper.make_node("Reshape", ["t", "shape"], ["r"]),  # [B,192,32]
        helper.make_node("MatMul", ["r", "w_mm"], ["m"]),  # [B,192,5]
        helper.make_node("Gemm", ["a", "w_g"], ["y"], transA=1),  # a [7,4]^T @ [7,3] -> [4,3]
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8, 16, 16]),
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [7, 4]),
        ],
        [
            helper.make_tensor_value_info("m", TensorProto.FLOAT, ["batch", 192, 5]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 3]),
        ],
        [w_conv, w_ct, w_mm, w_g, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def test_counts_match_hand_counts_and_scale_with_batch() -> None:
    model = _model()
    b = 3
    fc = count_flops(model, {"batch": b})
    assert fc.by_op["Conv"] == 2 * (b * 12 * 16 * 16) * (4 * 3 * 3)
    assert fc.by_op["ConvTranspose"] == 2 * (b * 12 * 16 * 16) * (6 * 2 * 2)
    assert fc.by_op["MatMul"] == 2 * b * 192 * 5 * 32
    assert fc.by_op["Gemm"] == 2 * 4 * 3 * 7
    assert fc.uncounted == {}
    assert fc.total == sum(fc.by_op.values())
    one = count_flops(model, {"batch": 1})
    assert fc.total - fc.by_op["Gemm"] == b * (one.total - one.by_op["Gemm"])


def test_shapes_agree_with_onnxruntime() -> None:
    """The graph the counts are checked on runs, and its real output shapes are the assumed ones."""
    import onnxruntime as ort

    sess = ort.InferenceSession(_model().SerializeToString(), providers=["CPUExecutionProvider"])
    m, y = sess.run(None, {"x": np.zeros((3, 8, 16, 16), np.float32), "a": np.zeros((7, 4), np.float32)})
    assert m.shape == (3, 192, 5) and y.shape == (4, 3)


def test_unbound_dimension_is_named() -> None:
    with pytest.raises(ValueError, match="'batch'"):
        count_flops(_model())


def test_unpriced_ops_are_listed_not_ignored() -> None:
    graph = helper.make_graph(
        [helper.make_node("Einsum", ["p", "q"], ["o"], equation="ij,jk->ik")],
        "e",
        [
            helper.make_tensor_value_info("p", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("q", TensorProto.FLOAT, [3, 4]),
        ],
        [helper.make_tensor_value_info("o", TensorProto.FLOAT, [2, 4])],
    )
    fc = count_flops(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert fc.total == 0 and fc.uncounted == {"Einsum": 1}


def test_gemm_peak_is_a_positive_rate() -> None:
    assert measure_gemm_peak(n=128, repeats=2) > 0.0
    assert measure_int8_gemm_peak(n=128, repeats=2, threads=1) > 0.0


def test_int8_gemm_model_bytes_are_the_onnx_helper_model_and_compute_an_integer_gemm() -> None:
    """The bench package writes its MatMulInteger model without onnx: same proto as onnx.helper, exact result."""
    import onnxruntime as ort

    n = 5
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"], name="gemm")],
        "int8_gemm",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n]), helper.make_tensor_value_info("B", TensorProto.INT8, [n, n])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])],
    )
    expected = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    ours = onnx.load_from_string(int8_gemm_model(n))
    onnx.checker.check_model(ours)
    assert ours == expected
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (n, n), dtype=np.uint8)
    b = rng.integers(-128, 128, (n, n), dtype=np.int8)
    (y,) = ort.InferenceSession(int8_gemm_model(n), providers=["CPUExecutionProvider"]).run(None, {"A": a, "B": b})
    np.testing.assert_array_equal(y, a.astype(np.int32) @ b.astype(np.int32))


def test_exporter_value_info_symbols_are_bound_on_the_demo_detector() -> None:
    """The bundled detector stores intermediates with the symbol P: binding it prices every MatMul."""
    from pathlib import Path

    import medsam3_rt.demo

    path = Path(medsam3_rt.demo.__file__).parent / "model" / "detector.onnx"
    model = onnx.load(str(path))
    one, three = count_flops(model, {"P": 1}), count_flops(model, {"P": 3})
    assert "MatMul" not in one.uncounted and "Conv" not in one.uncounted
    assert three.by_op["MatMul"] > one.by_op["MatMul"]  # prompt-dependent work scales with P


def test_known_shapes_fill_what_inference_cannot() -> None:
    """A MatMul whose operand shape is unknown statically is priced once the observed shape is given."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["p", "q"], ["o"])],
        "k",
        [
            helper.make_tensor_value_info("p", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("q", TensorProto.FLOAT, [3, 4]),
        ],
        [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert count_flops(model).uncounted == {"MatMul": 1}
    fc = count_flops(model, known_shapes={"p": (2, 3), "o": (2, 4)})
    assert fc.by_op == {"MatMul": 2 * 2 * 4 * 3}


def test_profiled_count_of_the_bench_equals_the_static_count(tmp_path) -> None:
    """`medsam3_bench.flops` (ONNX Runtime's profile, no onnx import) prices every node as `count_flops` does."""
    from medsam3_bench.flops import count_graph_flops

    path = tmp_path / "g.onnx"
    onnx.save(_model(), str(path))
    feeds = {"x": np.zeros((3, 8, 16, 16), np.float32), "a": np.zeros((7, 4), np.float32)}
    assert count_graph_flops(path, feeds).by_op == count_flops(_model(), {"batch": 3}).by_op


def test_profiled_count_equals_the_static_count_on_the_tiny_export(tiny_export) -> None:
    """Every 2D graph of a real export, P bound to 2: same FLOPs per op type, same unpriced ops."""
    from medsam3_bench.flops import image_graph_flops

    from medsam3_rt.manifest import load_manifest

    manifest = load_manifest(tiny_export)
    profiled = image_graph_flops(tiny_export, manifest, prompts=2)
    for name, got in profiled.items():
        static = count_flops(tiny_export / manifest.graph(name).file, {"P": 2})
        assert got.total > 0 and got.by_op == static.by_op and got.uncounted == static.uncounted, name
