"""The pieces of `medsam3-rt quantize`: detector calibration inputs, mixed-precision scopes, range methods."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from medsam3_export.quantize_calib import graph_feeds
from medsam3_export.quantize_ort import OrtRecipe, quantize_onnx
from medsam3_export.quantize_scopes import DEFAULT_KEEP_FP32, activation_matmuls, node_scope, nodes_to_keep_fp32

from medsam3_rt import graph_contract as gc

PROMPTS = ("brain", "ventricle", "tumour")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three axial slices of a real T1 MRI (mricron's ch2 template) as PNG."""
    import cv2
    import nibabel as nib

    vol = np.asarray(nib.load("/usr/share/mricron/templates/ch2.nii.gz").dataobj, dtype=np.float32)
    folder = tmp_path_factory.mktemp("qimages")
    paths = []
    for i, z in enumerate((60, 80, 100)):
        s = vol[:, :, z]
        paths.append(folder / f"slice{i}.png")
        cv2.imwrite(str(paths[-1]), (255 * (s - s.min()) / max(float(np.ptp(s)), 1e-6)).astype(np.uint8))
    return paths


@pytest.fixture(scope="module")
def feeds(tiny_export: Path, images: list[Path]) -> dict[str, list[dict[str, np.ndarray]]]:
    return graph_feeds(tiny_export, images, PROMPTS, threads=1)


def test_detector_is_calibrated_on_what_segment_feeds_it(tiny_export: Path, images: list[Path], feeds: dict) -> None:
    """Backbone features of each image + every prompt's text embedding in one batch: the runtime's detector input."""
    import medsam3_rt
    from medsam3_rt.io.images import read_image
    from medsam3_rt.preprocess import pixel_values

    seg = medsam3_rt.load(tiny_export, "ort-cpu", threads=1)
    model = seg.model
    text = model.text_batch(list(PROMPTS))
    assert len(feeds[gc.IMAGE_BACKBONE]) == len(feeds[gc.DETECTOR]) == len(images)
    for path, bb, det in zip(images, feeds[gc.IMAGE_BACKBONE], feeds[gc.DETECTOR], strict=True):
        pixels = pixel_values(read_image(path), model.manifest.preprocess)
        np.testing.assert_array_equal(bb[gc.PIXEL_VALUES], pixels)
        model.manifest.graph(gc.DETECTOR).spec.check_feeds(det)  # names, dtypes, shapes of the contract
        assert det[gc.TEXT_FEATURES].shape[0] == len(PROMPTS)
        want = model.detect(model.encode_image(pixels), text)
        got = model.run(gc.DETECTOR, det)
        for k in want:
            np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(want[k]))
    seg.close()


def test_mixed_precision_scopes_find_the_heads_and_attention(tiny_export: Path) -> None:
    det = tiny_export / "detector.onnx"
    model = onnx.load(str(det), load_external_data=False)
    nodes = {n.name: n for n in model.graph.node}
    kept = nodes_to_keep_fp32(det, DEFAULT_KEEP_FP32[gc.DETECTOR])
    scopes = {node_scope(nodes[k]) for k in kept}
    for frag in ("presence_head", "box_head", "dot_product_scoring"):
        assert any(frag in s for s in scopes), (frag, scopes)
    assert all(nodes[k].op_type in ("MatMul", "Gemm", "Conv") for k in kept)
    assert not nodes_to_keep_fp32(det, ())  # --keep-fp32 none
    consts = {i.name for i in model.graph.initializer} | {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    attn = activation_matmuls(det)
    assert attn and all(not (set(nodes[a].input) & consts) for a in attn)


def _activation_scales(path: Path) -> dict[str, float]:
    """Scale of every activation QuantizeLinear (tensor -> scale)."""
    from onnx import numpy_helper

    m = onnx.load(str(path))
    init = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    return {n.input[0]: float(init[n.input[1]]) for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in init}


def _weight_scale_sizes(path: Path) -> set[int]:
    from onnx import numpy_helper

    m = onnx.load(str(path))
    init = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    return {
        int(init[n.input[1]].size)
        for n in m.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in init and init[n.input[0]].dtype == np.int8
    }


def test_range_methods_and_weight_granularity(tiny_export: Path, feeds: dict, tmp_path: Path) -> None:
    """Percentile and Entropy clip the extreme activations MinMax keeps (never a wider range); per-tensor has one weight scale.

    Entropy differing from MinMax at all checks the 2048-bin histogram reaches onnxruntime's
    calibrator (with its default 128 bins the KL search returns the full range, i.e. MinMax)."""
    src = tiny_export / "image_backbone.onnx"
    one = feeds[gc.IMAGE_BACKBONE][:1]  # Entropy's 2048-bin histograms are slow in Python: one input, against MinMax on it
    out = {}
    for label, recipe, data in (
        ("minmax", OrtRecipe("minmax"), feeds[gc.IMAGE_BACKBONE]),
        ("percentile", OrtRecipe("percentile"), feeds[gc.IMAGE_BACKBONE]),
        ("tensor", OrtRecipe("minmax", False), feeds[gc.IMAGE_BACKBONE]),
        ("minmax1", OrtRecipe("minmax"), one),
        ("entropy", OrtRecipe("entropy"), one),
    ):
        out[label] = tmp_path / f"bb.{label}.onnx"
        quantize_onnx(src, out[label], data, recipe, [], tmp_path)
    for method, ref in (("percentile", "minmax"), ("entropy", "minmax1")):
        mm, sc = _activation_scales(out[ref]), _activation_scales(out[method])
        assert set(sc) == set(mm) and mm
        assert all(sc[t] <= mm[t] * (1 + 1e-6) for t in mm), method
        assert any(sc[t] < 0.99 * mm[t] for t in mm), method
    assert max(_weight_scale_sizes(out["minmax"])) > 1 and _weight_scale_sizes(out["tensor"]) == {1}
    with pytest.raises(ValueError, match="calibration method"):
        quantize_onnx(src, tmp_path / "x.onnx", feeds[gc.IMAGE_BACKBONE], OrtRecipe("mse"), [], tmp_path)
