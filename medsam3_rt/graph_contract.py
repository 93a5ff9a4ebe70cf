"""The I/O contract of every exported graph, defined once.

The exporter writes these specs into `manifest.json`; the runtime (Python and C++) checks
the manifest and the ONNX/engine files against them at load time. Tensor names appear as
string literals only here. Symbolic axes use single letters:

    P  prompts in one detector batch        N  tracked objects in one tracker batch
    M  memory frames per object             K  object pointers per object
    B  images in one backbone call (exports made with a batch axis; older ones fix it to 1)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError, ManifestError

# -- graph names -------------------------------------------------------------------------
TEXT_ENCODER = "text_encoder"
IMAGE_BACKBONE = "image_backbone"
DETECTOR = "detector"
TRACKER_INIT = "tracker_init"
TRACKER_STEP = "tracker_step"
MEMORY_ENCODER = "memory_encoder"

DETECTOR_GRAPHS = (TEXT_ENCODER, IMAGE_BACKBONE, DETECTOR)
TRACKER_GRAPHS = (TRACKER_INIT, TRACKER_STEP, MEMORY_ENCODER)

# -- tensor names ------------------------------------------------------------------------
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
TEXT_FEATURES = "text_features"
TEXT_MASK = "text_mask"
PIXEL_VALUES = "pixel_values"
DET_FPN = ("det_fpn_0", "det_fpn_1", "det_fpn_2")
TRK_FEAT_S0 = "trk_feat_s0"
TRK_FEAT_S1 = "trk_feat_s1"
TRK_VISION_FEAT = "trk_vision_feat"
TRK_FEATURES = (TRK_FEAT_S0, TRK_FEAT_S1, TRK_VISION_FEAT)
PRED_LOGITS = "pred_logits"
PRED_BOXES = "pred_boxes"
PRESENCE_LOGITS = "presence_logits"
PRED_MASKS = "pred_masks"
SEMANTIC_SEG = "semantic_seg"
# tracker
MASKS = "masks"
BINARIZE = "binarize"
MEM_FEATS = "mem_feats"
MEM_TPOS = "mem_tpos"
MEM_VALID = "mem_valid"
OBJ_PTRS = "obj_ptrs"
PTR_TPOS = "ptr_tpos"
PTR_VALID = "ptr_valid"
LOW_RES_MASKS = "low_res_masks"
HIGH_RES_MASKS = "high_res_masks"
OBJECT_POINTER = "object_pointer"
OBJECT_SCORE_LOGITS = "object_score_logits"
IOU_SCORES = "iou_scores"
MASK_LOGITS = "mask_logits"
MASKMEM_FEATURES = "maskmem_features"

SUPPORTED_DTYPES = ("float32", "float16", "int64", "int32", "bool", "uint8")


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, numpy dtype name and shape (ints or axis letters)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> TensorSpec:
        try:
            name, dtype, shape = data["name"], data["dtype"], data["shape"]
        except (KeyError, TypeError):
            raise ManifestError(f"{where}: tensor entries need 'name', 'dtype' and 'shape'") from None
        if dtype not in SUPPORTED_DTYPES:
            raise ManifestError(f"{where}: tensor '{name}' has unsupported dtype '{dtype}'")
        if not isinstance(shape, list) or not all(isinstance(d, (int, str)) for d in shape):
            raise ManifestError(f"{where}: tensor '{name}' shape must be a list of ints and axis names")
        return cls(str(name), str(dtype), tuple(shape))


@dataclass(frozen=True)
class GraphSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    def check_feeds(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Reject missing/unknown names, wrong dtypes, ranks and static dims before a backend sees them."""
        missing = [n for n in self.input_names if n not in feeds]
        unknown = [n for n in feeds if n not in self.input_names]
        if missing or unknown:
            raise InputError(f"{self.name}: missing inputs {missing}, unexpected inputs {unknown}")
        axes: dict[str, int] = {}
        for spec in self.inputs:
            arr = feeds[spec.name]
            if str(arr.dtype) != spec.dtype:
                raise InputError(f"{self.name}: input '{spec.name}' is {arr.dtype}, the graph expects {spec.dtype}")
            if arr.ndim != len(spec.shape):
                raise InputError(f"{self.name}: input '{spec.name}' has shape {list(arr.shape)}, the graph expects {list(spec.shape)}")
            for got, want in zip(arr.shape, spec.shape):
                if (isinstance(want, int) and got != want) or (isinstance(want, str) and axes.setdefault(want, got) != got):
                    raise InputError(
                        f"{self.name}: input '{spec.name}' has shape {list(arr.shape)}, the graph expects "
                        f"{list(spec.shape)} (axes so far: {axes})"
                    )

    def to_json(self) -> dict[str, Any]:
        return {"inputs": [t.to_json() for t in self.inputs], "outputs": [t.to_json() for t in self.outputs]}


