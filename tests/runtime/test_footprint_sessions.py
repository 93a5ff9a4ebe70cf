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
