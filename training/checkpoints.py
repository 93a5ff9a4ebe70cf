"""Checkpoints: Hugging Face directories that `medsam3-rt export` takes as they are.

A run folder holds

    last/   the latest state: config.json + model.safetensors (+ the source checkpoint's
            tokenizer files) + trainer_state.pt (optimizer, scheduler, RNG states, data
            position) for an exact `--resume`
    best/   the weights with the best mean validation Dice so far (no optimizer state)
    split.json, config.yaml, metrics.csv, validation.jsonl

Both checkpoint folders also carry `training.json` (epoch, step, validation metrics) and a
copy of `split.json`, so `medsam3-rt eval` knows which samples were held out. A checkpoint
whose source was a `Sam3VideoModel` is saved as a `Sam3VideoModel`: the fine-tuned detector
with the source's tracker, so the result still streams. Every folder is written under a
temporary name and renamed into place when complete (a crash never leaves a half-written
checkpoint, and the previous one stays until the new one is whole).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsam3_rt.errors import CheckpointError
from medsam3_rt.io.atomic import atomic_directory, atomic_write_text

TRAINER_STATE = "trainer_state.pt"
TRAINING_INFO = "training.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state(legacy=True)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(
    path: Path,
    model: Any,  # medsam3_export.LoadedCheckpoint
    *,
    info: dict[str, Any],
    split_json: Path | None = None,
    tokenizer_dir: Path | None = None,
    trainer_state: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint folder atomically (replacing the previous one when complete)."""
    with atomic_directory(path, overwrite=True) as stage:
        _write(stage, model, info, split_json, tokenizer_dir, trainer_state)


def _write(stage: Path, model: Any, info: dict[str, Any], split_json: Path | None, tokenizer_dir: Path | None, trainer_state: Any) -> None:
    (model.video or model.detector).save_pretrained(stage, safe_serialization=True)
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            if (tokenizer_dir / name).is_file():
                shutil.copy2(tokenizer_dir / name, stage / name)
    if split_json is not None and split_json.is_file():
        shutil.copy2(split_json, stage / split_json.name)
    atomic_write_text(stage / TRAINING_INFO, json.dumps(info, indent=1, default=str))
    if trainer_state is not None:
        torch.save(trainer_state, stage / TRAINER_STATE)


def read_trainer_state(path: Path) -> dict[str, Any]:
    f = Path(path) / TRAINER_STATE
    if not f.is_file():
        raise CheckpointError(f"'{path}' has no {TRAINER_STATE}; --resume needs the run's last/ checkpoint")
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"cannot read {f} ({type(e).__name__}); the checkpoint is damaged, resume from an earlier copy") from None


def read_info(path: Path) -> dict[str, Any]:
    f = Path(path) / TRAINING_INFO
    if not f.is_file():
        return {}
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
