"""Tracker semantics: recorded in the manifest, shown by `info`, read by the stream; the host step."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import cli

import medsam3_rt
from medsam3_rt.errors import ManifestError
from medsam3_rt.tracker.masks import meta_new_object_memory


def _with_semantics(export: Path, tmp_path: Path, value: str | None) -> Path:
    out = tmp_path / f"export-{value}"
    shutil.copytree(export, out)
    manifest = json.loads((out / "manifest.json").read_text())
    if value is None:
        del manifest["tracker"]["semantics"]
    else:
        manifest["tracker"]["semantics"] = value
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_manifest_info_and_stream_follow_the_tracker_semantics(tiny_video_export: Path, tmp_path: Path) -> None:
    manifest = json.loads((tiny_video_export / "manifest.json").read_text())
    assert manifest["tracker"]["semantics"] == "transformers"  # conftest exports it with --tracker-semantics transformers
    assert "tracker semantics: transformers" in cli("info", str(tiny_video_export), check=True).stdout
    legacy = _with_semantics(tiny_video_export, tmp_path, None)  # written before the field existed
    assert "tracker semantics: transformers" in cli("info", str(legacy), check=True).stdout
    with medsam3_rt.load(legacy, "ort-cpu") as seg, seg.stream("liver") as stream:
        assert stream.tracker_semantics == "transformers"
    bad = _with_semantics(tiny_video_export, tmp_path, "sam2")
    with medsam3_rt.load(bad, "ort-cpu") as seg, pytest.raises(ManifestError, match="semantics must be 'meta' or 'transformers'"):
        seg.stream("liver")


def test_meta_new_object_memory_goes_through_the_video_resolution() -> None:
    """A one-pixel-wide line survives the detector's 0 threshold but not the video-resolution
    round trip (a 4x smaller frame); a block survives; where two objects overlap, each pixel
    goes to at most one of them (Meta's non-overlap among objects added together)."""
    m, image, memory = 32, 112, 128
    logits = np.full((3, m, m), -5.0, np.float32)
    logits[0, 8:24, 8:24] = 5.0  # block
    logits[1, 16, :] = 5.0  # thin line
    logits[2, 12:28, 12:28] = 5.0  # overlaps the block
    mem_in, scores = meta_new_object_memory(logits, (m // 4, m // 4), image, memory)
    assert mem_in.shape == (3, 1, memory, memory) and scores.tolist() == [10.0, 10.0, 10.0]
    prob = 1 / (1 + np.exp(-mem_in[:, 0].astype(np.float64)))
    assert np.isfinite(mem_in).all() and prob.min() >= 0 and prob.max() <= 1
    assert prob[0].sum() > 0 and prob[1].max() < 0.5, "the line is lost at video resolution"
    alone = [1 / (1 + np.exp(-meta_new_object_memory(logits[i : i + 1], (m // 4, m // 4), image, memory)[0][0, 0])) for i in (0, 2)]
    overlap = (alone[0] > 0.99) & (alone[1] > 0.99)
    kept = prob[[0, 2]][:, overlap] > 0.5  # no overlapping pixel stays in both
    assert overlap.sum() > 100 and (kept.sum(axis=0) <= 1).all() and kept[0].any() and kept[1].any()
    _, empty = meta_new_object_memory(np.full((1, m, m), -1.0, np.float32), (m, m), image, memory)
    assert empty.tolist() == [-10.0]
