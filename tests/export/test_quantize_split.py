"""The calibration / hold-out split of `medsam3-rt quantize` (which images the gate sees)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from medsam3_export.quantize import split_calibration

from medsam3_rt.errors import InputError


def _folder(tmp_path: Path, n: int) -> Path:
    for i in range(n):
        cv2.imwrite(str(tmp_path / f"im{i:02d}.png"), np.full((8, 8), i, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


@pytest.mark.parametrize(("n", "holdout", "held"), [(2, 0.25, 1), (8, 0.25, 2), (10, 0.5, 5), (3, 0.9, 2)])
def test_split_is_disjoint_complete_and_deterministic(tmp_path: Path, n: int, holdout: float, held: int) -> None:
    calib, hold = split_calibration(_folder(tmp_path, n), holdout)
    assert len(hold) == held and len(calib) == n - held
    assert not set(calib) & set(hold) and len(calib) + len(hold) == n
    assert split_calibration(tmp_path, holdout) == (calib, hold)


@pytest.mark.parametrize("holdout", [0.0, 1.0, -0.1])
def test_split_rejects_bad_fraction(tmp_path: Path, holdout: float) -> None:
    with pytest.raises(InputError, match="--holdout"):
        split_calibration(_folder(tmp_path, 4), holdout)


def _report(graph: str, fp32_ms: float, int8_ms: float):
    from medsam3_export.quantize import GraphReport

    return GraphReport(graph, {"out.max_rel": 0.01}, fp32_ms, int8_ms, 10, 2)


def test_automatic_graph_choice_keeps_only_faster_graphs_largest_saving_first() -> None:
    """Without --graphs: both when both are faster, then the single graph that saves most, never a slower one."""
    from medsam3_export.quantize import _subsets

    both = {"image_backbone": _report("image_backbone", 60, 40), "detector": _report("detector", 400, 350)}
    assert _subsets(both, explicit=False) == [("image_backbone", "detector"), ("detector",), ("image_backbone",)]
    slow_det = {"image_backbone": _report("image_backbone", 60, 40), "detector": _report("detector", 400, 420)}
    assert _subsets(slow_det, explicit=False) == [("image_backbone",)]
    assert _subsets({"detector": _report("detector", 400, 420)}, explicit=False) == []
    assert _subsets(slow_det, explicit=True) == [("image_backbone", "detector")]  # asked for: gated as asked


@pytest.mark.parametrize(
    ("given", "graphs"),
    [
        (["backbone,detector"], ("image_backbone", "detector")),
        (["detector", "backbone"], ("image_backbone", "detector")),
        (["image_backbone"], ("image_backbone",)),
        ([], ()),
    ],
)
def test_parse_graphs(given: list[str], graphs: tuple[str, ...]) -> None:
    from medsam3_export.quantize import parse_graphs

    assert parse_graphs(given) == graphs


def test_parse_graphs_rejects_other_graphs() -> None:
    from medsam3_export.quantize import parse_graphs

    from medsam3_rt.errors import UsageError

    with pytest.raises(UsageError, match="tracker_step"):
        parse_graphs(["backbone,tracker_step"])
