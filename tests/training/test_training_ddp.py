"""DDP through torchrun: two CPU processes (gloo) train a few steps and their replicas stay identical."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from training_datasets import folders_dataset

torch = pytest.importorskip("torch")
pytest.importorskip("scipy")
pytest.importorskip("yaml")

WORKER = """
import hashlib, json, os, sys
import torch
from medsam3_training.config import load_config
from medsam3_training.trainer import train

def digest(module):
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode()); h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()

cfg = load_config(sys.argv[1])
result = train(cfg)
rank = int(os.environ["RANK"])
json.dump({"rank": rank, "world": int(os.environ["WORLD_SIZE"]), "digest": digest(result.model.detector), "steps": result.steps},
          open(os.path.join(sys.argv[2], f"rank{rank}.json"), "w"))
"""


def test_two_gloo_processes_stay_identical(tmp_path: Path) -> None:
    data = folders_dataset(tmp_path / "discs", n=8)
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(
        "output_dir: run\n"
        "model: {random: {preset: tiny, overrides: {image_size: 56, fpn_hidden: 32, vit_hidden: 32, vit_mlp: 64, detr_ffn: 64, "
        "num_queries: 8}, seed: 0}}\n"
        f"data: {{datasets: [{{path: {data}}}], num_workers: 0}}\n"
        "train: {epochs: 2, max_steps: 4, batch_size: 2, log_every: 1, device: cpu}\n"
        "optim: {warmup_steps: 1, decay_timescale: 4}\n"
    )
    (tmp_path / "worker.py").write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            str(tmp_path / "worker.py"),
            str(cfg),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2] and [r["steps"] for r in ranks] == [4, 4]
    assert ranks[0]["digest"] == ranks[1]["digest"], "DDP replicas diverged"

    # the replicas trained (not the initialisation) and rank 0 saved exactly them
    from medsam3_training.config import RandomModelConfig
    from medsam3_training.model import random_model
    from safetensors.torch import load_file

    overrides = {"image_size": 56, "fpn_hidden": 32, "vit_hidden": 32, "vit_mlp": 64, "detr_ffn": 64, "num_queries": 8}
    init = random_model(RandomModelConfig(overrides=overrides)).detector.state_dict()
    saved = load_file(str(tmp_path / "run" / "last" / "model.safetensors"))
    assert any(not torch.equal(init[k], saved[k]) for k in saved)
    state = torch.load(tmp_path / "run" / "last" / "trainer_state.pt", weights_only=True)
    assert state["world"] == 2 and len(state["rng"]) == 2, "every process's RNG state is kept for an exact resume"
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"]), "dropout draws differ per process"
