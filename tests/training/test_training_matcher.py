"""Matchers of the Medical SAM3 recipe against brute force and independent cost formulas (Table 2)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("scipy")

from medsam3_training.config import MatcherConfig, O2MConfig  # noqa: E402
from medsam3_training.matcher import HungarianMatcher, OneToManyMatcher  # noqa: E402
from medsam3_training.targets import BatchTargets  # noqa: E402


def random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    c = rng.uniform(0.2, 0.8, (n, 2))
    wh = rng.uniform(0.05, 0.4, (n, 2))
    return np.concatenate([c - wh / 2, c + wh / 2], axis=1)


def targets_of(boxes_per_image: list[np.ndarray], nq: int) -> BatchTargets:
    b = len(boxes_per_image)
    boxes = torch.zeros(b, nq, 4)
    valid = torch.zeros(b, nq, dtype=torch.bool)
    for i, bx in enumerate(boxes_per_image):
        boxes[i, : len(bx)] = torch.tensor(bx, dtype=torch.float32)
        valid[i, : len(bx)] = True
    counts = torch.tensor([len(bx) for bx in boxes_per_image])
    return BatchTargets(boxes, valid, counts, torch.zeros(int(counts.sum()), 4, 4), torch.zeros(b, 4, 4))


# ---- independent reference formulas (plain Python floats) --------------------------------------


def ref_iou_giou(a, b) -> tuple[float, float]:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    union = area(a) + area(b) - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return inter / union, inter / union - (hull - union) / hull


def ref_cost(logit: float, box, tgt, cfg: MatcherConfig) -> float:
    p = 1 / (1 + math.exp(-logit))
    _, giou = ref_iou_giou(box, tgt)
    if cfg.stable:
        p = p * (giou + 1) / 2
    focal = -cfg.alpha * (1 - p) ** cfg.gamma * math.log(p) + (1 - cfg.alpha) * p**cfg.gamma * math.log(1 - p)
    cxcywh = lambda r: [(r[0] + r[2]) / 2, (r[1] + r[3]) / 2, r[2] - r[0], r[3] - r[1]]  # noqa: E731
    l1 = sum(abs(u - v) for u, v in zip(cxcywh(box), cxcywh(tgt)))
    return cfg.cost_class * focal + cfg.cost_bbox * l1 - cfg.cost_giou * giou


@pytest.mark.parametrize("stable", [False, True])
def test_cost_matrix_matches_table2_formula(stable: bool) -> None:
    cfg = MatcherConfig(stable=stable)
    assert (cfg.cost_class, cfg.cost_bbox, cfg.cost_giou, cfg.alpha, cfg.gamma) == (2.0, 5.0, 2.0, 0.25, 2.0)
    rng = np.random.default_rng(0)
    logits, boxes, tgts = rng.normal(0, 2, 6), random_boxes(rng, 6), random_boxes(rng, 3)
    got = HungarianMatcher(cfg).cost_matrix(torch.tensor(logits), torch.tensor(boxes), torch.tensor(tgts)).numpy()
    want = np.array([[ref_cost(logits[q], boxes[q], tgts[t], cfg) for t in range(3)] for q in range(6)])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_hungarian_is_the_minimum_cost_assignment(seed: int) -> None:
    """Every injective instance -> query assignment is enumerated; the matcher's total cost is the minimum."""
    rng = np.random.default_rng(seed)
    q = 5
    per_image = [random_boxes(rng, int(rng.integers(0, 4))) for _ in range(3)]
    logits = rng.normal(0, 2, (3, q))
    boxes = np.stack([random_boxes(rng, q) for _ in range(3)])
    cfg = MatcherConfig()
    b_idx, q_idx, t_idx = HungarianMatcher(cfg)(torch.tensor(logits), torch.tensor(boxes), targets_of(per_image, q))
    for b, tg in enumerate(per_image):
        sel = b_idx == b
        got = {int(t): int(qq) for qq, t in zip(q_idx[sel], t_idx[sel])}
        assert sorted(got) == list(range(len(tg))), "every instance gets exactly one query"
        assert len(set(got.values())) == len(got), "no query serves two instances"
        cost = [[ref_cost(logits[b, qq], boxes[b, qq], tg[t], cfg) for t in range(len(tg))] for qq in range(q)]
        best = min((sum(cost[perm[t]][t] for t in range(len(tg))) for perm in itertools.permutations(range(q), len(tg))), default=0.0)
        mine = sum(cost[qq][t] for t, qq in got.items())
        assert mine == pytest.approx(best, abs=1e-9), (b, got)


