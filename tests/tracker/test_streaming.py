"""Streams, volumes and videos on the tiny video export: bounded state, API rules, CLI outputs."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
from conftest import cli, phantom
from test_streaming_parity import DETECTION_THRESHOLD, NEW_OBJECT_THRESHOLD

import medsam3_rt
from medsam3_rt.errors import ManifestError, UsageError
from medsam3_rt.tracker.settings import TrackerSettings

THRESHOLDS = {"detection_threshold": DETECTION_THRESHOLD, "new_object_threshold": NEW_OBJECT_THRESHOLD}


@pytest.fixture(scope="module")
def video_seg(tiny_video_export: Path):
    seg = medsam3_rt.load(tiny_video_export, "ort-cpu")
    yield seg
    seg.close()


def moving_blob(t: int, h: int = 96, w: int = 112) -> np.ndarray:
    """A textured frame whose bright disc drifts slowly (a 'structure' seen across slices)."""
    frame = phantom(h, w, seed=1).copy()
    yy, xx = np.mgrid[:h, :w]
    frame[(yy - 48) ** 2 + (xx - 30 - (t % 50)) ** 2 < 15**2] = 230
    return frame


def per_object_bound(settings: TrackerSettings, max_cond: int, hw: int, mem: int, channels: int) -> int:
    pointers = (max_cond + settings.max_object_pointers_in_encoder - 1) * channels * 4
    memories = (max_cond + settings.num_maskmem - 1) * hw * mem * 2  # bfloat16
    return pointers + memories


@pytest.mark.parametrize("selection", [False, True], ids=["last-frames", "memory-selection"])
def test_state_stays_bounded_over_200_frames(video_seg, selection: bool) -> None:
    stream = video_seg.stream("liver", options=medsam3_rt.StreamOptions(**THRESHOLDS, memory_selection=selection))
    assert (stream.memory_selection is not None) == selection
    m = video_seg.manifest
    bound = per_object_bound(stream.settings, stream.max_cond, m.dims.feat_size**2, m.dims.memory_channels, m.dims.fpn_channels)
    sizes, per_track = {}, {}
    for t in range(200):
        stream.push(moving_blob(t))
        if t + 1 in (5, 40, 100, 200):
            sizes[t + 1] = (stream.state_nbytes(), stream.num_objects)
            per_track[t + 1] = {tr.obj_id: tr.nbytes for tr in stream._tracks.values()}
    assert sizes[5][1] >= 1, "the stream must track something for this test to mean anything"
    for frames, (nbytes, objects) in sizes.items():
        assert nbytes <= objects * bound, f"after {frames} frames: {nbytes} bytes for {objects} objects > {bound} each"
        assert all(b <= bound for b in per_track[frames].values()), per_track[frames]
    # once an object's bank is full it stops growing: the objects tracked at frames 100 and 200 hold as much at both
    lasting = sorted(set(per_track[100]) & set(per_track[200]))
    assert lasting, f"no object lasts from frame 100 to 200: {per_track}"
    assert [per_track[200][o] for o in lasting] == [per_track[100][o] for o in lasting], per_track
    for track in stream._tracks.values():
        assert len(track.cond) <= stream.max_cond
        assert len(track.recent) <= stream.settings.max_object_pointers_in_encoder - 1
        assert sum(e.maskmem is not None for e in track.recent.values()) <= stream.settings.num_maskmem - 1
        assert len(track.scores) <= stream.settings.max_object_pointers_in_encoder


def test_memory_selection_follows_manifest_and_options(tiny_video_export: Path, tmp_path: Path) -> None:
    """On with tracker semantics "meta" (Meta's video tracker selects memories), off with
    "transformers"; the manifest's `memory_selection` field and then StreamOptions override."""
    import shutil

    def stream_of(tracker: dict, **options):
        out = tmp_path / f"export-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(tiny_video_export, out)
        manifest = json.loads((out / "manifest.json").read_text())
        manifest["tracker"].update(tracker)
        for key in [k for k, v in tracker.items() if v is None]:
            del manifest["tracker"][key]
        (out / "manifest.json").write_text(json.dumps(manifest))
        with medsam3_rt.load(out, "ort-cpu") as seg:
            return seg.stream("liver", options=medsam3_rt.StreamOptions(**options)).memory_selection

    assert json.loads((tiny_video_export / "manifest.json").read_text())["tracker"]["memory_selection"] is False
    assert stream_of({}) is None
    assert stream_of({}, memory_selection=True) == 0.01
    assert stream_of({"semantics": "meta", "memory_selection": None}) == 0.01  # exports before the field
    assert stream_of({"semantics": "meta", "memory_selection": None}, memory_selection=False) is None
    assert stream_of({"memory_selection": True, "memory_selection_threshold": 0.2}) == 0.2
    with pytest.raises(ManifestError, match="memory_selection must be true or false"):
        stream_of({"memory_selection": "yes"})
    with pytest.raises(ManifestError, match="memory_selection_threshold must be a number"):
        stream_of({"memory_selection": True, "memory_selection_threshold": "low"})
    with pytest.raises(UsageError, match="memory_selection must be True, False or None"):
        medsam3_rt.StreamOptions(memory_selection=1)  # type: ignore[arg-type]


def test_frame_results_and_reset(video_seg) -> None:
    with video_seg.stream(["liver", "kidney"], options=medsam3_rt.StreamOptions(**THRESHOLDS)) as stream:
        results = [stream.push(moving_blob(t)) for t in range(4)]
        last = results[-1]
        assert last.frame_index == 3 and last.prompts == ("liver", "kidney")
        n = len(last.object_ids)
        assert last.masks.shape == (n, 96, 112) and last.masks.dtype == bool
        assert last.scores.shape == last.tracker_scores.shape == (n,) and last.boxes.shape == (n, 4)
        assert list(last.object_ids) == sorted(last.object_ids)
        for p in (0, 1):  # objects of one prompt do not overlap
            assert (last.masks[last.prompt_ids == p].sum(axis=0) <= 1).all()
        assert set(np.unique(last.label_map)) <= {0, 1, 2}
        assert {"backbone", "detector", "tracker"} <= set(last.timings_ms)
        stream.reset()
        assert stream.frame_index == 0 and stream.num_objects == 0 and stream.next_object_id == 0
        again = stream.push(moving_blob(0))
        np.testing.assert_array_equal(again.label_map, results[0].label_map)  # deterministic after reset


def test_forget_after_drops_empty_objects(video_seg) -> None:
    stream = video_seg.stream("liver", options=medsam3_rt.StreamOptions(forget_after=1, **THRESHOLDS))
    first = stream.push(moving_blob(0))
    assert stream.num_objects >= 1
    flat = np.full((96, 112, 3), 30, np.uint8)  # the objects vanish on a flat frame (see conftest)
    assert len(stream.push(flat).object_ids) == 0
    assert stream.num_objects == 0
    again = stream.push(moving_blob(0))
    assert again.object_ids.min() > first.object_ids.max()  # ids are never reused


def test_stream_needs_a_tracker_export(segmenter) -> None:
    with pytest.raises(ManifestError, match="no tracker graphs"):
        segmenter.stream("liver")


def test_options_validation() -> None:
    with pytest.raises(UsageError):
        medsam3_rt.StreamOptions(forget_after=0)
    with pytest.raises(UsageError):
        medsam3_rt.StreamOptions(detection_threshold=1.5)


def test_segment_volume_array_and_bidirectional(video_seg) -> None:
    flat = np.full((96, 112), 30, np.float32)
    volume = np.stack([flat, flat, moving_blob(3)[..., 0].astype(np.float32), moving_blob(4)[..., 0].astype(np.float32), flat])
    forward = video_seg.segment_volume(volume, "liver", spacing=(2.0, 0.5, 0.5), options=medsam3_rt.StreamOptions(**THRESHOLDS))
    assert forward.labels.shape == volume.shape and forward.labels.dtype == np.uint8 and forward.start_slice == 0
    assert forward.prompt_volumes_ml["liver"] == pytest.approx((forward.labels == 1).sum() * 2.0 * 0.25 / 1000)
    assert sum(o.voxels for o in forward.objects) >= (forward.labels == 1).sum()
    both = video_seg.segment_volume(
        volume, "liver", spacing=(2.0, 0.5, 0.5), bidirectional=True, options=medsam3_rt.StreamOptions(**THRESHOLDS)
    )
    stream = video_seg.stream("liver", window=(float(volume.min()), float(volume.max())))
    scores = [stream.best_detection_score(s) for s in volume]
    assert both.start_slice == int(np.argmax(scores)) > 0
    ids = [o.object_id for o in both.objects]
    assert len(ids) == len(set(ids))
    assert all(o.first_slice <= o.last_slice for o in both.objects)


def test_cli_volume_and_video(tiny_video_export: Path, tmp_path: Path) -> None:
    vol = np.stack([moving_blob(t)[..., 0] for t in range(6)], axis=-1).astype(np.int16) * 4 - 500  # CT-like units
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = (-40, -30, 10)
    nib.save(nib.Nifti1Image(vol, affine), tmp_path / "scan.nii.gz")
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10, (112, 96))
    for t in range(6):
        writer.write(cv2.cvtColor(moving_blob(t), cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / "out"
    args = ["--detection-threshold", str(DETECTION_THRESHOLD), "--new-object-threshold", str(NEW_OBJECT_THRESHOLD)]
    cli(
        "segment",
        str(tiny_video_export),
        str(tmp_path / "scan.nii.gz"),
        str(clip),
        "-p",
        "liver",
        "-p",
        "kidney",
        "-o",
        str(out),
        "--window",
        "-500,500",
        *args,
        check=True,
    )
    labels = nib.load(out / "scan.labels.nii.gz")
    np.testing.assert_allclose(labels.affine, affine, atol=1e-5)
    assert labels.shape == vol.shape and labels.get_data_dtype() == np.uint8
    data = json.loads((out / "scan.json").read_text())
    assert data["num_slices"] == 6 and [p["prompt"] for p in data["prompts"]] == ["liver", "kidney"]
    expected_ml = float((np.asarray(labels.dataobj) == 1).sum()) * 0.8 * 0.8 * 2.5 / 1000
    assert data["prompts"][0]["volume_ml"] == pytest.approx(expected_ml, abs=1e-3)
    assert cv2.imread(str(out / "scan.overlay.png")) is not None
    video = json.loads((out / "clip.json").read_text())
    assert video["frames"] == 6 and len(video["per_frame"]) == 6
    stack = np.load(out / "clip.labels.npz")["labels"]
    assert stack.shape == (6, 96, 112)
    cap = cv2.VideoCapture(str(out / "clip.overlay.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    cap.release()


def test_cli_dicom_series(tiny_video_export: Path, tmp_path: Path) -> None:
    from test_volumes_io import CT_SERIES

    out = tmp_path / "out"
    cli("segment", str(tiny_video_export), str(CT_SERIES), "-p", "liver", "-o", str(out), "--window", "abdomen", check=True)
    data = json.loads((out / "CT5N.json").read_text())
    assert data["kind"] == "dicom" and data["dicom"]["modality"] == "CT" and data["shape"] == [16, 16, 5]
    assert nib.load(out / "CT5N.labels.nii.gz").shape == (16, 16, 5)
