"""medsam3_export: SAM3 checkpoint -> ONNX graphs + manifest (needs the `export` extra: torch, transformers, onnx).

Attributes are imported lazily (PEP 562) so that `medsam3_export.commands`, which the
`medsam3-rt` CLI loads to list its commands, does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "PRESETS": "presets",
    "Preset": "presets",
    "get_preset": "presets",
    "LoadedCheckpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "random_checkpoint": "checkpoint",
    "ExportOptions": "exporter",
    "export_model": "exporter",
    "Tolerance": "parity",
}

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

if TYPE_CHECKING:
    from .checkpoint import LoadedCheckpoint, load_checkpoint, random_checkpoint
    from .exporter import ExportOptions, export_model
    from .parity import Tolerance
    from .presets import PRESETS, Preset, get_preset


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
