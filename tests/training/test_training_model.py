"""The training wrapper reads transformers' Sam3 outputs exactly; the one-to-many pass; checkpointing."""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from medsam3_export.presets import get_preset  # noqa: E402
from medsam3_training.model import TrainingModel, enable_gradient_checkpointing, query_self_attention_off  # noqa: E402

GEOMETRY = {"image_size": 56, "fpn_hidden": 32, "vit_hidden": 32, "vit_mlp": 64, "detr_ffn": 64, "num_queries": 8}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs with torch on one thread (conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def detector():
    from transformers import Sam3Model

    torch.manual_seed(0)
    preset = dataclasses.replace(get_preset("tiny"), **GEOMETRY)
    return Sam3Model(preset.detector_config()).eval()


def inputs(seed: int = 0, b: int = 2):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 49000, (b, 32), generator=g)
    mask = torch.ones(b, 32, dtype=torch.long)
    mask[:, 6:] = 0
    return torch.randn(b, 3, 56, 56, generator=g), ids, mask


@pytest.mark.parametrize("semantics", ["meta", "transformers"])
def test_per_layer_outputs_match_the_model(detector, semantics: str) -> None:
    """The last layer equals the detector's forward under the same prompt semantics
    (transformers: `Sam3Model.forward` itself; meta: + the geometry CLS token, which
    test_prompt_semantics.py proves against the original modules)."""
    from medsam3_export.semantics import detector_forward

    px, ids, mask = inputs()
    with torch.no_grad():
        ref = detector_forward(detector, ids, mask, semantics, pixel_values=px)
        if semantics == "transformers":
            plain = detector(pixel_values=px, input_ids=ids, attention_mask=mask)
            torch.testing.assert_close(ref.pred_logits, plain.pred_logits, rtol=0, atol=0)
        out = TrainingModel(detector, o2m=True, prompt_semantics=semantics)(px, ids, mask)
    layers = detector.config.detr_decoder_config.num_layers
    assert out.logits.shape == (layers, 2, 8) and out.boxes_xyxy.shape == (layers, 2, 8, 4) and out.presence.shape == (layers, 2)
    torch.testing.assert_close(out.logits[-1], ref.pred_logits)
    torch.testing.assert_close(out.boxes_xyxy[-1], ref.pred_boxes)
    torch.testing.assert_close(out.presence[-1], ref.presence_logits[:, 0])
    torch.testing.assert_close(out.pred_masks, ref.pred_masks)
    torch.testing.assert_close(out.semantic, ref.semantic_seg)
    assert not torch.allclose(out.o2m_logits, out.logits), "without query self-attention the decoder computes something else"


def test_one_to_many_pass_is_the_decoder_without_query_self_attention(detector) -> None:
    """With every self-attention output projection zeroed, both passes must agree exactly."""
    import copy

    det = copy.deepcopy(detector)
    for layer in det.detr_decoder.layers:
        torch.nn.init.zeros_(layer.self_attn.o_proj.weight)
        torch.nn.init.zeros_(layer.self_attn.o_proj.bias)
    px, ids, mask = inputs(1)
    with torch.no_grad():
        out = TrainingModel(det, o2m=True)(px, ids, mask)
    torch.testing.assert_close(out.o2m_logits, out.logits)
    torch.testing.assert_close(out.o2m_boxes_xyxy, out.boxes_xyxy)
    # and the patch is gone afterwards: self-attention is the class's again
    layer = det.detr_decoder.layers[0]
    assert "forward" not in vars(layer.self_attn)
    with query_self_attention_off(det.detr_decoder):
        assert "forward" in vars(layer.self_attn)
    assert "forward" not in vars(layer.self_attn)


def test_gradient_checkpointing_gives_the_same_gradients(detector) -> None:
    import copy

    px, ids, mask = inputs(2)
    grads = []
    for checkpointing in (False, True):
        det = copy.deepcopy(detector).train()
        for m in det.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        if checkpointing:
            assert enable_gradient_checkpointing(det) == len(det.vision_encoder.backbone.layers) + len(
                det.text_encoder.text_model.encoder.layers
            )
        out = TrainingModel(det, o2m=True)(px, ids, mask)
        (out.pred_masks.square().mean() + out.logits.sum() + out.o2m_boxes_xyxy.sum()).backward()
        grads.append({n: p.grad.clone() for n, p in det.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert any(n.startswith("vision_encoder.backbone.layers.") for n in grads[0])
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-4, atol=1e-6)
