"""Checkpoint loading: Hugging Face directories and Meta's original sam3.pt layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from medsam3_rt.errors import CheckpointError

ORIGINAL_PREFIXES = (
    "backbone.vision_backbone.trunk.",
    "backbone.vision_backbone.convs.",
    "backbone.language_backbone.encoder.",
    "backbone.language_backbone.resizer.",
    "geometry_encoder.",
    "transformer.encoder.layers.",
    "transformer.decoder.",
    "dot_prod_scoring.",
    "segmentation_head.",
)


def _original_layout(detector: torch.nn.Module) -> dict[str, torch.Tensor]:
    from medsam3_export.sam3_layout import detector_from_hf

    return {f"detector.{k}": v.clone() for k, v in detector_from_hf(detector.state_dict()).items()}


def test_hf_directory_loads_complete(tiny_hf_dir: Path, tiny_reference) -> None:
    from medsam3_export import load_checkpoint

    ckpt = load_checkpoint(tiny_hf_dir)
    assert ckpt.video is None and ckpt.source["format"] == "hf" and len(ckpt.source["sha256"]) == 64
    for k, v in tiny_reference.state_dict().items():
        assert torch.equal(v, ckpt.detector.state_dict()[k]), k


@pytest.mark.parametrize("wrapper", [None, "model", "state_dict"])
def test_original_sam3_pt_layout(tmp_path: Path, tiny_reference, wrapper: str | None) -> None:
    from medsam3_export import load_checkpoint

    state = _original_layout(tiny_reference)
    assert all(k.removeprefix("detector.").startswith(ORIGINAL_PREFIXES) for k in state), "writer uses unknown key names"
    assert any(".attn.qkv." in k for k in state) and any(".in_proj_weight" in k for k in state)
    pos = state["detector.backbone.vision_backbone.trunk.pos_embed"]
    assert pos.shape[1] == 64 + 1  # 8x8 pretrain grid plus the class token
    path = tmp_path / "sam3.pt"
    torch.save({wrapper: state} if wrapper else state, path)
    ckpt = load_checkpoint(path, config="tiny")
    assert ckpt.source["format"] == "sam3.pt"
    got = ckpt.detector.state_dict()
    for k, v in tiny_reference.state_dict().items():
        assert torch.equal(v, got[k]), k


def test_original_layout_errors(tmp_path: Path, tiny_reference) -> None:
    from medsam3_export import load_checkpoint

    state = _original_layout(tiny_reference)
    state.pop("detector.transformer.decoder.query_embed.weight")
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"1 missing \(e.g. detr_decoder.query_embed.weight\)"):
        load_checkpoint(tmp_path / "partial.pt", config="tiny")
    full = _original_layout(tiny_reference)
    torch.save(full, tmp_path / "full.pt")
    with pytest.raises(CheckpointError, match="of another shape|missing"):
        load_checkpoint(tmp_path / "full.pt")  # default geometry is the full SAM3, not tiny


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"\x00garbage" * 10, "cannot read"), (b"", "cannot read")],
)
def test_unreadable_files(tmp_path: Path, content: bytes, message: str) -> None:
    from medsam3_export import load_checkpoint

    (tmp_path / "bad.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "bad.pt")


def test_not_a_state_dict(tmp_path: Path) -> None:
    from medsam3_export import load_checkpoint

    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="state dict of tensors"):
        load_checkpoint(tmp_path / "list.pt")


def test_directory_errors(tmp_path: Path, tiny_hf_dir: Path) -> None:
    from medsam3_export import load_checkpoint

    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(tmp_path)
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="'bert' model"):
        load_checkpoint(other)
    no_weights = tmp_path / "noweights"
    no_weights.mkdir()
    shutil.copy(tiny_hf_dir / "config.json", no_weights)
    with pytest.raises(CheckpointError, match="no \\*.safetensors"):
        load_checkpoint(no_weights)
    with pytest.raises(CheckpointError, match="has its own config.json"):
        load_checkpoint(tiny_hf_dir, config="tiny")


SAM2_TRACKER_PREFIXES = (
    "sam_mask_decoder.",
    "sam_prompt_encoder.",
    "transformer.encoder.",
    "maskmem_backbone.",
    "obj_ptr_proj.",
    "obj_ptr_tpos_proj.",
    "mask_downsample.",
    "maskmem_tpos_enc",
    "no_mem_embed",
    "no_mem_pos_enc",
    "no_obj_ptr",
    "no_obj_embed_spatial",
)


def test_original_sam3_pt_with_tracker(tmp_path: Path) -> None:
    """A sam3.pt holding detector.* and tracker.* keys loads into a Sam3VideoModel (detector + tracker + tracker neck)."""
    from medsam3_export import load_checkpoint, random_checkpoint
    from medsam3_export.sam3_layout import detector_from_hf, tracker_from_hf

    video = random_checkpoint("tiny", video=True, seed=2).video
    trk = video.tracker_model
    with torch.no_grad():  # converted checkpoints hold one gaussian matrix; transformers copies it into both places
        trk.shared_image_embedding.positional_embedding.copy_(trk.prompt_encoder.shared_embedding.positional_embedding)
    state = video.state_dict()
    tracker, neck = tracker_from_hf(state)
    assert all(k.startswith(SAM2_TRACKER_PREFIXES) for k in tracker), sorted(k for k in tracker if not k.startswith(SAM2_TRACKER_PREFIXES))
    assert all(k.startswith("backbone.vision_backbone.sam2_convs.") for k in neck)
    detector = detector_from_hf({k.removeprefix("detector_model."): v for k, v in state.items() if k.startswith("detector_model.")})
    full = {**{f"detector.{k}": v for k, v in {**detector, **neck}.items()}, **{f"tracker.{k}": v for k, v in tracker.items()}}
    torch.save({"model": full}, tmp_path / "sam3.pt")
    loaded = load_checkpoint(tmp_path / "sam3.pt", config="tiny")
    assert loaded.video is not None and loaded.source["class"] == "Sam3VideoModel"
    got = loaded.video.state_dict()
    for k, v in state.items():
        assert torch.equal(v, got[k]), k
    del full["tracker.sam_mask_decoder.iou_token.weight"]
    torch.save(full, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="tracker"):
        load_checkpoint(tmp_path / "partial.pt", config="tiny")
