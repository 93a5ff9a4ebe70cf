"""Resolution presets: export a checkpoint at a lower input size than it was trained at (issue 17 item 4).

The ViT's work grows with the square of the token grid (and its global layers with the fourth
power), so 1008 -> 672 px cuts the backbone's FLOPs by more than half. What SAM3 needs at
another size, read from transformers' `Sam3ViTModel` and Meta's `vitdet`:

- absolute position embeddings are the pre-training table (e.g. 24 x 24 for 336 px) *tiled*
  over the grid, at any size: nothing to interpolate, the model does the same at 1008 px;
- windowed layers keep their window (e.g. 24 tokens) and its RoPE; a grid that the window does
  not divide is zero-padded to whole windows, as both implementations do, so those sizes work
  but the windowed layers then compute on the padded grid (less speed gained);
- global layers' axial RoPE is rescaled by the model to the new grid (positions x window/grid);
- the FPN sizes, the tracker's feature sizes, its memory-attention RoPE grid, its prompt
  encoder's image size and the video model's low-res mask size follow the grid.

Valid sizes: multiples of the patch size from one window's worth of tokens up to the
checkpoint's size. The model is rebuilt from the changed config and the checkpoint's weights
are loaded strictly (every buffer derived from a size is recomputed), so parity at export
compares the ONNX graphs with this resized PyTorch model.
"""

from __future__ import annotations

import copy
from typing import Any

from medsam3_rt.errors import UsageError

from .checkpoint import LoadedCheckpoint

__all__ = ["resize_checkpoint", "resolution_info", "valid_image_sizes"]


def _backbone(ckpt: LoadedCheckpoint) -> Any:
    return ckpt.detector.config.vision_config.backbone_config


def _scalar(v: Any) -> int:
    return int(v if isinstance(v, int) else v[0])


def valid_image_sizes(ckpt: LoadedCheckpoint) -> tuple[list[int], list[int]]:
    """(every valid export size, those whose token grid the attention window divides), ascending."""
    bb = _backbone(ckpt)
    patch, window, full = _scalar(bb.patch_size), int(bb.window_size), _scalar(bb.image_size)
    sizes = list(range(patch * max(window, 1), full + 1, patch))
    return sizes, [s for s in sizes if window <= 0 or (s // patch) % window == 0]


def resolution_info(ckpt: LoadedCheckpoint, checkpoint_size: int) -> dict[str, Any]:
    """What the manifest records under model.resolution: the export's size and the checkpoint's."""
    bb = _backbone(ckpt)
    patch, window, size = _scalar(bb.patch_size), int(bb.window_size), _scalar(bb.image_size)
    grid = size // patch
    padded = -(-grid // window) * window if window > 0 else grid
    return dict(
        image_size=size,
        checkpoint_image_size=checkpoint_size,
        token_grid=grid,
        window_size=window,
        window_padded_grid=padded,
        position_embeddings="pre-training table tiled over the grid (SAM3's own rule at any size)",
        rope="windowed layers: unchanged window; global layers: rescaled to the grid by the model",
    )


def _check(ckpt: LoadedCheckpoint, size: int) -> None:
    full = _scalar(_backbone(ckpt).image_size)
    sizes, unpadded = valid_image_sizes(ckpt)
    if size not in sizes:
        patch = _scalar(_backbone(ckpt).patch_size)
        raise UsageError(
            f"--image-size {size} is not valid for this checkpoint ({full} px, patch {patch}): use a multiple of {patch} "
            f"from {sizes[0]} to {full}; without window padding: {', '.join(map(str, unpadded))}"
        )


def _set_vision(vision: Any, size: int, grid: int) -> None:
    vision.backbone_config.image_size = size
    vision.backbone_feature_sizes = [[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]]


def resize_checkpoint(ckpt: LoadedCheckpoint, size: int) -> LoadedCheckpoint:
    """The same weights as a model for `size` px inputs (a new model; `ckpt` is left as it was)."""
    _check(ckpt, size)
    if size == _scalar(_backbone(ckpt).image_size):
        return ckpt
    grid = size // _scalar(_backbone(ckpt).patch_size)
    model = ckpt.video if ckpt.video is not None else ckpt.detector
    cfg = copy.deepcopy(model.config)
    if ckpt.video is not None:
        _set_vision(cfg.detector_config.vision_config, size, grid)
        trk = cfg.tracker_config
        if getattr(trk, "vision_config", None) is not None:
            _set_vision(trk.vision_config, size, grid)
        trk.image_size = size
        trk.prompt_encoder_config.image_size = size
        trk.memory_attention_rope_feat_sizes = [grid, grid]
        cfg.low_res_mask_size = 4 * grid
    else:
        _set_vision(cfg.vision_config, size, grid)
    new = type(model)(cfg)
    new.load_state_dict(model.state_dict(), strict=True)
    new.eval()
    new.to(next(model.parameters()).dtype)
    detector = new.detector_model if ckpt.video is not None else new
    video = new if ckpt.video is not None else None
    return LoadedCheckpoint(detector=detector, video=video, source=ckpt.source, trained_semantics=ckpt.trained_semantics)
