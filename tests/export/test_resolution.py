"""Resolution presets (issue 17 item 4): `medsam3-rt export --image-size N` below the checkpoint's size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import cli, phantom

import medsam3_rt

pytest.importorskip("transformers", reason="export needs the export extra")


@pytest.fixture(scope="module")
def export_112(tiny_hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("res") / "tiny-112"
    cli("export", str(tiny_hf_dir), "--output", str(out), "--image-size", "112", "--quiet", check=True)
    return out


def test_manifest_records_the_export_and_the_checkpoint_size(export_112: Path) -> None:
    m = json.loads((export_112 / "manifest.json").read_text())
    assert m["dims"]["image_size"] == 112 and m["preprocess"]["image_size"] == [112, 112]
    res = m["model"]["resolution"]
    assert res["image_size"] == 112 and res["checkpoint_image_size"] == 224 and res["token_grid"] == 8
    assert m["parity"]["passed"]  # the ONNX graphs at 112 px against the resized PyTorch model
    assert m["graphs"]["image_backbone"]["inputs"][0]["shape"] == [1, 3, 112, 112]
    assert m["graphs"]["detector"]["outputs"][3]["shape"][-1] == 32  # masks at 4x the 8-token grid


def test_the_smaller_export_segments_at_the_input_resolution(export_112: Path) -> None:
    with medsam3_rt.load(export_112, "ort-cpu") as seg:
        res = seg.segment(phantom(90, 130), ["liver"])
    assert res.label_map.shape == (90, 130) and res.scores.shape == (1,)


@pytest.mark.parametrize("size", ["150", "238", "98"])
def test_invalid_sizes_are_one_line_errors_listing_the_valid_ones(tiny_hf_dir: Path, tmp_path: Path, size: str) -> None:
    proc = cli("export", str(tiny_hf_dir), "--output", str(tmp_path / "x"), "--image-size", size, "--quiet")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--image-size {size}" in lines[0] and "112, 224" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()


def test_resizing_rebuilds_every_size_dependent_piece(tiny_hf_dir: Path) -> None:
    """Global layers' RoPE follows the new grid, windowed layers keep theirs; weights are the checkpoint's."""
    import torch
    from medsam3_export import load_checkpoint
    from medsam3_export.resolution import resize_checkpoint, valid_image_sizes

    ckpt = load_checkpoint(tiny_hf_dir)
    assert valid_image_sizes(ckpt) == (list(range(112, 225, 14)), [112, 224])
    assert resize_checkpoint(ckpt, 224) is ckpt
    small = resize_checkpoint(ckpt, 168)
    vit_small, vit_full = small.detector.vision_encoder.backbone, ckpt.detector.vision_encoder.backbone
    for ls, lf in zip(vit_small.layers, vit_full.layers, strict=True):
        if lf.window_size > 0:
            assert torch.equal(ls.position_ids, lf.position_ids)
        else:  # 12 x 12 positions spread over the same span as the 16 x 16 grid's
            assert ls.position_ids.shape == (144, 2) and lf.position_ids.shape == (256, 2)
            assert torch.allclose(ls.position_ids.max(), lf.position_ids.max(), atol=1.0)
    full_sd, small_sd = ckpt.detector.state_dict(), small.detector.state_dict()
    assert full_sd.keys() == small_sd.keys() and all(torch.equal(full_sd[k], small_sd[k]) for k in full_sd)
    assert ckpt.detector.config.vision_config.backbone_config.image_size == 224  # the source is left as it was
    out = small.detector.get_vision_features(pixel_values=torch.zeros(1, 3, 168, 168))
    assert [tuple(f.shape[-2:]) for f in out.fpn_hidden_states[:3]] == [(48, 48), (24, 24), (12, 12)]
