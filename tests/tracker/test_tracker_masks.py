"""Host-side merge steps vs plain references and transformers' own Sam3VideoModel methods."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medsam3_rt.tracker import masks as mk


def _blobs(n: int, size: int = 48, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.full((n, size, size), -3.0, np.float32)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        for _ in range(3):
            cy, cx, r = rng.uniform(8, size - 8, 2).tolist() + [rng.uniform(3, 10)]
            out[i] = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < r * r, rng.uniform(0.5, 5), out[i])
        out[i] += rng.normal(0, 0.3, (size, size)).astype(np.float32)
    return out


def test_mask_iou_matches_definition() -> None:
    a, b = _blobs(3) > 0, _blobs(4, seed=1) > 0
    ref = np.array([[np.logical_and(x, y).sum() / max(np.logical_or(x, y).sum(), 1) for y in b] for x in a])
    np.testing.assert_allclose(mk.mask_iou(a, b), ref, rtol=1e-6)


def test_nms_against_plain_greedy() -> None:
    rng = np.random.default_rng(3)
    masks = _blobs(12, seed=2)
    probs = rng.uniform(0, 1, 12).astype(np.float32)
    keep = mk.nms_masks(probs, masks, 0.3, 0.2)
    # plain reference: repeatedly take the best remaining detection, drop everything overlapping it
    remaining = [i for i in range(12) if probs[i] > 0.3]
    expected = set()
    while remaining:
        best = max(remaining, key=lambda i: (probs[i], -i))
        expected.add(best)
        top = masks[best] > 0
        remaining = [
            i
            for i in remaining
            if i != best and np.logical_and(masks[i] > 0, top).sum() / max(np.logical_or(masks[i] > 0, top).sum(), 1) <= 0.2
        ]
    assert set(np.flatnonzero(keep)) == expected
    assert not keep[probs <= 0.3].any()


def test_fill_holes_against_scipy_labelling() -> None:
    logits = _blobs(4, seed=5)
    logits[0, 20:22, 20:22] = -5  # a 4-pixel hole inside nothing in particular
    got = mk.fill_holes(logits, 16)
    eight = np.ones((3, 3), int)
    for i in range(4):
        expected = logits[i].copy()
        bg = expected <= 0
        lab, _ = ndimage.label(bg, structure=eight)
        sizes = np.bincount(lab.ravel())
        expected[bg & (sizes[lab] <= 16) & (lab > 0)] = 0.1
        fg = expected > 0
        lab, _ = ndimage.label(fg, structure=eight)
        sizes = np.bincount(lab.ravel())
        limit = min(fg.sum() // 2, 16)
        expected[fg & (sizes[lab] <= limit) & (lab > 0)] = -0.1
        np.testing.assert_array_equal(got[i], expected)


def test_bfloat16_round_trip_matches_torch() -> None:
    x = np.random.default_rng(0).normal(size=10000).astype(np.float32) * 100
    ours = mk.from_bfloat16(mk.to_bfloat16(x))
    theirs = torch.from_numpy(x).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(ours, theirs)


@pytest.fixture(scope="module")
def video_model():
    from medsam3_export import random_checkpoint

    return random_checkpoint("tiny", video=True, seed=4).video


def test_shrinkage_and_non_overlap_match_transformers(video_model) -> None:
    logits = _blobs(5, seed=7)
    logits[1] = logits[0] + 0.5  # a near-duplicate that wins most pixels
    groups = np.array([0, 0, 0, 1, 1])
    ref = video_model._suppress_object_pw_area_shrinkage(torch.from_numpy(logits)[:, None], groups.tolist())[:, 0].numpy()
    np.testing.assert_array_equal(mk.suppress_shrunk(logits, groups), ref)
    ref = video_model._apply_non_overlapping_constraints(torch.from_numpy(logits)[:, None])[:, 0].numpy()
    np.testing.assert_array_equal(mk.pixelwise_non_overlap(logits), ref)


def test_object_wise_non_overlap_matches_video_processor() -> None:
    from transformers.models.sam3_video.processing_sam3_video import Sam3VideoProcessor

    proc = object.__new__(Sam3VideoProcessor)
    masks = _blobs(4, seed=9) > 0
    scores = np.array([0.3, 0.9, 0.5, 0.7], np.float32)
    groups = np.array([1, 1, 0, 1])
    ref = (
        proc._apply_object_wise_non_overlapping_constraints(
            torch.from_numpy(masks)[:, None], torch.from_numpy(scores)[:, None], background_value=0, prompt_ids=groups.tolist()
        )[:, 0]
        > 0
    )
    np.testing.assert_array_equal(mk.object_wise_non_overlap(masks, scores, groups), ref.numpy())


def test_occlusion_suppression_matches_transformers(video_model) -> None:
    binary = torch.from_numpy(_blobs(3, seed=11) > 0)
    binary[1] = binary[0]  # identical masks: the more recently occluded one is suppressed
    last = torch.tensor([5, 9, -1])
    ref = video_model._get_objects_to_suppress_based_on_most_recently_occluded(binary, last, [0, 1, 2])
    assert ref.tolist() == [False, True, False]
    # the runtime's version of the same rule (policy.suppress_recently_occluded) on the same inputs
    from medsam3_rt.tracker.policy import suppress_recently_occluded

    masks = np.where(binary.numpy(), 1.0, -1.0).astype(np.float32)
    out, last_occluded = suppress_recently_occluded(masks, np.zeros(3, np.int64), last.numpy(), 12, 0.7)
    assert (out[1] == mk.NO_OBJ_LOGIT).all() and (out[0] > 0).any()
    assert last_occluded.tolist() == [5, 12, -1]
