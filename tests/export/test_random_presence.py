"""`export --random`: the tracker's objects are present, so the tracker parity compares real masks (issue 21)."""

from __future__ import annotations

import numpy as np
import torch
from medsam3_export.checkpoint import RANDOM_OBJECT_SCORE_BIAS, random_checkpoint
from medsam3_export.exporter import model_dims, objects_present, parity_image, parity_inputs
from medsam3_export.graphs import build_graph_module

from medsam3_rt import graph_contract as gc
from medsam3_rt.preprocess import Preprocess, pixel_values

NO_OBJECT = -1024.0  # the tracker's fill for an absent object's mask logits


def _tracker_refs(bias: float | None) -> dict[str, dict[str, np.ndarray]]:
    """The exporter's reference outputs of the backbone and tracker graphs for a random tiny model."""
    ckpt = random_checkpoint("tiny", object_score_bias=bias)
    dims = model_dims(ckpt)
    specs = gc.expected_specs(dims)
    pixels = pixel_values(parity_image(dims.image_size), Preprocess(image_size=dims.image_size))
    ids = np.zeros((2, dims.text_context), np.int64)
    refs: dict[str, dict[str, np.ndarray]] = {}
    with torch.no_grad():
        for name in (gc.IMAGE_BACKBONE, gc.TRACKER_INIT, gc.TRACKER_STEP):
            module = build_graph_module(name, ckpt, dims, "meta")
            outs = module(*parity_inputs(name, dims, ids, ids, pixels, refs, ckpt.video.tracker_model.num_maskmem).values())
            outs = outs if isinstance(outs, tuple) else (outs,)
            refs[name] = {t.name: o.numpy() for t, o in zip(specs[name].outputs, outs, strict=True)}
    return refs


def test_transformers_init_leaves_presence_to_chance() -> None:
    """Why the bias exists: at transformers' init the object score is ~0 for every input, so whether
    the tracker sees objects is a coin flip per preset (tiny: +0.007, present; small: -0.004, absent,
    every mask a constant fill) decided ~1e-2 from the threshold."""
    scores = _tracker_refs(None)[gc.TRACKER_STEP][gc.OBJECT_SCORE_LOGITS]
    assert np.abs(scores).max() < 0.05 and np.ptp(scores) < 1e-3


def test_random_export_bias_makes_tracked_objects_present() -> None:
    refs = _tracker_refs(RANDOM_OBJECT_SCORE_BIAS)
    step = refs[gc.TRACKER_STEP]
    assert (step[gc.OBJECT_SCORE_LOGITS] > 0.5).all()
    masks = step[gc.LOW_RES_MASKS]
    assert (masks != NO_OBJECT).all() and masks.std() > 0  # real mask logits, different per pixel
    assert not np.array_equal(masks[0], masks[1])  # two objects with different memories
    # tracker_init's presence comes from its mask input: the empty second object stays absent
    assert objects_present(refs) == {gc.TRACKER_INIT: "1/2", gc.TRACKER_STEP: "2/2"}


def test_bias_is_recorded_in_the_source() -> None:
    assert random_checkpoint("tiny", object_score_bias=1.0).source["object_score_bias"] == 1.0
    assert "object_score_bias" not in random_checkpoint("tiny").source


def test_torch_backend_rebuilds_the_bias_of_a_random_export() -> None:
    """The torch backend rebuilds random exports from `model.source`: the bias must come back too."""
    from medsam3_export import torch_backend as tbk

    source = {"format": "random", "preset": "tiny", "seed": 0, "class": "Sam3VideoModel", "object_score_bias": 1.0}
    dims = model_dims(random_checkpoint("tiny"))  # checkpoint_for checks the rebuilt geometry against these
    man = type("M", (), {"model": {"source": source}, "dims": dims})()
    ckpt = tbk.checkpoint_for(man, None)  # type: ignore[arg-type]
    bias = ckpt.video.tracker_model.mask_decoder.pred_obj_score_head.proj_out.bias
    assert torch.all(bias == 1.0)
