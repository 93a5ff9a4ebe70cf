"""The 3D evaluation's metrics, on masks whose answers are known by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("scipy")

from medsam3_training.volume_eval import components3d, dice3d, markdown_3d, neighbour_dice


def test_dice3d_pools_voxels_and_is_nan_when_both_are_empty() -> None:
    a = np.zeros((3, 4, 4), bool)
    b = np.zeros_like(a)
    assert math.isnan(dice3d(a, b))
    a[0, :2, :2] = True  # 4 voxels
    b[0, :2, :] = True  # 8 voxels, 4 shared
    assert dice3d(a, b) == pytest.approx(2 * 4 / 12)
    assert dice3d(a, np.zeros_like(a)) == 0.0


def test_neighbour_dice_skips_pairs_where_both_slices_are_empty() -> None:
    m = np.zeros((4, 4, 4), bool)
    m[0, :2, :2] = True
    m[1, :2, :2] = True  # identical to slice 0: 1.0
    m[2, 2:, 2:] = True  # disjoint from slice 1: 0.0; slice 3 empty: 0.0 (one side empty)
    assert neighbour_dice(m) == pytest.approx((1.0 + 0.0 + 0.0) / 3)
    assert math.isnan(neighbour_dice(np.zeros((3, 2, 2), bool)))


def test_components_are_26_connected_across_slices() -> None:
    m = np.zeros((3, 5, 5), bool)
    m[0, 0, 0] = True
    m[1, 1, 1] = True  # touches (0,0,0) by a corner: one component
    m[2, 4, 4] = True  # apart: a second one
    assert components3d(m) == 2
    assert components3d(np.zeros_like(m)) == 0


def test_markdown_marks_the_best_mode_and_counts_wins() -> None:
    mode = {"dice": 0.5, "consistency": 0.8, "components": 2.0, "ms_per_slice": 30.0}
    result = {
        "tracker": True,
        "modes": ["per-slice detection", "forward tracking", "bidirectional tracking"],
        "datasets": {
            "d": {
                "slabs": ["axial 0-9"],
                "slices": 10,
                "concepts": {
                    "x": {
                        "slabs": 1,
                        "reference": {"consistency": 0.9, "components": 1.0},
                        "modes": {
                            "per-slice detection": mode,
                            "forward tracking": {**mode, "dice": 0.7},
                            "bidirectional tracking": {**mode, "dice": 0.6},
                        },
                    }
                },
                "mean_dice": {"per-slice detection": 0.5, "forward tracking": 0.7, "bidirectional tracking": 0.6},
                "beats_per_slice": {"forward tracking": 1, "bidirectional tracking": 1},
            }
        },
    }
    lines = markdown_3d(result, "T")
    row = next(line for line in lines if line.startswith("| x |"))
    assert "| 50.0 | **70.0** | 60.0 |" in row
    assert any("forward tracking beats per-slice detection on 1 of 1" in line for line in lines)
