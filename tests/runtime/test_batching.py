"""Batching (issue 17 item 6): several images per backbone call, the same results as one at a time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, phantom

import medsam3_rt
from medsam3_rt.errors import UsageError
from medsam3_rt.io.images import read_image, write_png

PROMPTS = ["liver", "left kidney"]


@pytest.fixture(scope="module")
def batched_export(tiny_hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint exported with an image batch axis (`--batch-axis`)."""
    out = tmp_path_factory.mktemp("batched") / "tiny-batched"
    cli("export", str(tiny_hf_dir), "--output", str(out), "--batch-axis", "--quiet", check=True)
    return out


def _images() -> list[np.ndarray]:
    """Different sizes, grey and RGB: each is resized on its own before the shared backbone call."""
    return [phantom(96, 128, seed=1), phantom(64, 64, channels=1, seed=2), phantom(150, 90, seed=3), phantom(80, 80, seed=4)]


def _same(a: medsam3_rt.SegmentResult, b: medsam3_rt.SegmentResult) -> None:
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
    assert (a.query_index == b.query_index).all()
    assert (a.masks != b.masks).mean() < 1e-3 and (a.label_map != b.label_map).mean() < 1e-3


def test_the_manifest_says_whether_the_backbone_batches(batched_export: Path, tiny_export: Path) -> None:
    new = json.loads((batched_export / "manifest.json").read_text())["graphs"]["image_backbone"]
    assert new["inputs"][0]["shape"][0] == "B" and all(o["shape"][0] == "B" for o in new["outputs"])
    with medsam3_rt.load(batched_export) as seg, medsam3_rt.load(tiny_export) as old:
        assert seg.manifest.image_batch_axis and not old.manifest.image_batch_axis


@pytest.mark.parametrize("batch_size", [1, 3, 4])
def test_segment_batch_equals_one_at_a_time(batched_export: Path, batch_size: int) -> None:
    images = _images()
    with medsam3_rt.load(batched_export, "ort-cpu") as seg:
        single = [seg.segment(im, PROMPTS) for im in images]
        calls: list[int] = []
        encode = seg.model.encode_image

        def counting(pixels: np.ndarray) -> dict:
            calls.append(len(pixels))
            return encode(pixels)

        seg.model.encode_image = counting  # type: ignore[method-assign]
        batched = seg.segment_batch(images, PROMPTS, batch_size=batch_size)
    expected = [min(batch_size, len(images) - s) for s in range(0, len(images), batch_size)]
    assert calls == expected  # several images per backbone call
    assert len(batched) == len(images)
    for a, b in zip(single, batched, strict=True):
        _same(a, b)
        assert b.label_map.shape == a.label_map.shape and set(b.timings_ms) >= {"backbone", "detector", "postprocess"}


def test_an_export_without_a_batch_axis_still_segments_batches(tiny_export: Path) -> None:
    """Old manifests keep working: the backbone then runs once per image."""
    images = _images()[:3]
    with medsam3_rt.load(tiny_export, "ort-cpu") as seg:
        single = [seg.segment(im, PROMPTS) for im in images]
        batched = seg.segment_batch(images, PROMPTS, batch_size=3)
        with pytest.raises(UsageError, match="batch_size"):
            seg.segment_batch(images, PROMPTS, batch_size=0)
    for a, b in zip(single, batched, strict=True):
        _same(a, b)


def test_cli_batch_size_writes_the_same_outputs(batched_export: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i, im in enumerate(_images()):
        write_png(folder / f"img{i}.png", im)
    outs = {}
    for b in (1, 3):
        out = tmp_path / f"out{b}"
        args = ["-p", PROMPTS[0], "-p", PROMPTS[1], "-o", str(out), "--batch-size", str(b)]
        cli("segment", str(batched_export), str(folder), *args, check=True)
        outs[b] = out
    names = sorted(p.name for p in outs[1].iterdir())
    assert names == sorted(p.name for p in outs[3].iterdir()) and len(names) == 3 * len(_images())
    for name in names:
        if name.endswith(".json"):
            a, b = (json.loads((outs[k] / name).read_text()) for k in (1, 3))
            assert [p["score"] for p in a["prompts"]] == pytest.approx([p["score"] for p in b["prompts"]], abs=1e-5)
        elif name.endswith(".mask.png"):
            a, b = (read_image(outs[k] / name) for k in (1, 3))
            assert (a != b).mean() < 1e-3


def test_bench_counts_a_batched_backbone_at_one_image(batched_export: Path, tiny_export: Path) -> None:
    """`bench` FLOPs bind B to 1: the same work per image as the fixed-batch export of the same weights."""
    from medsam3_bench.flops import image_graph_flops

    counts = []
    for d in (batched_export, tiny_export):
        with medsam3_rt.load(d, "ort-cpu") as seg:
            counts.append({g: f.total for g, f in image_graph_flops(d, seg.manifest, 2).items()})
    assert counts[0] == counts[1] and counts[0]["image_backbone"] > 0
