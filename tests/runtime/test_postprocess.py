"""Post-processing rules of the paper protocol, on hand-made arrays."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from medsam3_rt import postprocess as post


def test_scores_are_query_times_presence_probability() -> None:
    logits = np.array([[0.0, 2.0, -1.0]], np.float32)
    presence = np.array([[1.0]], np.float32)
    s = post.detection_scores(logits, presence)
    np.testing.assert_allclose(s, torch.sigmoid(torch.tensor(logits)) * torch.sigmoid(torch.tensor(presence)), rtol=1e-6)


def test_sigmoid_is_stable_for_large_logits() -> None:
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s = post.sigmoid(np.array([-1e4, -50, 0, 50, 1e4], np.float32))
    np.testing.assert_allclose(s, [0, 0, 0.5, 1, 1], atol=1e-12)


def test_top1_breaks_ties_towards_the_lowest_query() -> None:
    scores = np.array([[0.2, 0.7, 0.7], [0.9, 0.1, 0.9]], np.float32)
    np.testing.assert_array_equal(post.top1(scores), [1, 0])


def test_upsampling_matches_transformers_post_processing() -> None:
    logits = np.random.default_rng(0).normal(size=(2, 16, 16)).astype(np.float32) * 3
    got = post.upsample_probabilities(logits, (37, 53))
    ref = F.interpolate(torch.from_numpy(logits).sigmoid()[None], size=(37, 53), mode="bilinear", align_corners=False)[0]
    np.testing.assert_allclose(got, ref.numpy(), atol=1e-6)


def test_label_map_takes_the_most_confident_prompt_per_pixel() -> None:
    probs = np.zeros((3, 2, 4), np.float32)
    probs[0] = [[0.9, 0.9, 0.6, 0.1], [0.1, 0.1, 0.1, 0.1]]
    probs[1] = [[0.1, 0.95, 0.7, 0.1], [0.6, 0.1, 0.1, 0.1]]
    probs[2] = [[0.99, 0.99, 0.99, 0.99], [0.99, 0.99, 0.99, 0.99]]
    keep = np.array([True, True, False])  # prompt 3 scored below min_score: contributes nothing
    masks, label = post.combine(probs, keep, 0.5)
    np.testing.assert_array_equal(label, [[1, 2, 2, 0], [2, 0, 0, 0]])
    assert masks[0].sum() == 3 and masks[1].sum() == 3 and not masks[2].any()
    assert masks[0, 0, 1] and masks[1, 0, 1]  # per-prompt masks may overlap; the label map does not


def test_boxes_scale_to_pixels() -> None:
    boxes = np.array([[0.0, 0.5, 1.0, 1.0]], np.float32)
    np.testing.assert_allclose(post.scale_boxes(boxes, (100, 200)), [[0, 50, 200, 100]])
