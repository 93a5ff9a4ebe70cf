"""medsam3_training: the Medical SAM3 fine-tuning recipe, evaluation, and checkpoints `export` takes.

    from medsam3_training import load_config, train
    result = train(load_config("train.yaml"))        # or: medsam3-rt train --config train.yaml

Training needs the `train` extra (torch, transformers, scipy, pyyaml). Attributes are
imported lazily, so evaluating an export directory (`medsam3-rt eval`) needs only the runtime.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "config",
    "ConfigError": "config",
    "load_config": "config",
    "from_dict": "config",
    "default_yaml": "config",
    "train": "trainer",
    "Trainer": "trainer",
    "TrainResult": "trainer",
    "evaluate": "evaluate",
    "TorchPredictor": "evaluate",
    "RuntimePredictor": "evaluate",
    "write_report": "evaluate",
    "TrackerTrainConfig": "tracker_config",
    "load_tracker_config": "tracker_config",
    "train_tracker": "tracker_trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
