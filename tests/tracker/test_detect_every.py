"""Tracker-only frames (`StreamOptions(detect_every=k)`): the detector runs on every k-th frame
and whenever the last frame showed nothing; between, the tracker alone carries the objects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import cli
from test_streaming import THRESHOLDS, moving_blob
from test_tracker_policy import CFG, A, B, stack, table

import medsam3_rt
from medsam3_rt import graph_contract as gc
from medsam3_rt.errors import UsageError
from medsam3_rt.tracker import policy


def test_tracker_only_is_a_merge_without_detections_that_counts_no_miss() -> None:
    tracks = table([4, 5], [0, 0], keep=[7, 3])
    masks, scores = stack([A, B]), np.array([2.0, -1.0], np.float32)
    merged = policy.merge(policy.Detections.empty(A.shape[-1]), tracks, masks, scores, 9, 6, CFG)
    only = policy.tracker_only(tracks, masks, scores, 9, 6, CFG)
    assert merged.keep_alive.tolist() != [7, 3]  # a merge with no detection counts both as missed
    assert only.keep_alive.tolist() == [7, 3] and len(only.association.unmatched) == 0
    assert len(only.new_dets) == 0 and only.recond == {} and len(only.rerun) == 0
    np.testing.assert_array_equal(only.shown, merged.shown)
    np.testing.assert_array_equal(only.memory_masks, merged.memory_masks)
    np.testing.assert_array_equal(only.last_occluded, merged.last_occluded)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_detect_every_must_be_a_positive_integer(bad) -> None:
    with pytest.raises(UsageError, match="detect_every"):
        medsam3_rt.StreamOptions(detect_every=bad)


@pytest.fixture(scope="module")
def video_seg(tiny_video_export: Path):
    seg = medsam3_rt.load(tiny_video_export, "ort-cpu")
    yield seg
    seg.close()


def _counting(seg) -> list[str]:
    """Record which graphs the model runs (the real run goes on)."""
    calls: list[str] = []
    run = seg.model.run

    def counted(name, feeds, *args, **kwargs):
        calls.append(name)
        return run(name, feeds, *args, **kwargs)

    seg.model.run = counted
    return calls


def test_the_detector_runs_every_kth_frame_while_objects_are_shown(video_seg) -> None:
    k, n = 3, 10
    calls = _counting(video_seg)
    try:
        stream = video_seg.stream("liver", options=medsam3_rt.StreamOptions(detect_every=k, **THRESHOLDS))
        per_frame, ids_seen = [], set()
        for t in range(n):
            before = calls.count(gc.DETECTOR)
            keep_alive = {o: tr.keep_alive for o, tr in stream._tracks.items()}
            res = stream.push(moving_blob(t))
            ran = calls.count(gc.DETECTOR) > before
            per_frame.append(ran)
            new_ids = set(res.object_ids.tolist()) - ids_seen
            if not ran:  # tracker-only: nothing new, nothing counted as missed
                assert not new_ids, t
                assert {o: tr.keep_alive for o, tr in stream._tracks.items() if o in keep_alive} == keep_alive, t
            ids_seen |= set(res.object_ids.tolist())
            assert len(res.object_ids) > 0, f"frame {t}: the forced thresholds should keep an object in view"
        assert per_frame == [t % k == 0 for t in range(n)]
        assert stream.detector_frames == sum(per_frame)
    finally:
        del video_seg.model.run  # back to the class's method


def test_a_frame_after_an_empty_one_runs_the_detector(video_seg) -> None:
    """No object in view: every frame looks for one, whatever k."""
    stream = video_seg.stream("liver", options=medsam3_rt.StreamOptions(detect_every=4, detection_threshold=1.0, new_object_threshold=1.0))
    for t in range(5):
        assert len(stream.push(moving_blob(t)).object_ids) == 0
    assert stream.detector_frames == 5


def test_detect_every_one_is_the_default_stream(video_seg) -> None:
    a = video_seg.stream("liver", options=medsam3_rt.StreamOptions(**THRESHOLDS))
    b = video_seg.stream("liver", options=medsam3_rt.StreamOptions(detect_every=1, **THRESHOLDS))
    for t in range(4):
        ra, rb = a.push(moving_blob(t)), b.push(moving_blob(t))
        np.testing.assert_array_equal(ra.label_map, rb.label_map)
        np.testing.assert_array_equal(ra.object_ids, rb.object_ids)


def test_cli_detect_every_is_validated(tiny_video_export: Path, tmp_path: Path) -> None:
    proc = cli("segment", str(tiny_video_export), str(tmp_path / "x.png"), "-p", "liver", "-o", str(tmp_path / "o"), "--detect-every", "0")
    assert proc.returncode == 2 and "--detect-every" in proc.stderr