def ref_one_to_many(logits, boxes, tgts, cfg: O2MConfig) -> set[tuple[int, int]]:
    """A straightforward re-statement: per instance its top-k queries above the threshold; a query
    claimed by several instances goes to the one with the highest quality (lowest index on ties)."""
    q = len(logits)
    qual = {}
    for i in range(q):
        p = 1 / (1 + math.exp(-logits[i]))
        for t in range(len(tgts)):
            qual[i, t] = cfg.alpha * p + (1 - cfg.alpha) * ref_iou_giou(boxes[i], tgts[t])[0]
    claims: dict[int, list[int]] = {}
    for t in range(len(tgts)):
        ranked = sorted(range(q), key=lambda i: (-qual[i, t], i))[: cfg.topk]
        for i in ranked:
            if qual[i, t] > cfg.threshold:
                claims.setdefault(i, []).append(t)
    return {(i, max(ts, key=lambda t: (qual[i, t], -t))) for i, ts in claims.items()}


@pytest.mark.parametrize("seed", range(8))
def test_one_to_many_matches_its_definition(seed: int) -> None:
    cfg = O2MConfig()
    assert (cfg.topk, cfg.threshold, cfg.alpha, cfg.weight) == (4, 0.4, 0.3, 2.0)
    rng = np.random.default_rng(100 + seed)
    q = 12
    tg = random_boxes(rng, int(rng.integers(1, 4)))
    # queries near the targets, so that many pass the threshold and instances compete for them
    near = tg[rng.integers(0, len(tg), q)] + rng.normal(0, 0.03, (q, 4))
    logits = rng.normal(0, 1.5, q)
    b, qi, ti = OneToManyMatcher(cfg)(torch.tensor(logits[None]), torch.tensor(near[None]), targets_of([tg], q))
    got = {(int(a), int(c)) for a, c in zip(qi, ti)}
    assert got == ref_one_to_many(logits, near, tg, cfg)
    assert len({a for a, _ in got}) == len(got), "a query has at most one target"
    per_target = [sum(1 for _, c in got if c == t) for t in range(len(tg))]
    assert max(per_target) <= cfg.topk
    assert (b == 0).all()


def test_one_to_many_gives_a_contested_query_to_its_best_instance() -> None:
    tg = np.array([[0.1, 0.1, 0.5, 0.5], [0.15, 0.15, 0.55, 0.55]])
    boxes = np.array([[0.1, 0.1, 0.5, 0.5], [0.15, 0.15, 0.55, 0.55], [0.12, 0.12, 0.52, 0.52], [0.8, 0.8, 0.9, 0.9]])
    logits = np.array([2.0, 2.0, 2.0, 2.0])
    cfg = O2MConfig(topk=3)
    _, qi, ti = OneToManyMatcher(cfg)(torch.tensor(logits[None]), torch.tensor(boxes[None]), targets_of([tg], 4))
    got = dict(zip(qi.tolist(), ti.tolist()))
    assert got[0] == 0 and got[1] == 1, got
    assert 3 not in got, "a far-away query stays unmatched"
    assert got == {i: t for i, t in ref_one_to_many(logits, boxes, tg, cfg)}


def test_images_without_instances_get_no_matches() -> None:
    rng = np.random.default_rng(3)
    tg = [np.zeros((0, 4)), random_boxes(rng, 2)]
    logits, boxes = torch.tensor(rng.normal(0, 1, (2, 4))), torch.tensor(np.stack([random_boxes(rng, 4) for _ in range(2)]))
    for m in (HungarianMatcher(), OneToManyMatcher(O2MConfig(threshold=0.0))):
        b, _, _ = m(logits, boxes, targets_of(tg, 4))
        assert (b == 1).all() and len(b) >= 2
    b, q, t = HungarianMatcher()(logits[:1], boxes[:1], targets_of(tg[:1], 4))
    assert b.numel() == q.numel() == t.numel() == 0
