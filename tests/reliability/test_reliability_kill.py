"""A `segment` run killed midway (SIGKILL: no cleanup runs) leaves only complete outputs.

Every output file is written to a hidden temporary, fsynced and renamed; an image's JSON is
written last, so an image counts as complete exactly when its `.json` exists. After the kill
the test checks that every visible file is a whole, decodable output and every image with a
JSON has all three; `--resume` then finishes the rest without touching the finished ones
(same inode and mtime), removes the killed run's temporaries, and `--force` rewrites all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from conftest import cli, phantom

IMAGES = 14
SUFFIXES = (".mask.png", ".overlay.png", ".json")


def _exe() -> str:
    import shutil

    return shutil.which("medsam3-rt", path=os.path.dirname(sys.executable)) or "medsam3-rt"


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def _check_complete(out: Path, sources: dict[str, np.ndarray]) -> set[str]:
    """Every visible file is a whole output; returns the stems whose JSON exists (complete images)."""
    complete = set()
    for f in out.iterdir():
        if f.name.startswith("."):
            assert ".tmp" in f.name, f"unexpected hidden file {f.name}"
            continue
        stem, suffix = f.name.split(".", 1)
        assert f".{suffix}" in SUFFIXES, f.name
        h, w = sources[stem].shape[:2]
        if suffix == "json":
            data = json.loads(f.read_text())  # whole JSON, never a prefix of one
            assert data["input"].endswith(f"{stem}.png") and len(data["prompts"]) == 1
            for other in SUFFIXES[:2]:
                assert (out / f"{stem}{other}").exists(), f"{stem}.json exists but {stem}{other} does not"
            complete.add(stem)
        else:
            image = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)  # a cut PNG would not decode
            assert image is not None and image.shape[:2] == (h, w), f.name
    return complete


def test_sigkill_midway_then_resume_then_force(tiny_export: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    sources = {}
    for k in range(IMAGES):
        image = phantom(300 + 20 * k, 360 - 10 * k, seed=k)  # large enough that writes take a while
        cv2.imwrite(str(src / f"img{k:02d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        sources[f"img{k:02d}"] = image
    out = tmp_path / "out"
    args = [str(tiny_export), str(src), "-p", "liver", "-o", str(out), "-q"]

    proc = subprocess.Popen([_exe(), "segment", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # Kill once two images are complete, at the first moment an image is half-written
        # (mask or overlay present, JSON not yet) or as soon as the third image starts.
        while proc.poll() is None:
            names = {f.name for f in out.iterdir()} if out.exists() else set()
            jsons = {n.split(".")[0] for n in names if n.endswith(".json") and not n.startswith(".")}  # not temporaries
            started = {n.split(".")[0] for n in names if not n.startswith(".")}
            if len(jsons) >= 2 and (started - jsons or any(n.startswith(".") for n in names) or len(jsons) >= 3):
                break
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it was killed: {proc.stderr.read().decode() if proc.stderr else ''}"
    if proc.stderr:
        proc.stderr.close()

    complete = _check_complete(out, sources)
    assert 2 <= len(complete) < IMAGES
    finished = {f"{s}{x}": _stamp(out / f"{s}{x}") for s in complete for x in SUFFIXES}

    resumed = cli("segment", *args[:-1], "--resume", check=True)
    assert f"for {IMAGES - len(complete)} input(s)" in resumed.stderr, resumed.stderr
    assert _check_complete(out, sources) == set(sources)
    assert not [f.name for f in out.iterdir() if f.name.startswith(".")], "temporaries of the killed run were left"
    for name, stamp in finished.items():
        assert _stamp(out / name) == stamp, f"--resume touched the finished {name}"
    masks = {s: (out / f"{s}.mask.png").read_bytes() for s in sources}
    before_force = {f.name: _stamp(f) for f in out.iterdir()}

    again = cli("segment", *args)
    assert again.returncode == 2 and "--force" in again.stderr  # existing outputs are never overwritten silently

    cli("segment", *args, "--force", check=True)
    assert _check_complete(out, sources) == set(sources)
    untouched = [name for name, stamp in before_force.items() if _stamp(out / name) == stamp]
    assert not untouched, f"--force left {untouched} as they were"
    for s in sources:  # rewritten, with the same (deterministic) result
        assert (out / f"{s}.mask.png").read_bytes() == masks[s]
