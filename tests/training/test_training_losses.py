"""Every loss term of the set-prediction objective against values computed by hand (Table 2)."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("scipy")

from medsam3_training.config import LossConfig, O2MConfig  # noqa: E402
from medsam3_training.losses import DetectorOutputs, Normalizers, SetCriterion, dice_per_row, sigmoid_focal  # noqa: E402
from medsam3_training.targets import BatchTargets  # noqa: E402


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def bce(x: float, t: float) -> float:
    return -(t * math.log(sig(x)) + (1 - t) * math.log(1 - sig(x)))


def focal(x: float, t: float, alpha: float, gamma: float) -> float:
    p = sig(x)
    p_t = p * t + (1 - p) * (1 - t)
    a_t = alpha * t + (1 - alpha) * (1 - t)
    return a_t * (1 - p_t) ** gamma * bce(x, t)


INST = np.array([[1.0, 0.0], [1.0, 1.0]])


@pytest.fixture
def case():
    """B = 2 images, Q = 3 queries; image 0 has one instance (matched to query 0), image 1 none."""
    logits = torch.tensor([[1.0, -1.0, 0.0], [0.5, -0.5, 2.0]])
    boxes = torch.tensor(
        [
            [[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.4, 0.6], [0.6, 0.6, 0.9, 0.9]],
            [[0.1, 0.1, 0.2, 0.2], [0.3, 0.3, 0.4, 0.4], [0.5, 0.5, 0.6, 0.6]],
        ]
    )
    presence = torch.tensor([1.5, -0.5])
    tboxes = torch.zeros(2, 3, 4)
    tboxes[0, 0] = torch.tensor([0.1, 0.1, 0.5, 0.4])
    valid = torch.zeros(2, 3, dtype=torch.bool)
    valid[0, 0] = True
    targets = BatchTargets(
        tboxes,
        valid,
        torch.tensor([1, 0]),
        torch.tensor(INST, dtype=torch.float32)[None],
        torch.stack([torch.tensor(INST), torch.zeros(2, 2)]).float(),
    )
    match = (torch.tensor([0]), torch.tensor([0]), torch.tensor([0]))
    masks = torch.tensor([[[[2.0, -1.0], [0.5, -0.3]], [[0.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]], [[[0.0, 0.0], [0.0, 0.0]]] * 3])
    semantic = torch.tensor([[[[1.0, -2.0], [0.2, 0.7]]], [[[3.0, 3.0], [3.0, 3.0]]]])
    return logits, boxes, presence, targets, match, masks, semantic


def test_table2_defaults() -> None:
    c = LossConfig()
    assert (c.find.ce, c.find.presence, c.find.alpha, c.find.gamma, c.find.pos_weight, c.find.pad_queries) == (
        20.0,
        20.0,
        0.25,
        2.0,
        10.0,
        200,
    )
    assert (c.find.l1, c.find.giou) == (5.0, 2.0)
    assert (c.seg.alpha, c.seg.gamma, c.seg.focal, c.seg.dice, c.seg.presence) == (0.6, 2.0, 20.0, 30.0, 1.0)
    assert (c.o2m.topk, c.o2m.threshold, c.o2m.alpha, c.o2m.weight) == (4, 0.4, 0.3, 2.0)


def test_focal_and_dice_primitives() -> None:
    x = torch.tensor([2.0, -1.0, 0.3])
    t = torch.tensor([1.0, 0.0, 1.0])
    got = sigmoid_focal(x, t, 0.25, 2.0)
    want = [focal(2.0, 1, 0.25, 2), focal(-1.0, 0, 0.25, 2), focal(0.3, 1, 0.25, 2)]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    s = [sig(v) for v in (2.0, -1.0, 0.3)]
    want_dice = 1 - (2 * (s[0] + s[2]) + 1) / (sum(s) + 2 + 1)
    assert float(dice_per_row(x[None], t[None])[0]) == pytest.approx(want_dice, rel=1e-6)


def test_find_terms_by_hand(case) -> None:
    logits, boxes, presence, targets, match, _, _ = case
    terms = SetCriterion().find_terms(logits, boxes, presence, match, targets, Normalizers(1.0, 1.0))
    # L_ce: query 0 of image 0 is positive with the IoU-aware target t = p^0.25 IoU^0.75 (IoU 0.12 / 0.16)
    t = sig(1.0) ** 0.25 * 0.75**0.75
    pos = 10 * bce(1.0, t)
    neg = bce(-1.0, 0) * sig(-1.0) ** 2 + bce(0.0, 0) * sig(0.0) ** 2
    # image 1 has no instance: no classification loss; mean over B x 200 padded query slots
    assert float(terms["ce"]) == pytest.approx((pos + neg) / (2 * 200), rel=1e-6)
    # presence: focal with alpha 0.5, gamma 0 = 0.5 x BCE, mean over images
    assert float(terms["presence"]) == pytest.approx((0.5 * bce(1.5, 1) + 0.5 * bce(-0.5, 0)) / 2, rel=1e-6)
    # L1 on (cx, cy, w, h): (0.3, 0.3, 0.4, 0.4) vs (0.3, 0.25, 0.4, 0.3)
    assert float(terms["l1"]) == pytest.approx(0.15, abs=1e-6)
    # the target lies inside the prediction: GIoU = IoU = 0.75
    assert float(terms["giou"]) == pytest.approx(0.25, abs=1e-6)
    total = SetCriterion().find_loss(terms)
    assert float(total) == pytest.approx(20 * float(terms["ce"]) + 20 * float(terms["presence"]) + 5 * 0.15 + 2 * 0.25, rel=1e-6)


def test_seg_terms_by_hand(case) -> None:
    _, _, presence, targets, match, masks, semantic = case
    terms = SetCriterion().seg_terms(masks, semantic, presence, match, targets, Normalizers(1.0, 1.0))
    inst_logits = [2.0, -1.0, 0.5, -0.3]
    sem_logits = [1.0, -2.0, 0.2, 0.7]
    tgt = [1, 0, 1, 1]
    assert float(terms["mask_focal"]) == pytest.approx(sum(focal(x, y, 0.6, 2) for x, y in zip(inst_logits, tgt)) / 4, rel=1e-6)
    s = [sig(v) for v in inst_logits]
    assert float(terms["mask_dice"]) == pytest.approx(1 - (2 * sum(a * b for a, b in zip(s, tgt)) + 1) / (sum(s) + 3 + 1), rel=1e-6)
    # semantic part: only image 0 contains the concept (image 1's all-positive logits are not penalised here)
    assert float(terms["sem_focal"]) == pytest.approx(sum(focal(x, y, 0.6, 2) for x, y in zip(sem_logits, tgt)) / 4, rel=1e-6)
    s = [sig(v) for v in sem_logits]
    assert float(terms["sem_dice"]) == pytest.approx(1 - (2 * sum(a * b for a, b in zip(s, tgt)) + 1) / (sum(s) + 3 + 1), rel=1e-6)
    assert float(terms["presence"]) == pytest.approx((bce(1.5, 1) + bce(-0.5, 0)) / 2, rel=1e-6)
    seg = SetCriterion().seg_loss(terms)
    want = 20 * (terms["mask_focal"] + terms["sem_focal"]) + 30 * (terms["mask_dice"] + terms["sem_dice"]) + terms["presence"]
    assert float(seg) == pytest.approx(float(want), rel=1e-6)


def test_normalised_by_the_batch_wise_instance_count(case) -> None:
    """Twice the same image: twice the matched pairs, twice N; every term keeps its value."""
    logits, boxes, presence, targets, match, masks, semantic = case
    crit = SetCriterion()
    one = crit.find_terms(logits[:1], boxes[:1], presence[:1], match, _first(targets), Normalizers(1.0, 1.0))
    seg_one = crit.seg_terms(masks[:1], semantic[:1], presence[:1], match, _first(targets), Normalizers(1.0, 1.0))
    two_t = _twice(_first(targets))
    m2 = (torch.tensor([0, 1]), torch.tensor([0, 0]), torch.tensor([0, 0]))
    two = crit.find_terms(logits[:1].repeat(2, 1), boxes[:1].repeat(2, 1, 1), presence[:1].repeat(2), m2, two_t, Normalizers(2.0, 2.0))
    seg_two = crit.seg_terms(
        masks[:1].repeat(2, 1, 1, 1), semantic[:1].repeat(2, 1, 1, 1), presence[:1].repeat(2), m2, two_t, Normalizers(2.0, 2.0)
    )
    for k in one:
        assert float(two[k]) == pytest.approx(float(one[k]), rel=1e-6), k
    for k in seg_one:
        assert float(seg_two[k]) == pytest.approx(float(seg_one[k]), rel=1e-6), k


def _first(t: BatchTargets) -> BatchTargets:
    return BatchTargets(t.boxes_xyxy[:1], t.valid[:1], t.counts[:1], t.masks, t.semantic[:1])


def _twice(t: BatchTargets) -> BatchTargets:
    return BatchTargets(
        t.boxes_xyxy.repeat(2, 1, 1), t.valid.repeat(2, 1), t.counts.repeat(2), t.masks.repeat(2, 1, 1), t.semantic.repeat(2, 1, 1)
    )


def _outputs(layers: int, seed: int = 0) -> tuple[DetectorOutputs, BatchTargets]:
    g = torch.Generator().manual_seed(seed)
    b, q, m = 2, 6, 4
    xy = torch.rand(layers, b, q, 2, generator=g) * 0.5
    boxes = torch.cat([xy, xy + 0.1 + torch.rand(layers, b, q, 2, generator=g) * 0.4], -1)
    out = DetectorOutputs(
        logits=torch.randn(layers, b, q, generator=g),
        boxes_xyxy=boxes,
        presence=torch.randn(layers, b, generator=g),
        pred_masks=torch.randn(b, q, m, m, generator=g),
        semantic=torch.randn(b, 1, m, m, generator=g),
        o2m_logits=torch.randn(layers, b, q, generator=g),
        o2m_boxes_xyxy=boxes.flip(2),
    )
    tb = torch.zeros(b, q, 4)
    tb[0, :2] = torch.tensor([[0.1, 0.1, 0.4, 0.5], [0.5, 0.5, 0.8, 0.9]])
    tb[1, :1] = torch.tensor([[0.2, 0.3, 0.6, 0.6]])
    valid = tb.sum(-1) > 0
    masks = (torch.rand(3, m, m, generator=g) > 0.5).float()
    sem = torch.stack([masks[:2].amax(0), masks[2]])
    return out, BatchTargets(tb, valid, torch.tensor([2, 1]), masks, sem)


@pytest.mark.parametrize("aux", [True, False])
@pytest.mark.parametrize("o2m", [True, False])
def test_total_composition(aux: bool, o2m: bool) -> None:
    """L_total = sum over supervised layers of [L_find(pi) + lambda_o2m L_find(pi_o2m)] + L_seg."""
    out, targets = _outputs(3)
    cfg = LossConfig(o2m=O2MConfig(enabled=o2m, threshold=0.0))
    cfg = LossConfig(matcher=cfg.matcher, o2m=cfg.o2m, find=type(cfg.find)(aux_layers=aux), seg=cfg.seg)
    crit = SetCriterion(cfg)
    norm = Normalizers.local(targets)
    total, log = crit(out, targets, norm)
    want = 0.0
    for layer in range(3) if aux else [2]:
        m = crit.matcher(out.logits[layer], out.boxes_xyxy[layer], targets)
        want += float(crit.find_loss(crit.find_terms(out.logits[layer], out.boxes_xyxy[layer], out.presence[layer], m, targets, norm)))
        if o2m:
            m2 = crit.o2m_matcher(out.o2m_logits[layer], out.o2m_boxes_xyxy[layer], targets)
            t2 = crit.find_terms(out.o2m_logits[layer], out.o2m_boxes_xyxy[layer], None, m2, targets, norm)
            assert "presence" not in t2, "the one-to-many branch has no presence term"
            want += 2.0 * float(crit.find_loss(t2))
        if layer == 2:
            last = m
    want += float(crit.seg_loss(crit.seg_terms(out.pred_masks, out.semantic, out.presence[-1], last, targets, norm)))
    assert float(total) == pytest.approx(want, rel=1e-6)
    assert log["total"] == pytest.approx(want, rel=1e-6)
    assert ("find_o2m" in log) == o2m


def test_loss_backpropagates_to_every_output() -> None:
    out, targets = _outputs(2, seed=1)
    for name in ("logits", "boxes_xyxy", "presence", "pred_masks", "semantic", "o2m_logits", "o2m_boxes_xyxy"):
        getattr(out, name).requires_grad_(True)
    total, _ = SetCriterion(LossConfig(o2m=O2MConfig(threshold=0.0)))(out, targets, Normalizers.local(targets))
    total.backward()
    for name in ("logits", "boxes_xyxy", "presence", "pred_masks", "semantic", "o2m_logits", "o2m_boxes_xyxy"):
        g = getattr(out, name).grad
        assert g is not None and g.abs().sum() > 0, name
