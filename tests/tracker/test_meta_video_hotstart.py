"""Meta's hot-start rules: medsam3_rt.tracker.hotstart against Meta's own `_process_hotstart`.

Random per-frame association events (new objects, matches, shared detections, unmatched and
empty tracks) are fed to both; every frame must remove and suppress the same objects.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest

from medsam3_rt.tracker.hotstart import HotstartConfig, HotstartState, hotstart_step, prune

video_base = pytest.importorskip("sam3.model.sam3_video_base")

CONFIGS = [
    HotstartConfig(),  # Meta's build_sam3_video_model defaults
    HotstartConfig(hotstart_delay=6, hotstart_unmatch_thresh=3, hotstart_dup_thresh=2),
    HotstartConfig(
        hotstart_delay=10,
        hotstart_unmatch_thresh=4,
        hotstart_dup_thresh=3,
        init_trk_keep_alive=3,
        max_trk_keep_alive=5,
        suppress_unmatched_only_within_hotstart=False,
        decrease_trk_keep_alive_for_empty_masklets=True,
    ),
]


def _events(rng: np.random.Generator, alive: list[int], next_id: int) -> tuple[dict[int, list[int]], list[int], list[int], list[int], int]:
    """One frame of association outcomes over the alive objects."""
    n_new = int(rng.integers(0, 3))
    new = list(range(next_id, next_id + n_new))
    roles = rng.integers(0, 3, size=len(alive))  # 0 matched, 1 unmatched, 2 empty
    matched = [o for o, r in zip(alive, roles, strict=True) if r == 0]
    det: dict[int, list[int]] = {}
    d = 0
    while matched:  # detections matching 1..3 tracks (several: duplicates)
        k = int(rng.integers(1, 4))
        det[d], matched = matched[:k], matched[k:]
        d += 1
    for _ in new:  # the new objects' own detections match nothing
        det[d] = []
        d += 1
    unmatched = [o for o, r in zip(alive, roles, strict=True) if r == 1]
    empty = [o for o, r in zip(alive, roles, strict=True) if r == 2]
    return det, new, empty, unmatched, next_id + n_new


@pytest.mark.parametrize("pruned", [False, True], ids=["as-meta", "pruned"])
@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_hotstart_equals_meta(cfg: HotstartConfig, seed: int, pruned: bool) -> None:
    """Frame by frame equal to Meta's; `prune` (what Stream runs to stay bounded) changes no decision."""
    meta_self = SimpleNamespace(**cfg.__dict__)
    meta_md = {
        "obj_first_frame_idx": {},
        "unmatched_frame_inds": defaultdict(list),
        "trk_keep_alive": {},
        "overlap_pair_to_frame_inds": defaultdict(list),
        "removed_obj_ids": set(),
        "suppressed_obj_ids": defaultdict(set),
    }
    rng = np.random.default_rng(seed)
    state, alive, next_id = HotstartState(), [], 0
    removed_total = suppressed_total = 0
    for t in range(60):
        det, new, empty, unmatched, next_id = _events(rng, alive, next_id)
        meta_removed, meta_md = video_base.Sam3VideoBase._process_hotstart(
            meta_self,
            frame_idx=t,
            num_frames=60,
            reverse=False,
            det_to_matched_trk_obj_ids={k: np.array(v, np.int64) for k, v in det.items()},
            new_det_obj_ids=np.array(new, np.int64),
            empty_trk_obj_ids=np.array(empty, np.int64),
            unmatched_trk_obj_ids=np.array(unmatched, np.int64),
            rank0_metadata=meta_md,
            tracker_metadata={},
        )
        step = hotstart_step(state, t, det, new, empty, unmatched, cfg)
        assert set(map(int, meta_removed)) == set(step.removed), f"frame {t}"
        assert set(map(int, meta_md["suppressed_obj_ids"][t])) == set(step.suppressed), f"frame {t}"
        meta_keep = {int(k): v for k, v in meta_md["trk_keep_alive"].items()}
        assert (meta_keep if not pruned else {o: meta_keep[o] for o in step.state.keep_alive}) == step.state.keep_alive
        state = step.state
        alive = [o for o in alive + new if o not in step.removed and o not in state.removed]
        if pruned:
            state = prune(state, alive, t, cfg)
        removed_total += len(step.removed)
        suppressed_total += len(step.suppressed)
    assert removed_total > 0  # the sequences exercise the removal rules
    if not cfg.suppress_unmatched_only_within_hotstart:
        assert suppressed_total > 0


def test_step_does_not_modify_state() -> None:
    state = HotstartState()
    step = hotstart_step(state, 0, {0: []}, [0], [], [], HotstartConfig())
    assert state.keep_alive == {} and step.state.keep_alive == {0: 30}


def test_creating_an_object_twice_is_refused() -> None:
    step = hotstart_step(HotstartState(), 0, {}, [0], [], [], HotstartConfig())
    with pytest.raises(ValueError, match="created twice"):
        hotstart_step(step.state, 1, {}, [0], [], [], HotstartConfig())


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matched_tracks_equals_meta_association(seed: int) -> None:
    """Overlapping random blobs: the det -> tracks map and the empty tracks are Meta's."""
    torch = pytest.importorskip("torch")
    from medsam3_rt.tracker.hotstart import matched_tracks

    rng = np.random.default_rng(seed)
    m = 32

    def blobs(n: int) -> np.ndarray:
        out = np.full((n, m, m), -5.0, np.float32)
        for i in range(n):
            if rng.random() < 0.2:
                continue  # an empty mask
            y, x, h, w = rng.integers(0, 20), rng.integers(0, 20), rng.integers(4, 12), rng.integers(4, 12)
            out[i, y : y + h, x : x + w] = rng.uniform(0.5, 5.0)
        return out

    trk = blobs(6)
    det = np.concatenate([trk[:3] + rng.normal(0, 0.1, (3, m, m)).astype(np.float32), blobs(3)])
    obj_ids = np.array([3, 5, 7, 8, 11, 12], np.int64)
    meta_self = SimpleNamespace(assoc_iou_thresh=0.1, trk_assoc_iou_thresh=0.5, new_det_thresh=0.7, o2o_matching_masklets_enable=False)
    scores = rng.uniform(0.5, 1.0, len(det)).astype(np.float32)
    _, _, meta_map, _, meta_empty = video_base.Sam3VideoBase._associate_det_trk(
        meta_self, torch.from_numpy(det), scores, torch.from_numpy(trk), obj_ids
    )
    ours, empty = matched_tracks(det, np.zeros(len(det), np.int64), trk, obj_ids, np.zeros(len(trk), np.int64), 0.1)
    assert sorted(ours) == sorted(meta_map)
    for d, objs in ours.items():
        np.testing.assert_array_equal(objs, meta_map[d])
    np.testing.assert_array_equal(empty, meta_empty)
    assert any(len(v) for v in ours.values())  # some detections match tracks
