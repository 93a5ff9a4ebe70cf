"""The streaming merge policy without any model: table-driven cases, properties, golden files.

The golden files (tests/golden/tracker_policy/) hold real policy inputs recorded from a
stream on the tiny video model; the Python policy must reproduce their decisions here, and
the C++ policy in tests/cpp/test_cpp_bindings.py.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tracker_policy_golden as golden
from hypothesis import given, settings
from hypothesis import strategies as st

from medsam3_rt.tracker import masks as mk
from medsam3_rt.tracker import policy

M = 16  # mask side of the hand-made cases

CFG = policy.PolicyConfig(
    score_threshold_detection=0.5,
    det_nms_thresh=0.1,
    assoc_iou_thresh=0.1,
    trk_assoc_iou_thresh=0.5,
    new_det_thresh=0.7,
    high_conf_thresh=0.8,
    high_iou_thresh=0.8,
    recondition_every_nth_frame=16,
    recondition_on_trk_masks=True,
    suppress_overlapping_based_on_recent_occlusion_threshold=0.7,
    init_trk_keep_alive=30,
    max_trk_keep_alive=30,
    min_trk_keep_alive=-1,
    max_objects=10000,
)


def box(y0: int, x0: int, y1: int, x1: int, *, m: int = M) -> np.ndarray:
    """Logits of a rectangle: +4 inside, -4 outside."""
    out = np.full((m, m), -4.0, np.float32)
    out[y0:y1, x0:x1] = 4.0
    return out


EMPTY = np.full((M, M), -4.0, np.float32)
A, A_SHIFTED, B, C = box(0, 0, 8, 8), box(0, 1, 8, 9), box(8, 8, 16, 16), box(0, 8, 8, 16)


def dets(masks: list[np.ndarray], scores: list[float], prompts: list[int]) -> policy.Detections:
    return policy.Detections(
        np.stack(masks) if masks else np.zeros((0, M, M), np.float32), np.array(scores, np.float32), np.array(prompts, np.int64)
    )


def table(ids: list[int], prompts: list[int], last: list[int] | None = None, keep: list[int] | None = None) -> policy.TrackTable:
    n = len(ids)
    arr = lambda v, d: np.array(v if v is not None else [d] * n, np.int64)  # noqa: E731
    return policy.TrackTable(arr(ids, 0), arr(prompts, 0), arr(last, -1), arr(keep, 30))


def stack(masks: list[np.ndarray]) -> np.ndarray:
    return np.stack(masks) if masks else np.zeros((0, M, M), np.float32)


# -- table-driven cases ----------------------------------------------------------------------------

CASES = [
    # name, detections, tracks (ids, prompts), track masks, expected (new dets, unmatched, matched)
    # without tracks every detection above the detection threshold starts an object (as transformers)
    ("appearing: first frame", dets([A, B], [0.9, 0.6], [0, 0]), table([], []), [], ([0, 1], [], [])),
    ("appearing: low score is not new", dets([A, B], [0.9, 0.6], [0, 0]), table([5], [0]), [C], ([0], [5], [])),
    ("tracked: detection matches its track", dets([A_SHIFTED], [0.9], [0]), table([3], [0]), [A], ([], [], [3])),
    ("vanishing: no detection", dets([], [], []), table([3, 4], [0, 0]), [A, B], ([], [3, 4], [])),
    ("vanishing: empty track is not unmatched", dets([], [], []), table([3, 4], [0, 0]), [A, EMPTY], ([], [3], [])),
    ("other prompt never matches", dets([A], [0.9], [1]), table([3], [0]), [A], ([0], [3], [])),
    ("new object beside a track", dets([A, B], [0.9, 0.9], [0, 0]), table([3], [0]), [A], ([1], [], [3])),
    ("duplicate detections of one track", dets([A, A_SHIFTED], [0.9, 0.95], [0, 0]), table([3], [0]), [A], ([], [], [3])),
    ("weak overlap: matched but unmatched for keep-alive", dets([box(0, 6, 8, 14)], [0.9], [0]), table([3], [0]), [A], ([], [3], [3])),
    (
        "many objects, two prompts",
        dets([A, B, C, B], [0.9, 0.9, 0.9, 0.75], [0, 0, 1, 1]),
        table([0, 1, 2], [0, 1, 1]),
        [A, C, EMPTY],
        ([1, 3], [], [0, 1]),
    ),
]


@pytest.mark.parametrize(("name", "det", "tracks", "trk", "want"), CASES, ids=[c[0] for c in CASES])
def test_association_table(name, det, tracks, trk, want) -> None:
    a = policy.associate(det, stack(trk), tracks, CFG)
    assert (a.new.tolist(), a.unmatched.tolist(), a.matched.tolist()) == want


def test_keep_alive_counters_clip() -> None:
    tracks = table([1, 2, 3], [0, 0, 0], keep=[30, -1, 5])
    a = policy.Association(np.zeros(0, np.int64), np.array([2, 3]), np.array([1]), {})
    assert policy.update_keep_alive(tracks, a, CFG).tolist() == [30, -1, 4]


def test_cap_keeps_best_new_detections() -> None:
    scores = np.array([0.5, 0.9, 0.7, 0.9], np.float32)
    assert policy.cap_new_objects(np.array([0, 1, 2, 3]), scores, 2, 4).tolist() == [1, 3]
    assert policy.cap_new_objects(np.array([0, 2]), scores, 5, 4).tolist() == []
    assert policy.cap_new_objects(np.array([0, 2]), scores, 0, 4).tolist() == [0, 2]


def test_merge_appearing_objects_get_consecutive_ids_and_rerun_others() -> None:
    d = policy.merge(dets([A, B], [0.9, 0.8], [0, 0]), table([4], [0]), stack([A]), np.array([2.0], np.float32), 5, 7, CFG)
    assert d.new_dets.tolist() == [1] and d.new_obj_ids.tolist() == [7]
    assert d.rerun.tolist() == [0] and d.recond == {}
    assert d.memory_scores.tolist() == [10.0]


def test_merge_reconditions_on_confident_detection_every_nth_frame() -> None:
    cfg = replace(CFG, recondition_on_trk_masks=False)
    det = dets([A], [0.95], [0])
    for t, want in ((16, {4: 0}), (15, {})):
        d = policy.merge(det, table([4], [0]), stack([A]), np.array([3.0], np.float32), t, 5, cfg)
        assert d.recond == want
    d = policy.merge(det, table([4], [0]), stack([A]), np.array([3.0], np.float32), 16, 5, cfg)
    np.testing.assert_array_equal(d.memory_masks[0], (A >= 0.5).astype(np.float32))  # the detection's mask
    d = policy.merge(det, table([4], [0]), stack([A]), np.array([0.5], np.float32), 16, 5, cfg)
    assert d.recond == {}  # the tracker's logit must pass high_conf_thresh too


def test_overlapping_tracks_recently_occluded_one_is_hidden() -> None:
    d = policy.merge(dets([], [], []), table([1, 2], [0, 0], last=[3, 8]), stack([A, A]), np.zeros(2, np.float32), 10, 3, CFG)
    assert (d.shown[1] == mk.NO_OBJ_LOGIT).all() and (d.shown[0] == A).all()
    assert d.last_occluded.tolist() == [3, 10]
    assert d.memory_scores.tolist() == [10.0, -10.0]


def test_shrunk_track_memory_is_suppressed() -> None:
    big, inner = box(0, 0, 16, 16), box(4, 4, 8, 8)
    big[4:8, 4:8] = 2.0  # the inner object wins its pixels; the big one keeps most of its area
    inner[4:8, 4:8] = 5.0
    d = policy.merge(dets([], [], []), table([1, 2], [0, 0]), stack([big, inner]), np.zeros(2, np.float32), 1, 3, CFG)
    assert d.memory_scores.tolist() == [10.0, 10.0]
    inner_wide = box(0, 0, 16, 16)  # now the big one loses everything to the other
    inner_wide[:] = 5.0
    d = policy.merge(dets([], [], []), table([1, 2], [0, 0]), stack([big, inner_wide]), np.zeros(2, np.float32), 1, 3, CFG)
    assert d.memory_scores.tolist() == [-10.0, 10.0]


def test_frame_objects_drop_empty_and_resolve_overlaps() -> None:
    logits = stack([A, A_SHIFTED, EMPTY, B])
    out = policy.frame_objects(logits, np.array([0, 0, 0, 1]), np.array([0.5, 0.9, 0.9, 0.1], np.float32))
    assert out.keep.tolist() == [0, 1, 3]
    assert not (out.masks[0] & out.masks[1]).any() and out.masks[1].sum() == 64  # the confident one keeps its pixels
    assert set(np.unique(out.label_map)) == {0, 1, 2}


def test_forget_counts_and_removes() -> None:
    counts, removed = policy.forget(np.array([1, 2, 3]), np.array([0, 1, 4]), np.array([2]), 2)
    assert counts.tolist() == [1, 0, 5] and removed.tolist() == [False, False, True]
    counts, removed = policy.forget(np.array([1]), np.array([9]), np.array([], np.int64), None)
    assert counts.tolist() == [10] and removed.tolist() == [False]


META = replace(CFG, mode="meta", max_objects=16)


def test_meta_removes_a_young_track_the_detector_never_confirms() -> None:
    """Hot-start: object 0 (added on frame 0) is tracked but unmatched on 8 frames -> removed on frame 8."""
    d = policy.merge(dets([A], [0.9], [0]), policy.TrackTable.empty(), stack([]), np.zeros(0, np.float32), 0, 0, META)
    assert d.new_obj_ids.tolist() == [0]
    state = d.hotstart
    tracks = policy.TrackTable(np.array([0]), np.array([0]), np.array([-1]), np.array([30]), np.array([0]))
    for t in range(1, 9):
        d = policy.merge(dets([], [], []), tracks, np.stack([A]), np.array([5.0], np.float32), t, 1, META, state)
        state = d.hotstart
        assert d.association.unmatched.tolist() == [0]
        assert d.removed.tolist() == ([0] if t == 8 else []), t
        tracks = replace(tracks, keep_alive=d.keep_alive, last_occluded=d.last_occluded)
    # transformers' rules never remove it
    d = policy.merge(dets([], [], []), tracks, np.stack([A]), np.array([5.0], np.float32), 9, 1, CFG)
    assert d.removed.tolist() == [] and d.hotstart is None


def test_meta_new_objects_leave_existing_memories_alone() -> None:
    tracks = table([0], [0])
    d_meta = policy.merge(dets([A, B], [0.9, 0.9], [0, 0]), tracks, np.stack([A]), np.array([5.0], np.float32), 1, 1, META)
    d_hf = policy.merge(dets([A, B], [0.9, 0.9], [0, 0]), tracks, np.stack([A]), np.array([5.0], np.float32), 1, 1, CFG)
    assert d_meta.new_obj_ids.tolist() == d_hf.new_obj_ids.tolist() == [1]
    assert d_meta.rerun.tolist() == [] and d_hf.rerun.tolist() == [0]


def test_meta_cap_gives_a_stale_track_up_for_a_new_detection() -> None:
    """At the cap: the empty track 1 makes room; the matched track 0 and the confirmed track 2 stay."""
    cfg = replace(META, max_objects=3)
    tracks = policy.TrackTable(np.arange(3), np.zeros(3, np.int64), np.full(3, -1), np.array([30, 30, 30]), np.zeros(3, np.int64))
    trk = np.stack([A, EMPTY, C])
    d = policy.merge(dets([A_SHIFTED, B], [0.9, 0.95], [0, 0]), tracks, trk, np.array([5.0, -5.0, 5.0], np.float32), 1, 3, cfg)
    assert d.new_dets.tolist() == [1] and d.new_obj_ids.tolist() == [3]
    assert d.evicted.tolist() == [1] and d.removed.tolist() == []
    # transformers' rules drop the new detection instead
    d = policy.merge(
        dets([A_SHIFTED, B], [0.9, 0.95], [0, 0]), tracks, trk, np.array([5.0, -5.0, 5.0], np.float32), 1, 3, replace(CFG, max_objects=3)
    )
    assert d.new_dets.tolist() == [] and d.evicted.tolist() == []


def test_meta_cap_never_gives_up_a_confirmed_track() -> None:
    cfg = replace(META, max_objects=2)
    tracks = policy.TrackTable(np.arange(2), np.zeros(2, np.int64), np.full(2, -1), np.array([30, 30]), np.zeros(2, np.int64))
    d = policy.merge(dets([A, B], [0.9, 0.95], [0, 0]), tracks, np.stack([A, C]), np.array([5.0, 5.0], np.float32), 1, 2, cfg)
    assert d.new_dets.tolist() == [] and d.evicted.tolist() == []


def test_frame_objects_drop_hidden_rows_before_resolving_overlaps() -> None:
    logits = np.stack([A, A_SHIFTED])
    shown = policy.frame_objects(logits, np.array([0, 0]), np.array([0.9, 0.1], np.float32), np.array([True, False]))
    assert shown.keep.tolist() == [1] and shown.masks[0].sum() == (A_SHIFTED > 0).sum()


def test_unknown_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="mode"):
        replace(CFG, mode="sam2")  # type: ignore[arg-type]


# -- properties ------------------------------------------------------------------------------------


@st.composite
def frames(draw: st.DrawFn) -> tuple[policy.Detections, policy.TrackTable, np.ndarray, np.ndarray]:
    """Random rectangles as detections and tracks of up to three prompts."""
    m = 12

    def rect() -> np.ndarray:
        y0, x0 = draw(st.integers(0, m - 1)), draw(st.integers(0, m - 1))
        y1, x1 = draw(st.integers(y0, m)), draw(st.integers(x0, m))
        return box(y0, x0, y1, x1, m=m)

    n_det, n_trk = draw(st.integers(0, 6)), draw(st.integers(0, 6))
    det = policy.Detections(
        np.stack([rect() for _ in range(n_det)]) if n_det else np.zeros((0, m, m), np.float32),
        np.array([draw(st.floats(0.5, 1.0, width=32)) for _ in range(n_det)], np.float32),
        np.array([draw(st.integers(0, 2)) for _ in range(n_det)], np.int64),
    )
    ids = sorted(draw(st.sets(st.integers(0, 50), min_size=n_trk, max_size=n_trk)))
    tracks = policy.TrackTable(
        np.array(ids, np.int64),
        np.array([draw(st.integers(0, 2)) for _ in range(n_trk)], np.int64),
        np.array([draw(st.integers(-1, 9)) for _ in range(n_trk)], np.int64),
        np.array([draw(st.integers(-1, 30)) for _ in range(n_trk)], np.int64),
    )
    trk = np.stack([rect() for _ in range(n_trk)]) if n_trk else np.zeros((0, m, m), np.float32)
    scores = np.array([draw(st.floats(-5, 5, width=32)) for _ in range(n_trk)], np.float32)
    return det, tracks, trk, scores


@settings(max_examples=150, deadline=None)
@given(frames(), st.integers(1, 8))
def test_merge_properties(frame, max_objects: int) -> None:
    det, tracks, trk, scores = frame
    cfg = replace(CFG, max_objects=max_objects, recondition_every_nth_frame=1, high_conf_thresh=0.6, high_iou_thresh=0.5)
    d = policy.merge(det, tracks, trk, scores, 10, 51, cfg)
    a = d.association
    ious = mk.mask_iou(det.masks > 0, trk > 0) * (det.prompt_ids[:, None] == tracks.prompt_ids[None, :])
    if len(tracks) == 0:  # the first objects: every detection (transformers)
        assert a.new.tolist() == list(range(len(det.scores)))
    for i in a.new if len(tracks) else []:  # a new object overlaps no track of its prompt and is confident
        assert det.scores[i] >= cfg.new_det_thresh and not (ious[i] >= cfg.assoc_iou_thresh).any()
    assert set(a.matched.tolist()) <= set(tracks.obj_ids.tolist()) and set(a.unmatched.tolist()) <= set(tracks.obj_ids.tolist())
    # the cap: never more objects than max_objects unless the tracks alone exceed it; the best scores win
    assert len(d.new_dets) == min(len(a.new), max(max_objects - len(tracks), 0))
    assert set(d.new_dets.tolist()) <= set(a.new.tolist())
    if len(d.new_dets) and len(d.new_dets) < len(a.new):
        dropped = sorted(set(a.new.tolist()) - set(d.new_dets.tolist()))
        assert det.scores[d.new_dets].min() >= det.scores[dropped].max()
    assert d.new_obj_ids.tolist() == list(range(51, 51 + len(d.new_dets)))
    assert (
        (d.keep_alive >= cfg.min_trk_keep_alive) & (d.keep_alive <= max(cfg.max_trk_keep_alive, tracks.keep_alive.max(initial=0)))
    ).all()
    assert set(d.recond) <= set(a.high_conf) and all(0 <= v < len(det.scores) for v in d.recond.values())
    # suppression only hides masks and only marks occlusions now
    changed = ~(d.shown == trk).all(axis=(1, 2))
    assert (d.shown[changed] == mk.NO_OBJ_LOGIT).all()
    assert ((d.last_occluded == tracks.last_occluded) | (d.last_occluded == 10)).all()
    assert set(d.rerun.tolist()) == ({i for i, o in enumerate(tracks.obj_ids) if int(o) not in d.recond} if len(d.new_dets) else set())
    # memory masks of one prompt: every kept object keeps >= 30 % of its area under pixel-wise non-overlap
    assert ((d.memory_scores == 10.0) == (d.memory_masks > 0).any(axis=(1, 2))).all()


@settings(max_examples=100, deadline=None)
@given(frames())
def test_frame_objects_properties(frame) -> None:
    det, _, _, _ = frame
    out = policy.frame_objects(det.masks, det.prompt_ids, det.scores)
    # empty logits are dropped before the non-overlap (which may still empty a mask, as in transformers)
    assert out.keep.tolist() == np.flatnonzero((det.masks > 0).any(axis=(1, 2))).tolist() and len(out.keep) == len(out.masks)
    for p in np.unique(det.prompt_ids):
        assert (out.masks[det.prompt_ids[out.keep] == p].sum(axis=0) <= 1).all()
    assert ((out.label_map > 0) == out.masks.any(axis=0)).all()
    assert (out.masks <= (det.masks[out.keep] > 0)).all()


# -- golden files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", golden.SCENARIOS, ids=lambda s: s.name)
def test_golden_decisions(scenario: golden.Scenario) -> None:
    """The Python policy on the recorded inputs makes the recorded decisions (masks to the bit)."""
    cfg, frames_ = golden.load(scenario.name)
    assert len(frames_) == len(scenario.kinds)
    for f in frames_:
        assert golden.decide(cfg, f) == f["expected"], f"frame {f['t']}"
    if cfg.mode == "meta":  # each frame's hot-start state is the previous frame's, pruned
        assert frames_[0]["hotstart"] == golden.hotstart_json(golden.hotstart.HotstartState())
        for f, nxt in itertools.pairwise(frames_):
            assert nxt["hotstart"] == f["expected"]["hotstart_after"], f"frame {nxt['t']}"


def test_golden_files_cover_every_rule() -> None:
    """The recordings exercise what they are meant to: new, matched, unmatched, cap, re-anchoring, removal,
    and (mode "meta") hot-start removal and eviction of stale tracks at the cap."""
    seen: dict[str, int] = {}
    for s in golden.SCENARIOS:
        _, frames_ = golden.load(s.name)
        for f in frames_:
            e = f["expected"]
            prompts = f["tracks"].prompt_ids
            for key in ("new_dets", "matched", "unmatched", "recond", "rerun"):
                seen[key] = seen.get(key, 0) + bool(e[key])
            seen["removed"] = seen.get("removed", 0) + any(e["removed"])
            seen["capped"] = seen.get("capped", 0) + (len(e["new"]) > len(e["new_dets"]))
            seen["several per prompt"] = seen.get("several per prompt", 0) + (len(prompts) > len(set(prompts.tolist())))
            seen["memory suppressed"] = seen.get("memory suppressed", 0) + (-10.0 in e["memory_scores"])
            if s.options.get("policy") == "meta":
                seen["hot-start removal"] = seen.get("hot-start removal", 0) + bool(e["hotstart_removed"])
                seen["evicted at the cap"] = seen.get("evicted at the cap", 0) + bool(e["evicted"])
                always = policy.ALWAYS_OCCLUDED in e["last_occluded"]
                seen["removed on its first tracked frame"] = seen.get("removed on its first tracked frame", 0) + always
    missing = [k for k, v in seen.items() if v == 0]
    assert not missing, f"the golden streams never exercise {missing}: {seen}"


@pytest.mark.parametrize("scenario", golden.SCENARIOS, ids=lambda s: s.name)
def test_golden_files_match_a_live_stream(tiny_video_export: Path, scenario: golden.Scenario, tmp_path: Path) -> None:
    """A live stream on the tiny model makes the recorded decisions (regenerate with MEDSAM3RT_REGENERATE_GOLDEN=1)."""
    cfg, records = golden.record(tiny_video_export, scenario)
    if os.environ.get("MEDSAM3RT_REGENERATE_GOLDEN") == "1":
        golden.write(scenario, cfg, records)
    stored_cfg, stored = golden.load(scenario.name)
    assert stored_cfg == cfg
    assert len(records) == len(stored)
    for r, f in zip(records, stored, strict=True):
        live = golden.live_decisions(r)
        assert live == f["live"], f"frame {r.frame_index}: the stream decides differently from the golden file"
        assert {k: f["expected"][k] for k in live} == live, f"frame {r.frame_index}: fixed-point inputs change a decision"
