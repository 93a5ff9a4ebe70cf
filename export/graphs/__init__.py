"""`torch.nn.Module` wrappers that cut a transformers SAM3 model into exportable graphs.

Each wrapper calls the original transformers modules with the original weights; where the
exporter needs a change (static spatial sizes for the DETR box bias, position encodings as
constants) it is applied around the original code, never by copying it. Tests compare
every wrapper with the unmodified transformers forward.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from medsam3_rt import graph_contract as gc

if TYPE_CHECKING:
    from ..checkpoint import LoadedCheckpoint


def build_graph_module(
    name: str, ckpt: LoadedCheckpoint, dims: gc.ModelDims, prompt_semantics: str | None = None, tracker_semantics: str = "meta"
) -> nn.Module:
    """The `nn.Module` whose forward is graph `name` of the contract, on the checkpoint's weights.

    The exporter exports these modules and the PyTorch backend runs them, so ONNX, TensorRT
    and PyTorch execute the same computation graph by graph. `prompt_semantics` (detector
    only): "meta" or "transformers"; None means the checkpoint's own (`ckpt.prompt_semantics`).
    `tracker_semantics` (tracker_init only): "meta" or "transformers" (medsam3_export.semantics).
    """
    from .detector import DetectorGraph
    from .image_backbone import ImageBackboneGraph
    from .text_encoder import TextEncoderGraph
    from .tracker import MemoryEncoderGraph, TrackerInitGraph, TrackerStepGraph

    if name == gc.TEXT_ENCODER:
        return TextEncoderGraph(ckpt.detector).eval()
    if name == gc.IMAGE_BACKBONE:
        return ImageBackboneGraph(ckpt.detector, ckpt.video if dims.has_tracker else None).eval()
    if name == gc.DETECTOR:
        return DetectorGraph(ckpt.detector, dims.feat_size, prompt_semantics or ckpt.prompt_semantics).eval()
    tracker_graphs = {gc.TRACKER_INIT: TrackerInitGraph, gc.TRACKER_STEP: TrackerStepGraph, gc.MEMORY_ENCODER: MemoryEncoderGraph}
    if name in tracker_graphs:
        if ckpt.video is None:
            raise KeyError(f"'{name}' needs a checkpoint with a tracker (Sam3VideoModel)")
        if name == gc.TRACKER_INIT:
            return TrackerInitGraph(ckpt.video, tracker_semantics).eval()
        return tracker_graphs[name](ckpt.video).eval()
    raise KeyError(f"no graph module for '{name}'")
