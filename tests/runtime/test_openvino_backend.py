"""The OpenVINO backend (medsam3_rt.backends.openvino) against ONNX Runtime on the tiny export.

Per graph, OpenVINO's outputs must match ort-cpu's within the export's fp32 parity tolerance
(medsam3_export.parity: max|delta| <= 1e-4 max|ref| + 1e-5, mask-logit signs >= 99.9 %), and
`segment()` must give the same masks and scores. Skips where the openvino wheel is missing.
"""

from __future__ import annotations

import builtins
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import phantom

pytest.importorskip("openvino", reason="the openvino wheel is not installed: pip install 'medsam3-rt[openvino]'")

import medsam3_rt
from medsam3_rt import graph_contract as gc
from medsam3_rt.backends import AUTO_ORDER, BACKENDS, BackendOptions, resolve
from medsam3_rt.backends.openvino import OpenVinoBackend
from medsam3_rt.errors import BackendUnavailableError, UsageError
from medsam3_rt.manifest import load_manifest

PROMPTS = ["liver", "left kidney", "polyp"]


def _runners(export: Path, backend_name: str, **opts):
    manifest = load_manifest(export)
    backend = resolve(backend_name, BackendOptions(**opts))
    return manifest, {name: backend.open(manifest.graph(name), export) for name in gc.DETECTOR_GRAPHS}


def test_registered_and_available() -> None:
    assert BACKENDS["openvino"] is OpenVinoBackend
    assert "openvino" in AUTO_ORDER
    assert OpenVinoBackend.probe().ok, OpenVinoBackend.probe().reason


def test_graphs_match_ort_within_parity_tolerance(tiny_export: Path) -> None:
    from medsam3_export.parity import Tolerance, check, compare

    manifest, ov = _runners(tiny_export, "openvino")
    _, ort = _runners(tiny_export, "ort-cpu")
    with medsam3_rt.load(tiny_export, "ort-cpu") as seg:
        ids, attn = seg.model.tokenizer.encode(PROMPTS)
    pixels = np.random.default_rng(0).uniform(-1, 1, (1, 3, manifest.dims.image_size, manifest.dims.image_size)).astype(np.float32)
    feeds = {gc.TEXT_ENCODER: {gc.INPUT_IDS: ids, gc.ATTENTION_MASK: attn}, gc.IMAGE_BACKBONE: {gc.PIXEL_VALUES: pixels}}
    results = []
    ref_out = {}
    for name in (gc.TEXT_ENCODER, gc.IMAGE_BACKBONE):
        ref_out[name] = ort[name].run(feeds[name])
        results += compare(name, ref_out[name], ov[name].run(feeds[name]), Tolerance())
    det_feeds = {n: ref_out[gc.IMAGE_BACKBONE][n] for n in gc.DET_FPN}
    det_feeds[gc.TEXT_FEATURES] = ref_out[gc.TEXT_ENCODER][gc.TEXT_FEATURES]
    det_feeds[gc.TEXT_MASK] = attn.astype(bool)
    results += compare(gc.DETECTOR, ort[gc.DETECTOR].run(det_feeds), ov[gc.DETECTOR].run(det_feeds), Tolerance())
    check(results)  # raises ParityError naming the worst outputs
    assert {r.output for r in results} >= {gc.PRED_MASKS, gc.PRED_LOGITS, gc.TEXT_FEATURES, *gc.DET_FPN}


@pytest.mark.parametrize(
    ("shape", "dtype", "window"),
    [((200, 300, 3), np.uint8, None), ((97, 131), np.uint8, None), ((150, 170), np.uint16, None), ((128, 96), np.float32, (-1000, 400))],
)
def test_segment_matches_ort(tiny_export: Path, shape, dtype, window) -> None:
    img = phantom(shape[0], shape[1], channels=3 if len(shape) == 3 else 1, dtype=dtype)
    with medsam3_rt.load(tiny_export, "openvino") as ov, medsam3_rt.load(tiny_export, "ort-cpu") as ort:
        assert ov.backend_name == "openvino"
        a, b = ov.segment(img, PROMPTS, window=window), ort.segment(img, PROMPTS, window=window)
    np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-4)
    np.testing.assert_allclose(a.boxes, b.boxes, rtol=0, atol=0.05)
    for i, p in enumerate(PROMPTS):
        union = (a.masks[i] | b.masks[i]).sum()
        iou = 1.0 if union == 0 else (a.masks[i] & b.masks[i]).sum() / union
        assert iou >= 0.999, f"'{p}': mask IoU {iou:.5f}"
    assert (a.label_map == b.label_map).mean() >= 0.999


