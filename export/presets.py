"""Named SAM3 geometries shared by export, tests and benchmarks.

`tiny` keeps CI fast while exercising every code path of the real architecture (windowed
and global ViT attention, position-embedding tiling, multi-head DETR, object pointers split
into two memory tokens in the tracker; transformers' tracker hard-codes 64-wide memories).
`small` is a mid-size config that runs in about a second per frame on a 2-core CPU.
`full` is the real SAM3 geometry (1008 px, ~860 M parameters with the tracker).
`demo` is the bundled demo model's geometry (`training/recipes/demo_brain.py`).
`tiny-litetext` is `tiny` with SAM3-LiteText's MobileCLIP text encoder (RepMixer blocks around
a transformer layer, 16-token context); LiteText is an image model, so it has no tracker.
Weights are random unless a checkpoint is given; the presets only fix the shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    image_size: int
    vit_hidden: int
    vit_layers: int
    vit_heads: int
    vit_mlp: int
    window_size: int
    global_attn_indexes: tuple[int, ...]
    pretrain_image_size: int
    fpn_hidden: int
    text_hidden: int
    text_layers: int
    text_heads: int
    text_mlp: int
    detr_layers: int
    detr_heads: int
    detr_ffn: int
    num_queries: int
    geometry_layers: int
    memory_attention_layers: int
    memory_dim: int
    tracker_mlp: int
    # "clip": SAM3's CLIP text encoder; "mobileclip": SAM3-LiteText's (transformers `sam3_lite_text`)
    text_model: str = "clip"
    text_context: int = 32

    @property
    def has_video(self) -> bool:
        """transformers has a video model (detector + tracker) for SAM3 only, not for SAM3-LiteText."""
        return self.text_model == "clip"

    def detector_config_dict(self) -> dict[str, Any]:
        """Keyword arguments for `transformers.Sam3Config`."""
        s = self.image_size // 14
        return {
            "vision_config": {
                "backbone_config": {
                    "model_type": "sam3_vit_model",
                    "hidden_size": self.vit_hidden,
                    "intermediate_size": self.vit_mlp,
                    "num_hidden_layers": self.vit_layers,
                    "num_attention_heads": self.vit_heads,
                    "image_size": self.image_size,
                    "patch_size": 14,
                    "window_size": self.window_size,
                    "global_attn_indexes": list(self.global_attn_indexes),
                    "pretrain_image_size": self.pretrain_image_size,
                },
                "fpn_hidden_size": self.fpn_hidden,
                "backbone_feature_sizes": [[4 * s, 4 * s], [2 * s, 2 * s], [s, s]],
            },
            "text_config": self._text_config_dict(),
            "geometry_encoder_config": {
                "hidden_size": self.fpn_hidden,
                "num_layers": self.geometry_layers,
                "num_attention_heads": self.detr_heads,
                "intermediate_size": self.detr_ffn,
            },
            "detr_encoder_config": {
                "hidden_size": self.fpn_hidden,
                "num_layers": self.detr_layers,
                "num_attention_heads": self.detr_heads,
                "intermediate_size": self.detr_ffn,
            },
            "detr_decoder_config": {
                "hidden_size": self.fpn_hidden,
                "num_layers": self.detr_layers,
                "num_queries": self.num_queries,
                "num_attention_heads": self.detr_heads,
                "intermediate_size": self.detr_ffn,
            },
            "mask_decoder_config": {
                "hidden_size": self.fpn_hidden,
                "num_attention_heads": self.detr_heads,
            },
        }

    def _text_config_dict(self) -> dict[str, Any]:
        text = {
            "vocab_size": 49408,
            "hidden_size": self.text_hidden,
            "intermediate_size": self.text_mlp,
            "projection_dim": min(512, self.text_hidden),
            "num_hidden_layers": self.text_layers,
            "num_attention_heads": self.text_heads,
            "max_position_embeddings": self.text_context,
            "hidden_act": "gelu",
        }
        if self.text_model == "mobileclip":
            return {**text, "model_type": "sam3_lite_text_text_model", "use_repmixer_blocks": True}
        return {**text, "model_type": "clip_text_model"}

    def tracker_config_dict(self) -> dict[str, Any]:
        """Keyword arguments for `transformers.Sam3TrackerVideoConfig` (tracker inside Sam3VideoModel)."""
        s = self.image_size // 14
        det = self.detector_config_dict()
        return {
            "vision_config": {**det["vision_config"], "model_type": "sam3_vision_model"},
            "prompt_encoder_config": {"hidden_size": self.fpn_hidden, "image_size": self.image_size, "patch_size": 14},
            "mask_decoder_config": {
                "hidden_size": self.fpn_hidden,
                "mlp_dim": self.tracker_mlp,
                "iou_head_hidden_dim": self.fpn_hidden,
            },
            "image_size": self.image_size,
            "memory_attention_hidden_size": self.fpn_hidden,
            "memory_attention_num_layers": self.memory_attention_layers,
            "memory_attention_feed_forward_hidden_size": self.tracker_mlp,
            "memory_attention_rope_feat_sizes": [s, s],
            "memory_encoder_hidden_size": self.fpn_hidden,
            "memory_encoder_output_channels": self.memory_dim,
            "mask_downsampler_embed_dim": self.fpn_hidden,
            "memory_fuser_embed_dim": self.fpn_hidden,
            "memory_fuser_intermediate_dim": 4 * self.fpn_hidden,
        }

    def detector_config(self):  # -> transformers.Sam3Config or Sam3LiteTextConfig
        if self.text_model == "mobileclip":
            from transformers import Sam3LiteTextConfig

            return Sam3LiteTextConfig(**self.detector_config_dict())
        from transformers import Sam3Config

        return Sam3Config(**self.detector_config_dict())

    def video_config(self):  # -> transformers.Sam3VideoConfig
        from transformers import Sam3VideoConfig

        if not self.has_video:
            from medsam3_rt.errors import UsageError

            raise UsageError(f"preset '{self.name}' is a SAM3-LiteText image model; transformers has no video (tracker) model for it")

        return Sam3VideoConfig(
            detector_config={"model_type": "sam3", **self.detector_config_dict()},
            tracker_config={"model_type": "sam3_tracker_video", **self.tracker_config_dict()},
        )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="tiny",
            description="CI-sized random SAM3 (224 px, 2-layer ViT); every code path, milliseconds per frame",
            image_size=224,
            vit_hidden=64,
            vit_layers=2,
            vit_heads=2,
            vit_mlp=128,
            window_size=8,
            global_attn_indexes=(1,),
            pretrain_image_size=112,
            fpn_hidden=128,
            text_hidden=32,
            text_layers=2,
            text_heads=2,
            text_mlp=64,
            detr_layers=2,
            detr_heads=2,
            detr_ffn=128,
            num_queries=20,
            geometry_layers=1,
            memory_attention_layers=2,
            memory_dim=64,
            tracker_mlp=128,
        ),
        Preset(
            name="demo",
            description=(
                "the bundled demo model's geometry (224 px, 4-layer 128-wide ViT, 64-wide DETR, 32-wide CLIP text): "
                "trainable from scratch in about an hour on 2 CPU cores, 15 MB of fp32 weights"
            ),
            image_size=224,
            vit_hidden=128,
            vit_layers=4,
            vit_heads=4,
            vit_mlp=512,
            window_size=8,
            global_attn_indexes=(1, 3),
            pretrain_image_size=224,
            fpn_hidden=64,
            text_hidden=32,
            text_layers=2,
            text_heads=2,
            text_mlp=64,
            detr_layers=3,
            detr_heads=4,
            detr_ffn=256,
            num_queries=20,
            geometry_layers=1,
            memory_attention_layers=2,
            memory_dim=64,
            tracker_mlp=128,
        ),
        Preset(
            name="small",
            description="mid-size SAM3 (504 px, 12-layer 384-wide ViT, default DETR); about a second per frame on 2 CPU cores",
            image_size=504,
            vit_hidden=384,
            vit_layers=12,
            vit_heads=6,
            vit_mlp=1536,
            window_size=12,
            global_attn_indexes=(3, 7, 11),
            pretrain_image_size=168,
            fpn_hidden=256,
            text_hidden=512,
            text_layers=6,
            text_heads=8,
            text_mlp=2048,
            detr_layers=6,
            detr_heads=8,
            detr_ffn=2048,
            num_queries=200,
            geometry_layers=3,
            memory_attention_layers=4,
            memory_dim=64,
            tracker_mlp=2048,
        ),
        Preset(
            name="full",
            description="the real SAM3 geometry (1008 px, 32-layer 1024-wide ViT, 24-layer CLIP text)",
            image_size=1008,
            vit_hidden=1024,
            vit_layers=32,
            vit_heads=16,
            vit_mlp=4736,
            window_size=24,
            global_attn_indexes=(7, 15, 23, 31),
            pretrain_image_size=336,
            fpn_hidden=256,
            text_hidden=1024,
            text_layers=24,
            text_heads=16,
            text_mlp=4096,
            detr_layers=6,
            detr_heads=8,
            detr_ffn=2048,
            num_queries=200,
            geometry_layers=3,
            memory_attention_layers=4,
            memory_dim=64,
            tracker_mlp=2048,
        ),
    )
}
# SAM3-LiteText: the tiny geometry with a MobileCLIP text encoder; an image model (no tracker).
PRESETS["tiny-litetext"] = replace(
    PRESETS["tiny"],
    name="tiny-litetext",
    description=(
        "CI-sized random SAM3-LiteText: the tiny geometry with a MobileCLIP text encoder "
        "(RepMixer, transformer, RepMixer; 16-token context); image model, no tracker"
    ),
    text_layers=3,
    text_model="mobileclip",
    text_context=16,
)


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        from medsam3_rt.errors import UsageError

        raise UsageError(f"unknown preset '{name}'; choose one of: {', '.join(PRESETS)}") from None