@dataclass(frozen=True)
class ModelDims:
    """The numbers that fix every graph's shapes; stored in the manifest as `dims`."""

    image_size: int
    patch_size: int
    fpn_channels: int
    text_context: int
    num_queries: int
    tracker_feat_s0_channels: int = 0
    tracker_feat_s1_channels: int = 0
    memory_channels: int = 0

    @property
    def feat_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def mask_size(self) -> int:
        """Side of the detector's and the tracker's low-resolution masks (4x the token grid)."""
        return 4 * self.feat_size

    @property
    def memory_mask_size(self) -> int:
        """Side of the masks the memory encoder reads (16x the token grid)."""
        return 4 * self.mask_size

    @property
    def has_tracker(self) -> bool:
        return self.memory_channels > 0

    def to_json(self) -> dict[str, int]:
        return {
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "fpn_channels": self.fpn_channels,
            "text_context": self.text_context,
            "num_queries": self.num_queries,
            "tracker_feat_s0_channels": self.tracker_feat_s0_channels,
            "tracker_feat_s1_channels": self.tracker_feat_s1_channels,
            "memory_channels": self.memory_channels,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelDims:
        try:
            dims = cls(**{k: int(data[k]) for k in cls.__dataclass_fields__ if k in data})
        except (TypeError, ValueError) as e:
            raise ManifestError(f"manifest 'dims' is malformed: {e}") from None
        if dims.image_size <= 0 or dims.patch_size <= 0 or dims.image_size % dims.patch_size:
            raise ManifestError(f"manifest 'dims': image_size {dims.image_size} must be a multiple of patch_size")
        return dims


def _f32(name: str, *shape: int | str) -> TensorSpec:
    return TensorSpec(name, "float32", tuple(shape))


def backbone_spec(dims: ModelDims, batch: int | str = 1) -> GraphSpec:
    """The image backbone's I/O with a fixed batch of 1 (the default) or the symbolic axis "B"."""
    spec = expected_specs(dims)[IMAGE_BACKBONE]
    if batch == 1:
        return spec
    return GraphSpec(
        IMAGE_BACKBONE,
        tuple(TensorSpec(t.name, t.dtype, (batch, *t.shape[1:])) for t in spec.inputs),
        tuple(TensorSpec(t.name, t.dtype, (batch, *t.shape[1:])) for t in spec.outputs),
    )


def image_batch_axis(spec: GraphSpec) -> bool:
    """True when the backbone takes several images per call (its leading axis is "B")."""
    return spec.name == IMAGE_BACKBONE and bool(spec.inputs) and spec.inputs[0].shape[0] == "B"


def expected_specs(dims: ModelDims) -> dict[str, GraphSpec]:
    """Every graph this runtime understands, for a model with these dimensions."""
    C, T, Q, S = dims.fpn_channels, dims.text_context, dims.num_queries, dims.image_size
    s = dims.feat_size
    fpn = (_f32(DET_FPN[0], 1, C, 4 * s, 4 * s), _f32(DET_FPN[1], 1, C, 2 * s, 2 * s), _f32(DET_FPN[2], 1, C, s, s))
    specs = {
        TEXT_ENCODER: GraphSpec(
            TEXT_ENCODER,
            (TensorSpec(INPUT_IDS, "int64", ("P", T)), TensorSpec(ATTENTION_MASK, "int64", ("P", T))),
            (_f32(TEXT_FEATURES, "P", T, C),),
        ),
        DETECTOR: GraphSpec(
            DETECTOR,
            (*fpn, _f32(TEXT_FEATURES, "P", T, C), TensorSpec(TEXT_MASK, "bool", ("P", T))),
            (
                _f32(PRED_LOGITS, "P", Q),
                _f32(PRED_BOXES, "P", Q, 4),
                _f32(PRESENCE_LOGITS, "P", 1),
                _f32(PRED_MASKS, "P", Q, 4 * s, 4 * s),
                _f32(SEMANTIC_SEG, "P", 1, 4 * s, 4 * s),
            ),
        ),
    }
    backbone_out = list(fpn)
    if dims.has_tracker:
        c0, c1, mem = dims.tracker_feat_s0_channels, dims.tracker_feat_s1_channels, dims.memory_channels
        trk = (_f32(TRK_FEAT_S0, 1, c0, 4 * s, 4 * s), _f32(TRK_FEAT_S1, 1, c1, 2 * s, 2 * s), _f32(TRK_VISION_FEAT, 1, C, s, s))
        backbone_out += trk
        m = dims.mask_size
        specs[TRACKER_INIT] = GraphSpec(
            TRACKER_INIT,
            (*trk, _f32(MASKS, "N", 1, m, m)),
            (_f32(LOW_RES_MASKS, "N", 1, m, m), _f32(OBJECT_POINTER, "N", C), _f32(OBJECT_SCORE_LOGITS, "N", 1)),
        )
        specs[TRACKER_STEP] = GraphSpec(
            TRACKER_STEP,
            (
                *trk,
                _f32(MEM_FEATS, "N", "M", s * s, mem),
                TensorSpec(MEM_TPOS, "int64", ("N", "M")),
                TensorSpec(MEM_VALID, "bool", ("N", "M")),
                _f32(OBJ_PTRS, "N", "K", C),
                _f32(PTR_TPOS, "N", "K"),
                TensorSpec(PTR_VALID, "bool", ("N", "K")),
            ),
            (
                _f32(LOW_RES_MASKS, "N", 1, m, m),
                _f32(IOU_SCORES, "N", 3),
                _f32(OBJECT_SCORE_LOGITS, "N", 1),
                _f32(OBJECT_POINTER, "N", C),
            ),
        )
        specs[MEMORY_ENCODER] = GraphSpec(
            MEMORY_ENCODER,
            (
                _f32(TRK_VISION_FEAT, 1, C, s, s),
                _f32(MASK_LOGITS, "N", 1, 4 * m, 4 * m),
                TensorSpec(BINARIZE, "bool", ("N", 1)),
                _f32(OBJECT_SCORE_LOGITS, "N", 1),
            ),
            (_f32(MASKMEM_FEATURES, "N", s * s, mem),),
        )
    specs[IMAGE_BACKBONE] = GraphSpec(IMAGE_BACKBONE, (_f32(PIXEL_VALUES, 1, 3, S, S),), tuple(backbone_out))
    return specs
