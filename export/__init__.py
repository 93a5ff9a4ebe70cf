"""medsam3_export: SAM3 checkpoint -> ONNX graphs + manifest (needs the `export` extra: torch, transformers, onnx)."""

from .checkpoint import LoadedCheckpoint, load_checkpoint, random_checkpoint
from .exporter import ExportOptions, export_model
from .parity import Tolerance
from .presets import PRESETS, Preset, get_preset

__all__ = [
    "PRESETS",
    "ExportOptions",
    "LoadedCheckpoint",
    "Preset",
    "Tolerance",
    "export_model",
    "get_preset",
    "load_checkpoint",
    "random_checkpoint",
]
