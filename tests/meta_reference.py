"""Meta's own SAM3 code (`sam3` on PyPI) as a test reference, run on CPU without editing it.

The CPU harness (`cpu_only()`: Meta's hard-coded CUDA calls redirected from outside) and the
builders at a given geometry live in `medsam3_export.meta_code`, which `export
--parity-reference meta` uses too; this module adds the tests' random model.

`build_meta_video_model()` builds a random model with Meta's own `build_sam3_video_model` at
Meta's 1008-px geometry; only the ViT and the text encoder are narrowed (`_create_vit_backbone`
and `_create_text_encoder` are replaced by copies with smaller widths/depths for the duration
of the build). Meta leaves the text encoder's `positional_embedding` and `text_projection` as
`torch.empty`; they are initialised as open_clip does, and the detector's query scoring is
sharpened (`HS_PROJ_GAIN`) so that a threshold separates queries. `meta_geometry()` is the same geometry as
a transformers `config.json` for `medsam3-rt export sam3.pt --config`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from medsam3_export.meta_code import BPE, MetaGeometry, cpu_only, load_meta_image_model, meta_builder_at, meta_unavailable_reason

__all__ = ["BPE", "GEOMETRY", "TIMINGS", "build_meta_video_model", "cpu_only", "load_meta_image_model", "meta_available"]

# Seconds spent building and exporting Meta's model in this session (printed by the tests).
TIMINGS: dict[str, float] = {}

# The narrowed parts (everything else is Meta's builder as released).
VIT = {"embed_dim": 96, "depth": 2, "num_heads": 2, "global_att_blocks": (1,)}
TEXT = {"width": 64, "heads": 2, "layers": 2}


GEOMETRY = MetaGeometry({**VIT, "mlp_ratio": 4.625}, TEXT)


def meta_available() -> str | None:
    """None when Meta's `sam3` package imports here, else the reason it does not."""
    return meta_unavailable_reason()


# Meta's random initialisation gives all 200 queries the same detection score (to 3 decimals: the
# presence head and the clamped dot-product saturate), so any threshold keeps none or all of them.
# The query projection of the dot-product scoring is scaled up so that queries on a textured frame
# score differently and a threshold picks a few: detections that come and go in the video test.
HS_PROJ_GAIN = 30.0


def _init_empty(model: torch.nn.Module, seed: int) -> None:
    """Deterministic values for the parameters Meta's builder leaves as `torch.empty` (open_clip's init)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("language_backbone.encoder.positional_embedding"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.01)
            elif name.endswith("language_backbone.encoder.text_projection"):
                p.copy_(torch.randn(p.shape, generator=g) * p.shape[0] ** -0.5)


def build_meta_video_model(seed: int = 0) -> torch.nn.Module:
    """Meta's `build_sam3_video_model` (detector + tracker, 1008 px) with a narrow ViT and text encoder."""
    torch.manual_seed(seed)
    with meta_builder_at(GEOMETRY) as mb, cpu_only():
        model = mb.build_sam3_video_model(checkpoint_path=None, load_from_HF=False, bpe_path=str(BPE), device="cpu")
    _init_empty(model, seed)
    with torch.no_grad():
        model.detector.dot_prod_scoring.hs_proj.weight.mul_(HS_PROJ_GAIN)
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all() or p.abs().max() > 1e6]
    assert not bad, f"uninitialised parameters in Meta's build: {bad[:5]}"
    return model.eval()


def meta_geometry() -> dict[str, Any]:
    """The transformers `Sam3VideoConfig` (as config.json content) of `build_meta_video_model`."""
    from medsam3_export.presets import PRESETS

    width, layers, heads = TEXT["width"], TEXT["layers"], TEXT["heads"]
    preset = dataclasses.replace(
        PRESETS["full"],
        name="meta-narrow",
        vit_hidden=VIT["embed_dim"],
        vit_layers=VIT["depth"],
        vit_heads=VIT["num_heads"],
        vit_mlp=int(VIT["embed_dim"] * 4.625),
        global_attn_indexes=VIT["global_att_blocks"],
        text_hidden=width,
        text_layers=layers,
        text_heads=heads,
        text_mlp=4 * width,
    )
    cfg = preset.video_config().to_dict()
    cfg["detector_config"]["text_config"]["projection_dim"] = 512  # Meta's TextTransformer output_dim
    cfg["model_type"] = "sam3_video"
    return cfg


def write_geometry(path: Path) -> Path:
    path.write_text(json.dumps(meta_geometry()))
    return path
