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
        calls = _counting(seg)
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


# -- volumes and offline streams (issue 17, batching in volumes) --------------------------------


@pytest.fixture(scope="module")
def batched_video_export(tiny_video_hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny video checkpoint (detector + tracker) exported with an image batch axis."""
    out = tmp_path_factory.mktemp("batched-video") / "tiny-video-batched"
    args = ["--prompt-semantics", "transformers", "--tracker-semantics", "transformers", "--batch-axis", "--quiet"]
    cli("export", str(tiny_video_hf_dir), "--output", str(out), *args, check=True)
    return out


def _volume() -> np.ndarray:
    """7 slices of a bright disc drifting over a textured background (a structure seen across slices)."""
    slices = []
    for t in range(7):
        frame = phantom(96, 112, channels=1, seed=1).astype(np.float32)
        yy, xx = np.mgrid[:96, :112]
        frame[(yy - 48) ** 2 + (xx - 30 - 3 * t) ** 2 < 15**2] = 230
        slices.append(frame)
    return np.stack(slices)


def _counting(seg: medsam3_rt.Segmenter) -> list[int]:
    """Records the batch of every backbone call."""
    calls: list[int] = []
    encode = seg.model.encode_image

    def counting(pixels: np.ndarray) -> dict:
        calls.append(len(pixels))
        return encode(pixels)

    seg.model.encode_image = counting  # type: ignore[method-assign]
    return calls


@pytest.mark.parametrize("mode", ["track", "detect"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_segment_volume_batched_equals_slice_by_slice(batched_video_export: Path, mode: str, bidirectional: bool) -> None:
    """The backbone gets several slices per call; labels, objects and the anchor slice stay those of one at a time."""
    from test_streaming_parity import DETECTION_THRESHOLD, NEW_OBJECT_THRESHOLD

    volume = _volume()
    opts = medsam3_rt.StreamOptions(detection_threshold=DETECTION_THRESHOLD, new_object_threshold=NEW_OBJECT_THRESHOLD)
    runs = {}
    with medsam3_rt.load(batched_video_export, "ort-cpu") as seg:
        calls = _counting(seg)
        for b in (1, 3):
            calls.clear()
            runs[b] = seg.segment_volume(volume, PROMPTS, bidirectional=bidirectional, options=opts, mode=mode, batch_size=b)  # type: ignore[arg-type]
            runs[b] = (runs[b], list(calls))
    (one, calls1), (three, calls3) = runs[1], runs[3]
    assert set(calls1) == {1} and max(calls3) == 3 and sum(calls3) == sum(calls1)
    assert one.mode == three.mode and one.start_slice == three.start_slice
    assert one.objects and [(o.object_id, o.prompt_id, o.first_slice, o.last_slice) for o in one.objects] == [
        (o.object_id, o.prompt_id, o.first_slice, o.last_slice) for o in three.objects
    ]
    assert (one.labels != three.labels).mean() < 1e-3 and one.labels.any()
    if bidirectional and mode == "track":
        assert one.start_slice > 0  # the scan batched too, and the backward pass ran
    assert {"backbone", "detector"} <= set(three.timings_ms)


def test_stream_run_batched_with_tracker_only_frames(batched_video_export: Path) -> None:
    """`Stream.run(batch_size=...)` with `detect_every`: the same frames as pushing one by one."""
    from test_streaming_parity import DETECTION_THRESHOLD, NEW_OBJECT_THRESHOLD

    frames = [s.astype(np.uint8) for s in _volume()]
    opts = medsam3_rt.StreamOptions(detection_threshold=DETECTION_THRESHOLD, new_object_threshold=NEW_OBJECT_THRESHOLD, detect_every=2)
    with medsam3_rt.load(batched_video_export, "ort-cpu") as seg:
        one = list(seg.stream(PROMPTS, options=opts).run(frames))
        st = seg.stream(PROMPTS, options=opts)
        four = list(st.run(frames, batch_size=4))
        with pytest.raises(UsageError, match="batch_size"):
            list(st.run(frames, batch_size=0))
        assert 0 < st.detector_frames < len(frames)  # tracker-only frames happened
    assert [f.frame_index for f in four] == list(range(len(frames)))
    assert any(len(f.object_ids) for f in one)
    for a, b in zip(one, four, strict=True):
        assert list(a.object_ids) == list(b.object_ids)
        assert (a.label_map != b.label_map).mean() < 1e-3
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)


def test_volume_batch_size_without_a_batch_axis_and_errors(tiny_video_export: Path) -> None:
    """An export without the axis runs the backbone slice by slice whatever batch_size says."""
    volume = _volume()[:4]
    with medsam3_rt.load(tiny_video_export, "ort-cpu") as seg:
        calls = _counting(seg)
        a = seg.segment_volume(volume, PROMPTS, mode="detect")
        b = seg.segment_volume(volume, PROMPTS, mode="detect", batch_size=4)
        assert set(calls) == {1}
        with pytest.raises(UsageError, match="batch_size"):
            seg.segment_volume(volume, PROMPTS, batch_size=0)
    assert (a.labels == b.labels).all()


def test_cli_volume_batch_size_writes_the_same_labels(batched_video_export: Path, tmp_path: Path) -> None:
    import nibabel as nib

    vol = np.moveaxis(_volume(), 0, -1).astype(np.int16)
    nib.save(nib.Nifti1Image(vol, np.diag([0.8, 0.8, 2.5, 1.0])), tmp_path / "scan.nii.gz")
    labels = {}
    for b in (1, 4):
        out = tmp_path / f"out{b}"
        cli(
            "segment",
            str(batched_video_export),
            str(tmp_path / "scan.nii.gz"),
            "-p",
            PROMPTS[0],
            "-o",
            str(out),
            "--batch-size",
            str(b),
            check=True,
        )
        (path,) = [p for p in out.iterdir() if p.name.endswith(".nii.gz")]
        labels[b] = np.asarray(nib.load(path).dataobj)
    assert labels[1].shape == vol.shape and (labels[1] != labels[4]).mean() < 1e-3
