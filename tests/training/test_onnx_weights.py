"""A detector's PyTorch weights read back from its ONNX export (training/onnx_weights.py, issue 16).

The bundled demo model ships as ONNX only; `demo_brain recover` rebuilds its torch checkpoint
this way. Here on the tiny preset: the export of a known checkpoint is recovered into a
differently initialised model, and every parameter the graphs hold comes back exactly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")


def test_recovered_weights_equal_the_exported_checkpoints(tmp_path: Path) -> None:
    from medsam3_export import ExportOptions, LoadedCheckpoint, export_model, random_checkpoint
    from medsam3_training.onnx_weights import distinct_weights, recover_state_dict

    # a "trained" checkpoint: no two tensors alike (the exporter merges equal initializers, which a
    # fresh initialisation has in every LayerNorm; trained weights do not)
    trained = distinct_weights(random_checkpoint("tiny", video=False, seed=0).detector, seed=3)
    opts = ExportOptions(overwrite=True)
    export_model(LoadedCheckpoint(trained, None, {"format": "random"}), tmp_path / "target", options=opts)
    other = random_checkpoint("tiny", video=False, seed=1, init_std=0.05).detector  # not the exported weights
    reference = distinct_weights(other)
    export_model(LoadedCheckpoint(reference, None, {"format": "random"}), tmp_path / "ref", options=opts)
    state, rec = recover_state_dict(reference, tmp_path / "ref", tmp_path / "target", other.state_dict())

    truth = trained.state_dict()
    assert len(rec.sources) > 100
    for key in rec.sources:  # every parameter a graph holds: exactly the exported checkpoint's
        assert torch.equal(state[key], truth[key]), key
    for key in rec.missing:  # the rest (modules a text-prompted detector never runs) keep the base values
        assert torch.equal(state[key], other.state_dict()[key]), key
    assert any(k.startswith("geometry_encoder.") for k in rec.missing)
    assert not any(k.startswith("vision_encoder.backbone.layers.") for k in rec.missing)


def test_graphs_of_another_model_are_refused(tiny_export: Path, tmp_path: Path) -> None:
    """Initializers that do not line up with the reference's (another architecture or exporter) are one clear error."""
    import shutil

    from medsam3_training.onnx_weights import recover_state_dict

    from medsam3_rt.errors import InputError

    other = tmp_path / "other"
    shutil.copytree(tiny_export, other)
    shutil.copy2(tiny_export / "text_encoder.onnx", other / "image_backbone.onnx")  # not the graph the names expect
    with pytest.raises(InputError, match="image_backbone.onnx: the reference export's initializers differ"):
        recover_state_dict(torch.nn.Linear(1, 1), tiny_export, other, {})