def test_options_reach_openvino(tiny_export: Path) -> None:
    _, runners = _runners(tiny_export, "openvino", intra_op_threads=1)
    compiled = runners[gc.DETECTOR].compiled
    assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 1
    # f32 pinned: no silent bf16 on CPUs with AMX / AVX512-BF16
    import openvino

    assert compiled.get_property("INFERENCE_PRECISION_HINT") == openvino.Type.f32


def test_concurrent_segment_is_consistent(tiny_export: Path) -> None:
    img = phantom(120, 160)
    with medsam3_rt.load(tiny_export, "openvino") as seg:
        ref = seg.segment(img, PROMPTS)
        with ThreadPoolExecutor(3) as ex:
            results = list(ex.map(lambda _: seg.segment(img, PROMPTS), range(6)))
    for r in results:
        np.testing.assert_array_equal(r.label_map, ref.label_map)
        np.testing.assert_array_equal(r.scores, ref.scores)


def test_bad_device_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="OpenVINO device 'TPU' is not one of CPU, GPU, NPU"):
        OpenVinoBackend(device="TPU")


def test_missing_wheel_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from medsam3_rt.backends import openvino as ov_module

    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("No module named 'openvino'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    monkeypatch.setattr(ov_module, "_CORE", None)
    status = OpenVinoBackend.probe()
    assert not status.ok and "pip install 'medsam3-rt[openvino]'" in status.reason
    with pytest.raises(BackendUnavailableError, match=r"backend 'openvino' is unavailable: the 'openvino' package is not installed"):
        resolve("openvino")


def test_export_with_tracker_graphs(tiny_video_export: Path) -> None:
    """Tracker outputs of the backbone carry two ONNX tensor names; the runner must find the contract's."""
    img = phantom(160, 200, seed=5)
    with medsam3_rt.load(tiny_video_export, "openvino") as ov, medsam3_rt.load(tiny_video_export, "ort-cpu") as ort:
        a, b = ov.segment(img, PROMPTS), ort.segment(img, PROMPTS)
    np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-4)
    assert (a.label_map == b.label_map).mean() >= 0.999


def test_stream_matches_ort_with_several_new_objects(tiny_video_export: Path) -> None:
    """Tracking on OpenVINO: tracker_init with N > 1 new objects (a broadcast Expand before a
    Conv used to break OpenVINO's CPU plugin), then steps and memory encoding, as on ONNX Runtime."""
    from test_streaming_parity import DETECTION_THRESHOLD, NEW_OBJECT_THRESHOLD

    options = medsam3_rt.StreamOptions(detection_threshold=DETECTION_THRESHOLD, new_object_threshold=NEW_OBJECT_THRESHOLD)
    yy, xx = np.mgrid[:96, :112]
    most_new = 0
    with medsam3_rt.load(tiny_video_export, "openvino") as ov, medsam3_rt.load(tiny_video_export, "ort-cpu") as ort:
        a, b = ov.stream(PROMPTS, options=options), ort.stream(PROMPTS, options=options)
        seen: set[int] = set()
        for t in range(6):
            frame = phantom(96, 112, seed=1).copy()
            frame[(yy - 48) ** 2 + (xx - 30 - 2 * t) ** 2 < 15**2] = 230
            fa, fb = a.push(frame), b.push(frame)
            assert fa.object_ids.tolist() == fb.object_ids.tolist(), f"frame {t}"
            most_new = max(most_new, len(set(fb.object_ids.tolist()) - seen))
            seen |= set(fb.object_ids.tolist())
            for ma, mb in zip(fa.masks, fb.masks, strict=True):
                union = (ma | mb).sum()
                assert union == 0 or (ma & mb).sum() / union >= 0.99, f"frame {t}"
    assert most_new >= 2, "no frame started two objects at once: tracker_init never ran with N > 1"
