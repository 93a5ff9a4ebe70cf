"""Export: graph wrappers equal transformers, ONNX parity, manifest content, failure modes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from medsam3_rt import graph_contract as gc
from medsam3_rt.errors import OutputExistsError, ParityError
from medsam3_rt.manifest import load_manifest, sha256_file


def _text_inputs(reference_tokenizer, prompts):
    enc = reference_tokenizer(prompts, padding="max_length", max_length=32, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


@pytest.fixture(scope="module")
def clip_tokenizer():
    from medsam3_export.tokenizer_files import bundled_clip_tokenizer

    return bundled_clip_tokenizer()


def test_wrappers_equal_the_original_forward(tiny_reference, clip_tokenizer) -> None:
    """Backbone + text + detector wrappers reproduce `Sam3Model.forward` for a prompt batch
    (transformers' text-only semantics; Meta's is tested in test_prompt_semantics.py)."""
    from medsam3_export.graphs.detector import DetectorGraph
    from medsam3_export.graphs.image_backbone import ImageBackboneGraph
    from medsam3_export.graphs.text_encoder import TextEncoderGraph

    torch.manual_seed(0)
    pixels = torch.randn(1, 3, 224, 224)
    ids, attn = _text_inputs(clip_tokenizer, ["liver", "left kidney"])
    with torch.no_grad():
        ref = tiny_reference(pixel_values=pixels.repeat(2, 1, 1, 1), input_ids=ids, attention_mask=attn)
        fpn = ImageBackboneGraph(tiny_reference)(pixels)
        text = TextEncoderGraph(tiny_reference)(ids, attn)
        got = DetectorGraph(tiny_reference, 16, "transformers")(*fpn, text, attn.bool())
    for name, value in zip(("pred_logits", "pred_boxes", "presence_logits", "pred_masks", "semantic_seg"), got):
        torch.testing.assert_close(value, getattr(ref, name), rtol=0, atol=1e-6, msg=name)


def test_rpb_patch_is_scoped(tiny_reference) -> None:
    from medsam3_export.graphs.detector import static_rpb_shape

    dec = tiny_reference.detr_decoder
    with static_rpb_shape(dec, 16, 16):
        assert "_get_rpb_matrix" in vars(dec)
    assert "_get_rpb_matrix" not in vars(dec)


def test_parity_report_and_manifest(tiny_export: Path) -> None:
    m = load_manifest(tiny_export)
    report = json.loads((tiny_export / "parity_report.json").read_text())
    assert report["passed"] and len(report["outputs"]) == 9
    for row in report["outputs"]:
        assert row["max_abs"] <= 1e-4 * row["max_ref"] + 1e-5, row
        if row["output"] in ("pred_masks", "semantic_seg"):
            assert row["sign_agreement"] >= 0.999
    for rel, entry in m.files.items():
        assert sha256_file(tiny_export / rel) == entry.sha256
    assert m.dims == gc.ModelDims(image_size=224, patch_size=14, fpn_channels=128, text_context=32, num_queries=20)
    assert m.tokenizer.vocab_size == 49408 and m.tokenizer.context_length == 32


def test_onnx_files_declare_the_contract(tiny_export: Path) -> None:
    m = load_manifest(tiny_export)
    for name, entry in m.graphs.items():
        model = onnx.load(str(tiny_export / entry.file))
        assert model.opset_import[0].version == 18
        declared = [(v.name, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]) for v in model.graph.input]
        assert declared == [(t.name, list(t.shape)) for t in entry.spec.inputs], name
    det_inputs = {t.name: t.shape for t in m.graphs[gc.DETECTOR].spec.inputs}
    assert det_inputs[gc.TEXT_FEATURES][0] == "P"


def test_export_refuses_to_overwrite(tiny_hf_dir: Path, tiny_export: Path) -> None:
    from medsam3_export import export_model

    with pytest.raises(OutputExistsError, match="--force"):
        export_model(tiny_hf_dir, tiny_export)


def test_failed_parity_leaves_no_directory(tmp_path: Path) -> None:
    """A tolerance of zero cannot be met: the export fails naming outputs, and nothing is left."""
    from medsam3_export import ExportOptions, Tolerance, export_model, random_checkpoint

    ckpt = random_checkpoint("tiny", video=False, seed=3)
    out = tmp_path / "never"
    with pytest.raises(ParityError, match=r"export parity failed: .*image_backbone\.det_fpn_0"):
        export_model(ckpt, out, options=ExportOptions(tolerance=Tolerance(rel=0.0, abs=0.0, sign_agreement=1.0)))
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_parity_compare_flags_sign_flips() -> None:
    from medsam3_export.parity import Tolerance, compare

    ref = {gc.PRED_MASKS: np.linspace(-1, 1, 10000, dtype=np.float32)}
    got = {gc.PRED_MASKS: ref[gc.PRED_MASKS].copy()}
    got[gc.PRED_MASKS][4990:5010] *= -1  # 20 flipped pixels of 10,000 = 99.8 % agreement, tiny |delta|
    (row,) = compare("detector", ref, got, Tolerance(rel=1.0))
    assert not row.passed and row.sign_agreement == pytest.approx(0.998)


def test_parity_reference_option_errors(tiny_hf_dir: Path, tmp_path: Path) -> None:
    """`--parity-reference`: an unknown value, and Meta's code asked to check a checkpoint it cannot
    load (a Hugging Face directory), are one-line usage errors before any model is loaded."""
    from conftest import cli

    proc = cli("export", str(tiny_hf_dir), "-o", str(tmp_path / "a"), "--parity-reference", "pytorch")
    assert proc.returncode == 2 and "--parity-reference pytorch: choose one of transformers, meta, both" in proc.stderr
    proc = cli("export", str(tiny_hf_dir), "-o", str(tmp_path / "b"), "--parity-reference", "meta")
    assert proc.returncode in (2, 5), proc.stderr  # 5: Meta's sam3 package is not installed here
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert ("needs Meta's sam3.pt file" if proc.returncode == 2 else "Meta's sam3 package is not importable") in proc.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
