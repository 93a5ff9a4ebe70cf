"""Targets as SAM3's detector is supervised: instances, boxes from masks, masks at head resolution, padding."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from medsam3_training.targets import boxes_from_masks, build_target, collate_targets, instance_masks, resize_masks  # noqa: E402


def blobs() -> tuple[np.ndarray, np.ndarray]:
    m = np.zeros((10, 12), bool)
    m[1:4, 1:3] = True  # 6 px
    m[5:9, 6:11] = True  # 20 px
    m[9, 0] = True  # 1 px
    ids = np.zeros((10, 12), np.int32)
    ids[1:4, 1:3] = 7
    ids[5:9, 6:9] = 3
    ids[5:9, 9:11] = 4  # two touching instances that are one connected component
    return m, ids


def test_instances_from_connected_components_largest_first() -> None:
    m, _ = blobs()
    inst = instance_masks(m, "components")
    assert inst.shape == (3, 10, 12)
    assert [int(i.sum()) for i in inst] == [20, 6, 1]
    assert np.array_equal(inst.any(axis=0), m)
    assert [int(i.sum()) for i in instance_masks(m, "components", min_area=2)] == [20, 6]


def test_semantic_and_labelled_instances() -> None:
    m, ids = blobs()
    assert instance_masks(m, "semantic").shape == (1, 10, 12)
    assert instance_masks(np.zeros((4, 4), bool), "semantic").shape == (0, 4, 4)
    by_id = instance_masks(m, "labels", instance_ids=ids)
    assert [int(i.sum()) for i in by_id] == [12, 8, 6]  # ids 3, 4, 7; the lone pixel has no id
    with pytest.raises(ValueError):
        instance_masks(m, "labels")


def test_boxes_are_pixel_edges_normalised() -> None:
    m, _ = blobs()
    boxes = boxes_from_masks(instance_masks(m, "components"))
    np.testing.assert_allclose(boxes[0], [6 / 12, 5 / 10, 11 / 12, 9 / 10])
    np.testing.assert_allclose(boxes[2], [0, 9 / 10, 1 / 12, 1.0])


def test_masks_resized_by_area_coverage() -> None:
    m = np.zeros((1, 8, 8), bool)
    m[0, :4, :4] = True  # exactly the top-left quarter
    m[0, 4, 4] = True  # 1/4 of a 2x2 cell: dropped at 4x4
    small = resize_masks(m, 4)
    assert small.shape == (1, 4, 4)
    assert small[0, :2, :2].all() and small.sum() == 4
    up = resize_masks(m[:, :4, :4], 8)  # upsampling is bilinear, >= 0.5
    assert up.shape == (1, 8, 8) and up.all()


def test_target_padding_truncation_and_collation() -> None:
    m, _ = blobs()
    inst = instance_masks(m, "components")
    t = build_target(inst, mask_size=5, max_instances=2)
    assert t.count == 2, "more instances than queries: the largest are kept"
    assert t.masks.shape == (2, 5, 5) and t.semantic.shape == (5, 5)
    np.testing.assert_array_equal(t.semantic, t.masks.any(axis=0))
    neg = build_target(np.zeros((0, 10, 12), bool), mask_size=5, max_instances=2)
    assert neg.count == 0 and not neg.semantic.any()
    batch = collate_targets([t, neg, build_target(inst[2:], 5, 4)], num_queries=4)
    assert batch.boxes_xyxy.shape == (3, 4, 4) and batch.valid.tolist() == [[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]]
    assert batch.counts.tolist() == [2, 0, 1] and batch.masks.shape == (3, 5, 5)
    assert batch.present.tolist() == [1.0, 0.0, 1.0]
    assert batch.packed_index(torch.tensor([0, 0, 2]), torch.tensor([0, 1, 0])).tolist() == [0, 1, 2]
    assert (batch.boxes_xyxy[~batch.valid] == 0).all()
