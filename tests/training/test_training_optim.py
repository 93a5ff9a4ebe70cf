"""Group learning rates, layer-wise decay over the ViT, and the warm-up / inverse-sqrt schedule."""

from __future__ import annotations

import dataclasses
import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from medsam3_export.presets import get_preset  # noqa: E402
from medsam3_training.config import OptimConfig  # noqa: E402
from medsam3_training.optim import build_optimizer, build_scheduler, lr_factor, place, vit_level  # noqa: E402


def test_32_vit_blocks_map_evenly_onto_12_levels() -> None:
    levels = [vit_level(i, 32, 12) for i in range(32)]
    assert levels == [1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 5, 5, 5, 6, 6, 7, 7, 7, 8, 8, 8, 9, 9, 10, 10, 10, 11, 11, 11, 12, 12]
    assert sorted(set(levels)) == list(range(1, 13))
    assert all(2 <= levels.count(level) <= 3 for level in range(1, 13))
    assert [vit_level(i, 12, 12) for i in range(12)] == list(range(1, 13))
    assert [vit_level(i, 2, 12) for i in range(2)] == [1, 7]


def test_parameter_places() -> None:
    assert place("vision_encoder.backbone.embeddings.patch_embeddings.projection.weight", 32, 12).level == 0
    assert place("vision_encoder.backbone.layer_norm.weight", 32, 12).level == 0
    assert place("vision_encoder.backbone.embeddings.position_embeddings", 32, 12).level == 12
    assert place("vision_encoder.backbone.layers.31.mlp.fc1.weight", 32, 12).level == 12
    assert place("vision_encoder.neck.fpn_layers.0.proj1.weight", 32, 12).level == 12
    assert place("text_projection.weight", 32, 12).component == "language"
    assert place("text_encoder.text_model.encoder.layers.0.mlp.fc1.weight", 32, 12).component == "language"
    assert place("geometry_encoder.final_proj.weight", 32, 12).component == "geometry"
    for name in ("detr_encoder.layers.0.mlp.fc1.weight", "detr_decoder.query_embed.weight", "mask_decoder.semantic_projection.weight"):
        assert place(name, 32, 12).component == "decoder"
    assert place("dot_product_scoring.text_proj.weight", 32, 12) == place("detr_decoder.box_head.layer1.weight", 32, 12)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs with torch on one thread (conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def detector32():
    """A narrow SAM3 with the real 32-block ViT (SAM3's global-attention blocks 7, 15, 23, 31)."""
    from transformers import Sam3Model

    preset = dataclasses.replace(get_preset("tiny"), vit_layers=32, global_attn_indexes=(7, 15, 23, 31), vit_hidden=32, vit_mlp=32)
    torch.manual_seed(0)
    return Sam3Model(preset.detector_config())


def expected_peak(name: str) -> float:
    comp, *rest = name.split("/")
    if comp == "vision":
        return 5e-5 * 0.85 ** (12 - int(rest[0][1:]))
    return {"decoder": 3e-4, "language": 5e-5, "geometry": 1e-4}[comp]


def test_every_parameter_in_one_group_with_its_rate(detector32) -> None:
    cfg = OptimConfig(warmup_steps=4, decay_timescale=8)
    opt = build_optimizer(detector32, cfg)
    seen = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in detector32.parameters())
    names = [g["name"] for g in opt.param_groups]
    assert {n.split("/")[0] for n in names} == {"decoder", "vision", "language", "geometry"}
    assert {n.split("/")[1] for n in names if n.startswith("vision")} == {f"L{i:02d}" for i in range(13)}
    for g in opt.param_groups:
        assert g["weight_decay"] == (0.1 if g["name"].endswith("/decay") else 0.0)
        assert all(p.ndim > 1 for p in g["params"]) == g["name"].endswith("/decay")
        blocks = {int(n.split(".")[3]) for n in g["param_names"] if n.startswith("vision_encoder.backbone.layers.")}
        if blocks:
            assert {vit_level(b, 32, 12) for b in blocks} == {int(g["name"].split("/")[1][1:])}


def test_learning_rate_of_every_group_over_the_schedule(detector32) -> None:
    cfg = OptimConfig(warmup_steps=4, decay_timescale=8)
    opt = build_optimizer(detector32, cfg)
    sched = build_scheduler(opt, cfg)
    # update t (1-based): t / W during warm-up, then sqrt(T / (T + t - W))
    factors = {1: 0.25, 2: 0.5, 4: 1.0, 12: math.sqrt(8 / 16), 28: 0.5}
    t = 1
    for target, factor in factors.items():
        while t < target:
            opt.step()
            sched.step()
            t += 1
        print(f"update {t}: factor {factor:.4f}")
        for g in opt.param_groups:
            print(f"  {g['name']:<24} lr {g['lr']:.3e}")
            assert g["lr"] == pytest.approx(expected_peak(g["name"]) * factor, rel=1e-9), (t, g["name"])
    assert lr_factor(0, 0, 10) == 1.0, "no warm-up starts at the peak"
