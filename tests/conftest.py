"""Shared fixtures: tiny random SAM3 checkpoints, their exports, and real-looking images.

Exports take ~45 s for the tiny preset on 2 cores, so they are session-scoped and shared.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_INIT_STD = 0.05  # see medsam3_export.random_checkpoint

# The persistent SHA-256 cache (medsam3_rt.hash_cache) of this test run and of the CLI processes
# it starts goes to a throw-away folder, not the user's ~/.cache.
if "MEDSAM3_RT_CACHE_DIR" not in os.environ:
    import atexit
    import tempfile

    os.environ["MEDSAM3_RT_CACHE_DIR"] = tempfile.mkdtemp(prefix="medsam3-rt-test-cache-")
    atexit.register(shutil.rmtree, os.environ["MEDSAM3_RT_CACHE_DIR"], True)


def cli(*args: str, check: bool = False, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the installed `medsam3-rt` console script like a user would."""
    exe = shutil.which("medsam3-rt", path=os.path.dirname(sys.executable)) or "medsam3-rt"
    proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"medsam3-rt {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random `Sam3Model` saved in Hugging Face layout (config.json + safetensors)."""
    from medsam3_export import random_checkpoint

    out = tmp_path_factory.mktemp("ckpt") / "tiny-sam3"
    random_checkpoint("tiny", video=False, seed=0, init_std=TEST_INIT_STD).detector.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_export(tiny_hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`medsam3-rt export` of the tiny checkpoint, through the real CLI."""
    out = tmp_path_factory.mktemp("export") / "tiny-export"
    cli("export", str(tiny_hf_dir), "--output", str(out), "--quiet", check=True)
    return out


@pytest.fixture(scope="session")
def tiny_reference(tiny_hf_dir: Path):
    """The same checkpoint in transformers (default attention), the parity reference."""
    from transformers import Sam3Model

    return Sam3Model.from_pretrained(tiny_hf_dir, local_files_only=True).eval()


# The tracker's object-score head is shifted so that, in this random model, objects are
# present on textured frames and absent on flat ones: streams then show objects appearing,
# disappearing and coming back (see test_streaming_parity.py).
TRACKER_SCORE_SHIFT = 1.3


@pytest.fixture(scope="session")
def tiny_video_hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random `Sam3VideoModel` (detector + tracker) in Hugging Face layout."""
    import torch
    from medsam3_export import random_checkpoint

    out = tmp_path_factory.mktemp("video-ckpt") / "tiny-sam3-video"
    video = random_checkpoint("tiny", video=True, seed=1, init_std=0.1).video
    with torch.no_grad():
        video.tracker_model.mask_decoder.pred_obj_score_head.proj_out.bias -= TRACKER_SCORE_SHIFT
    video.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_video_export(tiny_video_hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Exported with transformers' text-only and tracker semantics: its streaming reference is
    transformers' `Sam3VideoModel`, whose detector and tracker run that way
    (test_streaming_parity.py). `tiny_export` has the defaults, Meta's semantics."""
    out = tmp_path_factory.mktemp("video-export") / "tiny-video-export"
    args = ["--prompt-semantics", "transformers", "--tracker-semantics", "transformers"]
    cli("export", str(tiny_video_hf_dir), "--output", str(out), "--quiet", *args, check=True)
    return out


@pytest.fixture(scope="session")
def segmenter(tiny_export: Path):
    import medsam3_rt

    seg = medsam3_rt.load(tiny_export, "ort-cpu")
    yield seg
    seg.close()


def phantom(h: int, w: int, *, channels: int = 3, dtype: type = np.uint8, seed: int = 0) -> np.ndarray:
    """A smooth synthetic scan with a few bright/dark blobs (deterministic)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = 40 + 100 * (xx / w) + 30 * np.sin(yy / max(h, 1) * 6)
    for _ in range(3):
        cy, cx, r = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w, rng.uniform(0.08, 0.2) * min(h, w)
        img = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < r * r, rng.uniform(0, 255), img)
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255)
    if channels == 3:
        img = np.stack([img, img * 0.8, 255 - img], axis=-1)
    if dtype == np.uint16:
        return (img * 257).astype(np.uint16)
    if dtype == np.float32:
        return (img / 255.0 * 1400 - 1000).astype(np.float32)  # CT-like HU range
    return img.astype(dtype)


@pytest.fixture(scope="session")
def meta_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Meta's random video model (tests/meta_reference.py), its sam3.pt (flat, as released) and the geometry config."""
    import time

    import torch
    from meta_reference import TIMINGS, build_meta_video_model, write_geometry

    t0 = time.perf_counter()
    model = build_meta_video_model(seed=0)
    TIMINGS["meta build"] = time.perf_counter() - t0
    root = tmp_path_factory.mktemp("meta")
    state = model.state_dict()
    torch.save(state, root / "sam3.pt")
    return {"model": model, "path": root / "sam3.pt", "config": write_geometry(root / "config.json"), "root": root, "state": state}


@pytest.fixture(scope="session")
def meta_export(meta_checkpoint: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """That sam3.pt exported unedited with the CLI (detector + tracker graphs), its graphs checked
    against Meta's own code as well as transformers (`--parity-reference both`)."""
    import time

    from meta_reference import TIMINGS

    out = tmp_path_factory.mktemp("meta-export") / "export"
    t0 = time.perf_counter()
    proc = cli(
        "export", str(meta_checkpoint["path"]), "--config", str(meta_checkpoint["config"]), "--output", str(out),
        "--parity-reference", "both", timeout=1800,
    )  # fmt: skip
    TIMINGS["export (CLI)"] = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta_checkpoint["export_log"] = proc.stderr + proc.stdout
    return out


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module: training steps are many small ops, and one thread
    avoids oversubscribing a shared 2-core machine. Restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
