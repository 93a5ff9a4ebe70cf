"""Integrity on load: SHA-256 of every file, remembered across processes, re-checked when a file changes.

`medsam3_rt.hash_cache` keeps digests per file stamp (path, device, inode, size, mtime,
ctime) in the user's cache folder (here a per-test folder via MEDSAM3_RT_CACHE_DIR). These
tests run `load_manifest` in fresh Python processes, so the in-process cache cannot help,
and count how many files each process actually hashed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from medsam3_rt import hash_cache
from medsam3_rt.manifest import MANIFEST_NAME

# Counts calls of the hashing function and reports them with the outcome as one JSON line.
PROBE = """
import json, sys
import medsam3_rt.hash_cache as hc
from medsam3_rt.errors import Medsam3Error
from medsam3_rt.manifest import load_manifest
hc.RACY_NS = int(sys.argv[2])
hashed = []
real = hc.sha256_file
hc.sha256_file = lambda path, *a: hashed.append(path.name) or real(path, *a)
try:
    load_manifest(sys.argv[1])
    outcome = "ok"
except Medsam3Error as e:
    outcome = f"{type(e).__name__}: {e}"
print(json.dumps({"hashed": sorted(hashed), "outcome": outcome}))
"""


@pytest.fixture()
def export_copy(tiny_export: Path, tmp_path: Path) -> Path:
    root = tmp_path / "model"
    shutil.copytree(tiny_export, root)
    return root


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(hash_cache.ENV_DIR, str(folder))
    monkeypatch.delenv(hash_cache.ENV_SWITCH, raising=False)
    return folder / hash_cache.SUBDIR


def probe(root: Path, racy_ns: int = 0, env: dict | None = None) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(root), str(racy_ns)], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def recorded(root: Path) -> list[str]:
    return sorted(Path(p).name for p in json.loads((root / MANIFEST_NAME).read_text())["files"])


def test_second_process_hashes_nothing_and_a_changed_file_is_rehashed_and_named(export_copy: Path, cache: Path) -> None:
    first = probe(export_copy)
    assert first["outcome"] == "ok" and first["hashed"] == recorded(export_copy)
    assert len(list(cache.glob("*.json"))) == len(first["hashed"])
    second = probe(export_copy)
    assert second == {"hashed": [], "outcome": "ok"}  # every digest came from the persistent cache
    # same size, new content, new mtime
    path = export_copy / "detector.onnx"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    third = probe(export_copy)
    assert third["hashed"] == ["detector.onnx"]
    assert "IntegrityError" in third["outcome"] and "'detector.onnx' has SHA-256" in third["outcome"]


def test_a_rewrite_that_restores_size_and_mtime_is_still_caught(export_copy: Path, cache: Path) -> None:
    """`touch -d` / os.utime can put mtime back, not ctime: the stamp still changes."""
    assert probe(export_copy)["outcome"] == "ok"
    path = export_copy / "image_backbone.onnx"
    st = path.stat()
    blob = bytearray(path.read_bytes())
    blob[100] ^= 0x01
    path.write_bytes(bytes(blob))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size
    again = probe(export_copy)
    assert again["hashed"] == ["image_backbone.onnx"] and "'image_backbone.onnx' has SHA-256" in again["outcome"]


def test_racy_stamps_are_not_cached(export_copy: Path, cache: Path) -> None:
    """Files written moments ago (within RACY_NS) are verified but not remembered."""
    for f in export_copy.rglob("*"):
        if f.is_file():
            f.touch()
    first = probe(export_copy, racy_ns=3600 * 10**9)
    assert first["outcome"] == "ok" and first["hashed"] == recorded(export_copy)
    assert not cache.exists() or not list(cache.glob("*.json"))
    assert probe(export_copy, racy_ns=3600 * 10**9)["hashed"] == recorded(export_copy)


def test_cache_is_best_effort_and_never_inside_the_export(export_copy: Path, cache: Path, tmp_path: Path) -> None:
    before = sorted(p.relative_to(export_copy) for p in export_copy.rglob("*"))
    assert probe(export_copy)["outcome"] == "ok"
    assert sorted(p.relative_to(export_copy) for p in export_copy.rglob("*")) == before
    # corrupt entries are ignored (re-hashed, then rewritten), never an error
    for entry in cache.glob("*.json"):
        entry.write_text("{ not json")
    garbage = probe(export_copy)
    assert garbage == {"hashed": recorded(export_copy), "outcome": "ok"}
    assert probe(export_copy)["hashed"] == []
    # a forged entry that disagrees with the manifest is re-checked by hashing, not trusted
    for entry in cache.glob("*.json"):
        data = json.loads(entry.read_text())
        data["sha256"] = "0" * 64
        entry.write_text(json.dumps(data))
    forged = probe(export_copy)
    assert forged == {"hashed": recorded(export_copy), "outcome": "ok"}
    # an unusable cache folder (a file in its place) and a switched-off cache both still verify
    blocked = tmp_path / "blocked"
    blocked.write_text("not a folder")
    assert probe(export_copy, env={hash_cache.ENV_DIR: str(blocked)}) == {"hashed": recorded(export_copy), "outcome": "ok"}
    off = tmp_path / "off"
    assert probe(export_copy, env={hash_cache.ENV_DIR: str(off), hash_cache.ENV_SWITCH: "0"})["hashed"] == recorded(export_copy)
    assert not off.exists()


def test_concurrent_processes_share_the_cache(export_copy: Path, cache: Path) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", PROBE, str(export_copy), "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outs = [p.communicate() for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0 and json.loads(out.strip().splitlines()[-1])["outcome"] == "ok", err
    entries = list(cache.glob("*.json"))
    assert len(entries) == len(recorded(export_copy))
    assert not [p.name for p in cache.iterdir() if p.suffix != ".json"], "temporaries left in the cache"
    for entry in entries:
        assert len(json.loads(entry.read_text())["sha256"]) == 64
    assert probe(export_copy)["hashed"] == []


def test_cache_stays_bounded(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hash_cache, "MAX_ENTRIES", 8)
    monkeypatch.setattr(hash_cache, "RACY_NS", 0)
    files = []
    for k in range(20):
        f = tmp_path / f"f{k}.bin"
        f.write_bytes(bytes([k]) * 100)
        files.append(f)
        hash_cache.file_sha256(f)
        assert len(list(cache.glob("*.json"))) <= 8
    # the most recent ones survive and are hits
    assert hash_cache.lookup(hash_cache.FileStamp.of(files[-1])) == hash_cache.sha256_file(files[-1])
