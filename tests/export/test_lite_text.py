"""SAM3-LiteText (transformers `sam3_lite_text`): export, manifest and `segment` parity.

LiteText swaps SAM3's CLIP text encoder for a MobileCLIP one (RepMixer conv blocks around
transformer layers, bidirectional attention, 16-token context); the image and detector
graphs are SAM3's. The RepMixer depthwise convolutions mix neighbouring positions, padding
included, so the runtime must pad exactly as the reference tokenizer does (to 16 with the
pad id): a wrong context length or pad id changes the text features, which these tests see.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TEST_INIT_STD, cli
from test_segment_parity import CASES, iou, reference_segment

LITE_CONTEXT = 16


def transformers_semantics() -> list[str]:
    """The reference here is transformers' forward: export its text-only prompt semantics where the
    exporter offers a choice (Meta's empty-geometry CLS token is the default there)."""
    from medsam3_export import ExportOptions

    return ["--prompt-semantics", "transformers"] if "prompt_semantics" in ExportOptions.__dataclass_fields__ else []


def _randomise_text_stats(model: torch.nn.Module, seed: int = 0) -> None:
    """Make the MobileCLIP blocks matter in a random model.

    transformers initialises RepMixer layer scales to 1e-5 and batch norms to identity
    statistics, so a random LiteText text encoder is nearly its transformer layer alone and a
    broken RepMixer export would go unseen. Trained models have O(0.1..1) scales and real
    running statistics; this sets values of that size.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.text_encoder.named_parameters():
            if name.endswith("layer_scale"):
                p.copy_(0.3 + 0.2 * torch.rand(p.shape, generator=g))
        for m in model.text_encoder.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(1 + 0.2 * torch.randn(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))


@pytest.fixture(scope="module")
def lite_hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medsam3_export import random_checkpoint

    out = tmp_path_factory.mktemp("lite-ckpt") / "tiny-sam3-litetext"
    ckpt = random_checkpoint("tiny-litetext", video=False, seed=3, init_std=TEST_INIT_STD)
    _randomise_text_stats(ckpt.detector)
    ckpt.detector.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def lite_export(lite_hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lite-export") / "tiny-litetext-export"
    cli("export", str(lite_hf_dir), "--output", str(out), "--quiet", *transformers_semantics(), check=True)
    return out


@pytest.fixture(scope="module")
def lite_reference(lite_hf_dir: Path):
    from transformers import Sam3LiteTextModel

    return Sam3LiteTextModel.from_pretrained(lite_hf_dir, local_files_only=True).eval()


@pytest.fixture(scope="module")
def lite_segmenter(lite_export: Path):
    import medsam3_rt

    seg = medsam3_rt.load(lite_export, "ort-cpu")
    yield seg
    seg.close()


def test_preset_is_an_image_model() -> None:
    from medsam3_export import random_checkpoint
    from medsam3_export.presets import get_preset

    from medsam3_rt.errors import UsageError

    pr = get_preset("tiny-litetext")
    cfg = pr.detector_config()
    assert cfg.model_type == "sam3_lite_text" and cfg.text_config.max_position_embeddings == LITE_CONTEXT
    ckpt = random_checkpoint("tiny-litetext")  # video=True by default: LiteText has no tracker
    assert ckpt.video is None and type(ckpt.detector).__name__ == "Sam3LiteTextModel"
    kinds = [type(layer).__name__ for layer in ckpt.detector.text_encoder.layers]
    assert kinds == ["Sam3LiteTextRepMixerBlock", "Sam3LiteTextTextEncoderLayer", "Sam3LiteTextRepMixerBlock"]
    with pytest.raises(UsageError, match="no video"):
        pr.video_config()


def test_manifest_records_the_lite_text_encoder(lite_export: Path) -> None:
    manifest = json.loads((lite_export / "manifest.json").read_text())
    assert manifest["model"]["architecture"] == "sam3_lite_text"
    assert manifest["model"]["config"]["text_config"]["model_type"] == "sam3_lite_text_text_model"
    tok = manifest["tokenizer"]
    assert tok["context_length"] == LITE_CONTEXT == manifest["dims"]["text_context"]
    assert (tok["pad_id"], tok["bos_id"], tok["eos_id"], tok["vocab_size"]) == (49407, 49406, 49407, 49408)
    assert manifest["parity"]["passed"]
    report = json.loads((lite_export / "parity_report.json").read_text())
    rows = {f"{r['graph']}.{r['output']}": r for r in report["outputs"]}
    assert rows["text_encoder.text_features"]["passed"] and rows["detector.pred_masks"]["passed"]


def test_text_graph_matches_transformers_text_encoder(lite_segmenter, lite_reference) -> None:
    """The runtime's token ids (16, pad-filled) and text features equal transformers' on the same prompts."""
    from medsam3_export.tokenizer_files import bundled_clip_tokenizer

    prompts = ["polyp", "left kidney, upper pole", "a b c d e f g h i j k l m n"]  # the last fills all 16
    ids, mask = lite_segmenter.model.tokenizer.encode(prompts)
    enc = bundled_clip_tokenizer()(prompts, padding="max_length", max_length=LITE_CONTEXT, return_tensors="np")
    np.testing.assert_array_equal(ids, enc["input_ids"])
    np.testing.assert_array_equal(mask, enc["attention_mask"])
    assert mask[2].all() and not mask[0].all()
    got = lite_segmenter.model.run("text_encoder", {"input_ids": ids, "attention_mask": mask})["text_features"]
    with torch.no_grad():
        ref = lite_reference.get_text_features(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).pooler_output
    err = float(np.abs(np.asarray(got) - ref.numpy()).max())
    assert err <= 1e-4 * float(ref.abs().max()) + 1e-5, err
    # the RepMixer convolutions see padded positions: another pad id gives other features
    other = ids.copy()
    other[mask == 0] = 0
    with torch.no_grad():
        moved = lite_reference.get_text_features(input_ids=torch.from_numpy(other), attention_mask=torch.from_numpy(mask)).pooler_output
    assert float((moved - ref)[0, :2].abs().max()) > 1e-3


@pytest.mark.parametrize("case", ["rgb", "gray", "odd-non-square", "ct-float"])
@pytest.mark.parametrize("prompts", [["polyp"], ["liver", "left kidney, upper pole"]])
def test_segment_matches_transformers_lite_text(lite_segmenter, lite_reference, case: str, prompts: list[str]) -> None:
    from medsam3_export.tokenizer_files import bundled_clip_tokenizer

    image = CASES[case]
    res = lite_segmenter.segment(image, prompts)
    masks, scores, boxes = reference_segment(
        lite_reference, bundled_clip_tokenizer(), image, prompts, context_length=LITE_CONTEXT, semantics="transformers"
    )
    for p in range(len(prompts)):
        assert iou(res.masks[p], masks[p]) >= 0.999, (case, prompts[p], iou(res.masks[p], masks[p]))
    np.testing.assert_allclose(res.scores, scores, atol=1e-4)
    np.testing.assert_allclose(res.boxes, boxes, atol=0.05 * max(image.shape[:2]) / 100)


def test_torch_backend_runs_the_lite_text_checkpoint(lite_export: Path, lite_hf_dir: Path, lite_segmenter) -> None:
    import medsam3_rt
    from medsam3_rt.backends.base import BackendOptions

    image, prompts = CASES["gray"], ["liver", "left kidney, upper pole"]
    want = lite_segmenter.segment(image, prompts)
    with medsam3_rt.load(lite_export, "torch", options=BackendOptions(checkpoint=lite_hf_dir)) as seg:
        got = seg.segment(image, prompts)
    for p in range(len(prompts)):
        assert iou(got.masks[p], want.masks[p]) >= 0.999
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-4)


def test_prompt_longer_than_16_tokens_is_a_user_error(lite_export: Path, tmp_path: Path) -> None:
    import cv2

    image = tmp_path / "scan.png"
    cv2.imwrite(str(image), CASES["rgb"])
    long_prompt = "left ventricle myocardium at end diastole in the short axis view of a cardiac scan"
    proc = cli("segment", str(lite_export), str(image), "--prompt", long_prompt, "--output", str(tmp_path / "out"))
    assert proc.returncode == 2, proc.stderr
    assert "the model reads at most 16" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
