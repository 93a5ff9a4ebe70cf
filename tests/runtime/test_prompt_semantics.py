"""Meta's text-only prompt semantics (geometry-encoder CLS token) vs the original modules.

`medsam3_export.semantics.empty_prompt_geometry` calls the geometry encoder's sub-modules in
the order `Sam3GeometryEncoder.forward` does; here it is compared with that forward on an
empty box prompt, and the "meta" detector graph with `Sam3Model.forward` given the text tokens
plus that CLS token (what `Sam3Model` itself does with geometry prompts). Agreement with Meta's
own code is tested in test_meta_reference.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import cli
from transformers.modeling_outputs import BaseModelOutputWithPooling

from medsam3_rt.manifest import load_manifest

needs_torchvision = pytest.mark.skipif(
    __import__("importlib").util.find_spec("torchvision") is None,
    reason="transformers' Sam3GeometryEncoder.forward needs torchvision (roi_align); install the 'reference' extra",
)


@pytest.fixture(scope="module")
def inputs(tiny_reference, clip_tokenizer_ids):
    from medsam3_export.graphs.image_backbone import ImageBackboneGraph
    from medsam3_export.graphs.text_encoder import TextEncoderGraph

    torch.manual_seed(0)
    pixels = torch.randn(1, 3, 224, 224)
    ids, attn = clip_tokenizer_ids
    with torch.no_grad():
        fpn = ImageBackboneGraph(tiny_reference)(pixels)
        text = TextEncoderGraph(tiny_reference)(ids, attn)
    return pixels, ids, attn, fpn, text


@pytest.fixture(scope="module")
def clip_tokenizer_ids():
    from medsam3_export.tokenizer_files import bundled_clip_tokenizer

    enc = bundled_clip_tokenizer()(["liver", "left kidney"], padding="max_length", max_length=32, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def _levels(detector, pixels, prompts):
    vision = detector.vision_encoder(pixels.repeat(prompts, 1, 1, 1))
    return vision, vision.fpn_hidden_states[:-1], vision.fpn_position_encoding[:-1]


@needs_torchvision
def test_empty_prompt_geometry_equals_the_original_encoder(tiny_reference, inputs) -> None:
    from medsam3_export.semantics import empty_prompt_geometry

    pixels = inputs[0]
    geo = tiny_reference.geometry_encoder
    with torch.no_grad():
        _, fpn, pos = _levels(tiny_reference, pixels, 2)
        ref = geo(
            box_embeddings=torch.zeros(2, 0, 4),
            box_mask=torch.zeros(2, 0, dtype=torch.bool),
            box_labels=torch.zeros(2, 0, dtype=torch.long),
            img_feats=fpn,
            img_pos_embeds=pos,
        )
        got = empty_prompt_geometry(geo, fpn[-1], pos[-1])
    assert ref.last_hidden_state.shape == got.shape == (2, 1, 128)
    assert ref.attention_mask.all()
    torch.testing.assert_close(got, ref.last_hidden_state, rtol=0, atol=1e-6)


@needs_torchvision
def test_meta_detector_graph_equals_sam3model_with_the_cls_token(tiny_reference, inputs) -> None:
    from medsam3_export.graphs.detector import DetectorGraph

    pixels, _ids, attn, fpn_graph, text = inputs
    with torch.no_grad():
        vision, fpn, pos = _levels(tiny_reference, pixels, 2)
        cls = tiny_reference.geometry_encoder(
            box_embeddings=torch.zeros(2, 0, 4),
            box_mask=torch.zeros(2, 0, dtype=torch.bool),
            box_labels=torch.zeros(2, 0, dtype=torch.long),
            img_feats=fpn,
            img_pos_embeds=pos,
        ).last_hidden_state
        ref = tiny_reference(
            vision_embeds=vision,
            text_embeds=BaseModelOutputWithPooling(pooler_output=torch.cat([text, cls], 1)),
            attention_mask=torch.cat([attn, torch.ones(2, 1, dtype=attn.dtype)], 1),
        )
        meta = DetectorGraph(tiny_reference, 16, "meta")(*fpn_graph, text, attn.bool())
        hf = DetectorGraph(tiny_reference, 16, "transformers")(*fpn_graph, text, attn.bool())
    names = ("pred_logits", "pred_boxes", "presence_logits", "pred_masks", "semantic_seg")
    for name, value in zip(names, meta):
        torch.testing.assert_close(value, getattr(ref, name), rtol=0, atol=1e-5, msg=name)
    # the two semantics really differ (the CLS token changes every output)
    assert (meta[2] - hf[2]).abs().max() > 1e-3


def test_bad_semantics_is_a_usage_error(tiny_hf_dir: Path, tmp_path: Path) -> None:
    proc = cli("export", str(tiny_hf_dir), "--output", str(tmp_path / "x"), "--prompt-semantics", "hf")
    assert proc.returncode != 0 and "prompt semantics must be one of meta, transformers" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "x").exists()


def test_export_records_semantics(tiny_export: Path) -> None:
    m = load_manifest(tiny_export)
    assert m.model["prompt_semantics"] == "meta" and m.model["prompt_semantics_detail"]["from"] == "default"
    report = json.loads((tiny_export / "parity_report.json").read_text())
    det_rows = [r for r in report["outputs"] if r["graph"] == "detector"]
    assert det_rows and all("Meta's text-only prompt" in r["reference"] for r in det_rows)
    out = cli("info", str(tiny_export), check=True).stdout
    assert "prompt semantics: meta" in out


def test_manifest_without_the_field_reads_as_transformers(tiny_export: Path) -> None:
    from medsam3_export.semantics import manifest_prompt_semantics

    m = load_manifest(tiny_export)
    assert manifest_prompt_semantics({k: v for k, v in m.model.items() if k != "prompt_semantics"}) == "transformers"
    assert manifest_prompt_semantics(m.model) == "meta"


def test_training_default_is_meta_and_the_cls_token_learns(tiny_reference) -> None:
    import copy

    from medsam3_training.config import ConfigError, ModelConfig, RandomModelConfig
    from medsam3_training.model import TrainingModel

    assert ModelConfig(random=RandomModelConfig()).prompt_semantics == "meta"
    with pytest.raises(ConfigError, match="prompt_semantics"):
        ModelConfig(random=RandomModelConfig(), prompt_semantics="hf")
    det = copy.deepcopy(tiny_reference).train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 49000, (2, 32), generator=g)
    mask = torch.zeros(2, 32, dtype=torch.long)
    mask[:, :5] = 1
    out = TrainingModel(det, o2m=False)(torch.randn(2, 3, 224, 224, generator=g), ids, mask)
    (out.logits.sum() + out.pred_masks.mean()).backward()
    assert det.geometry_encoder.cls_embed.weight.grad.abs().sum() > 0


def test_demo_model_and_recipe_say_transformers() -> None:
    from medsam3_training.recipes.demo_brain import PROMPT_SEMANTICS, train_config_dict

    from medsam3_rt.demo import MODEL_DIR

    assert PROMPT_SEMANTICS == "transformers"
    assert train_config_dict(Path("/tmp/x"))["model"]["prompt_semantics"] == "transformers"
    assert load_manifest(MODEL_DIR).model["prompt_semantics"] == "transformers"


def test_export_follows_the_recorded_training_semantics(tiny_hf_dir: Path, tmp_path: Path, caplog) -> None:
    import shutil

    from medsam3_export import load_checkpoint
    from medsam3_export.exporter import resolve_prompt_semantics

    ckpt_dir = tmp_path / "fine-tune"
    shutil.copytree(tiny_hf_dir, ckpt_dir)
    (ckpt_dir / "training.json").write_text(json.dumps({"epoch": 1, "prompt_semantics": "transformers"}))
    ckpt = load_checkpoint(ckpt_dir)
    assert ckpt.trained_semantics == "transformers" and ckpt.prompt_semantics == "transformers"
    assert resolve_prompt_semantics(None, ckpt) == ("transformers", "checkpoint")
    with caplog.at_level("WARNING"):
        assert resolve_prompt_semantics("meta", ckpt) == ("meta", "option")
    assert "trained with 'transformers' prompt semantics" in caplog.text
    plain = load_checkpoint(tiny_hf_dir)
    assert plain.trained_semantics is None and resolve_prompt_semantics(None, plain) == ("meta", "default")
