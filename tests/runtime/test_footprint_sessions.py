"""Lean ONNX Runtime CPU sessions (issue 21): the memory settings reach the session, results do not change."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import medsam3_rt
from medsam3_rt.backends import OrtCpuBackend, OrtCpuOptions


def test_lean_session_options_are_set() -> None:
    lean = OrtCpuBackend(OrtCpuOptions(lean=True)).session_options()
    assert lean.enable_cpu_mem_arena is False and lean.enable_mem_pattern is False
    assert lean.get_session_config_entry("session.disable_prepacking") == "1"
    default = OrtCpuBackend(OrtCpuOptions()).session_options()
    assert default.enable_cpu_mem_arena is True and default.enable_mem_pattern is True


def test_lean_sessions_give_the_same_features(tiny_export: Path) -> None:
    image = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    outs = []
    for lean in (False, True):
        with medsam3_rt.load(tiny_export, "ort-cpu", options=OrtCpuOptions(lean=lean), verify="none") as seg:
            assert seg.model.backend.settings.lean is lean
            outs.append(seg.model.encode_image(image))
    assert outs[0].keys() == outs[1].keys()
    for name in outs[0]:
        np.testing.assert_allclose(outs[1][name], outs[0][name], rtol=1e-5, atol=1e-5, err_msg=name)


def test_text_encoder_loads_on_a_cache_miss_and_can_be_released(tiny_export: Path) -> None:
    from medsam3_rt import graph_contract as gc
    from medsam3_rt.model import Model

    model = Model(tiny_export, "ort-cpu", verify="none")
    try:
        assert gc.TEXT_ENCODER not in model.open_graphs()  # only the per-image graphs at load
        first = model.text_batch(["liver"])
        assert gc.TEXT_ENCODER in model.open_graphs()
        assert model.release() == [gc.TEXT_ENCODER]
        assert gc.TEXT_ENCODER not in model.open_graphs() and gc.IMAGE_BACKBONE in model.open_graphs()
        model.text_batch(["liver"])  # cache hit: the encoder stays closed
        assert gc.TEXT_ENCODER not in model.open_graphs()
        again = model.encode_new_prompts(["liver"])[0]  # reopened on demand, same result
        assert gc.TEXT_ENCODER in model.open_graphs()
        np.testing.assert_array_equal(again.features, first.features[0])
    finally:
        model.close()


def test_a_prompt_pack_covering_the_prompts_keeps_the_text_encoder_closed(tiny_export: Path, tmp_path: Path) -> None:
    from conftest import cli

    from medsam3_rt import graph_contract as gc

    pack = tmp_path / "organs.m3pack"
    cli("prompts", "pack", str(tiny_export), "-p", "liver", "-p", "left kidney", "-o", str(pack), check=True)
    image = (np.random.default_rng(0).random((96, 128)) * 255).astype(np.uint8)
    with medsam3_rt.load(tiny_export, "ort-cpu", verify="none", prompt_packs=[pack]) as seg:
        packed = seg.segment(image, ["liver", "left kidney"])
        assert gc.TEXT_ENCODER not in seg.model.open_graphs()
        seg.segment(image, ["spleen"])  # not in the pack: a cache miss opens the encoder
        assert gc.TEXT_ENCODER in seg.model.open_graphs()
    with medsam3_rt.load(tiny_export, "ort-cpu", verify="none") as seg:
        encoded = seg.segment(image, ["liver", "left kidney"])
    np.testing.assert_array_equal(packed.scores, encoded.scores)


def _textured(i: int, shape: tuple[int, int] = (96, 96)) -> np.ndarray:
    rng = np.random.default_rng(i)
    img = (rng.random(shape) * 80).astype(np.uint8)
    img[20 + i : 60 + i, 24:70] = 220
    return img


def test_tracker_graphs_open_with_a_stream_and_release_after_it(tiny_video_export: Path) -> None:
    from medsam3_rt import graph_contract as gc

    opts = medsam3_rt.StreamOptions(detection_threshold=0.0, new_object_threshold=0.0)
    with medsam3_rt.load(tiny_video_export, "ort-cpu", verify="none") as seg:
        seg.segment(_textured(0), ["liver"])
        assert not set(gc.TRACKER_GRAPHS) & set(seg.model.open_graphs())  # images alone: no tracker sessions
        runs = []
        for _ in range(2):
            stream = seg.stream(["liver"], options=opts)
            runs.append([stream.push(_textured(i)) for i in range(3)])
            assert set(gc.TRACKER_GRAPHS) <= set(seg.model.open_graphs())
            closed = seg.model.release()  # (and the text encoder the first time: later prompts are cache hits)
            assert set(gc.TRACKER_GRAPHS) <= set(closed) <= set(gc.TRACKER_GRAPHS) | {gc.TEXT_ENCODER}
            assert seg.model.open_graphs() == [gc.IMAGE_BACKBONE, gc.DETECTOR]
        assert any(r.object_ids.size for r in runs[0])  # the tracker had objects to track
        # reopened sessions track exactly as the first ones did
        for a, b in zip(*runs):
            np.testing.assert_array_equal(a.label_map, b.label_map)
            np.testing.assert_array_equal(a.object_ids, b.object_ids)
