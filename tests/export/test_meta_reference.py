"""The exported model vs Meta's own SAM3 code (`sam3` 0.1.4 from PyPI) on a `sam3.pt` written by Meta.

One session-scoped model: Meta's `build_sam3_video_model` at Meta's 1008-px geometry (DETR 6+6,
200 queries, full tracker; only the ViT and text encoder narrowed, tests/meta_reference.py),
saved as its state dict (the `sam3.pt` layout) and exported unedited with `medsam3-rt export`.
The 2D reference is Meta's `build_sam3_image_model` loading that same file and Meta's
`Sam3Processor` (its own resize/normalise, grounding forward and post-processing) with the
confidence threshold at 0, so the top-scoring query is compared with `segment`'s top-1 mask.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli, phantom
from meta_reference import TIMINGS, cpu_only, meta_available

REASON = meta_available()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


@pytest.fixture(scope="session")
def meta_image_model(meta_checkpoint: dict):
    """Meta's image model (as `build_sam3_image_model` builds it) with the sam3.pt weights, mapped
    as Meta's `_load_checkpoint` maps them; every parameter of the image model must come from the file."""
    from meta_reference import GEOMETRY, load_meta_image_model

    return load_meta_image_model(meta_checkpoint["state"], GEOMETRY, with_tracker=False)


@pytest.fixture(scope="session")
def meta_processor(meta_image_model):
    from sam3.model.sam3_image_processor import Sam3Processor

    with cpu_only():
        return Sam3Processor(meta_image_model, resolution=1008, device="cpu", confidence_threshold=0.0)


def meta_top1(processor, image: np.ndarray, prompts: list[str]) -> list[dict]:
    """Meta's `Sam3Processor` result per prompt (one `set_image`, then `set_text_prompt` per
    prompt, as Meta's notebooks do), reduced to the top-scoring query."""
    from PIL import Image

    results = []
    with cpu_only(), torch.inference_mode():
        state = processor.set_image(Image.fromarray(image))
        for prompt in prompts:
            state = processor.set_text_prompt(prompt, state)
            best = int(torch.argmax(state["scores"]))
            results.append(
                {"mask": state["masks"][best, 0].numpy(), "score": float(state["scores"][best]), "box": state["boxes"][best].numpy()}
            )
    return results


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def test_meta_checkpoint_exports_unedited(meta_checkpoint: dict, meta_export: Path) -> None:
    from medsam3_rt.manifest import load_manifest

    m = load_manifest(meta_export)
    src = m.model["source"]
    assert src["format"] == "sam3.pt" and src["class"] == "Sam3VideoModel" and m.has_tracker
    un = src["unexported_parameters"]
    names = [t["name"] for t in un["tensors"]]
    assert names == sorted(
        f"detector.geometry_encoder.points_{p}_project.{w}" for p in ("direct", "pool", "pos_enc") for w in ("weight", "bias")
    )
    assert un["total"] == sum(meta_checkpoint["state"][n].numel() for n in names)
    assert "not exported" in meta_checkpoint["export_log"] and "points_pool_project" in meta_checkpoint["export_log"]
    assert m.model["prompt_semantics"] == "meta"
    print(f"\n[meta] timings: {json.dumps({k: round(v, 1) for k, v in TIMINGS.items()})}")


def test_trainer_layout_and_image_only_checkpoint_load(meta_checkpoint: dict, tmp_path: Path) -> None:
    """`{"model": ...}` (Meta's trainer) and a detector-only image state dict load; extra keys are errors."""
    from medsam3_export import load_checkpoint

    from medsam3_rt.errors import CheckpointError

    state = meta_checkpoint["state"]
    cfg = str(meta_checkpoint["config"])
    torch.save({"model": state, "epoch": 3}, tmp_path / "trainer.pt")
    wrapped = load_checkpoint(tmp_path / "trainer.pt", config=cfg)
    assert wrapped.has_tracker and len(wrapped.source["unexported_parameters"]["tensors"]) == 6
    image_only = {k[len("detector.") :]: v for k, v in state.items() if k.startswith("detector.")}
    torch.save(image_only, tmp_path / "image.pt")
    image = load_checkpoint(tmp_path / "image.pt", config=cfg)
    assert not image.has_tracker
    torch.testing.assert_close(
        image.detector.geometry_encoder.cls_embed.weight, state["detector.geometry_encoder.cls_embed.weight"], rtol=0, atol=0
    )
    torch.save({**state, "detector.geometry_encoder.extra_thing.weight": torch.zeros(3)}, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match="extra_thing"):
        load_checkpoint(tmp_path / "extra.pt", config=cfg)
    torch.save({**state, "optimizer_step": torch.zeros(1)}, tmp_path / "outside.pt")
    with pytest.raises(CheckpointError, match="optimizer_step"):
        load_checkpoint(tmp_path / "outside.pt", config=cfg)
    bad = dict(state)
    bad["tracker.sam_mask_decoder.transformer.layers.0.mlp.lin1.weight"] = torch.zeros(3, 3)
    torch.save(bad, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=r"mlp\.proj_in\.weight"):
        load_checkpoint(tmp_path / "shape.pt", config=cfg)


IMAGES = {
    "rgb-wide": phantom(300, 420, seed=11),
    "gray-tall": np.repeat(phantom(380, 260, channels=1, seed=12)[..., None], 3, axis=-1),
    "small": phantom(150, 150, seed=13),
}
PROMPT_SETS = [["polyp"], ["liver", "left kidney, upper pole"], ["tumour", "vessel", "optic disc"]]


@pytest.fixture(scope="session")
def meta_segmenter(meta_export: Path):
    import medsam3_rt

    seg = medsam3_rt.load(meta_export, "ort-cpu")
    yield seg
    seg.close()


@pytest.mark.parametrize("case", list(IMAGES))
def test_segment_matches_metas_processor(meta_segmenter, meta_processor, case: str) -> None:
    image = IMAGES[case]
    prompts = PROMPT_SETS[list(IMAGES).index(case)]
    res = meta_segmenter.segment(image, prompts)
    for p, (prompt, ref) in enumerate(zip(prompts, meta_top1(meta_processor, image, prompts))):
        assert ref["mask"].sum() > 100, "the reference mask is (nearly) empty; the comparison would be vacuous"
        got_iou = iou(res.masks[p], ref["mask"])
        print(
            f"\n[meta 2D] {case} '{prompt}': IoU {got_iou:.5f}, score {res.scores[p]:.6f} vs {ref['score']:.6f} "
            f"(|d| {abs(float(res.scores[p]) - ref['score']):.1e}), box {np.round(ref['box'], 1).tolist()} max|d| "
            f"{np.abs(res.boxes[p] - ref['box']).max():.4f} px, mask px {int(ref['mask'].sum())} of {ref['mask'].size}"
        )
        assert got_iou >= 0.999, (case, prompt, got_iou)
        assert abs(float(res.scores[p]) - ref["score"]) <= 1e-4
        np.testing.assert_allclose(res.boxes[p], ref["box"], atol=0.5)


def test_graphs_on_metas_pixel_tensor(meta_export: Path, meta_image_model, meta_processor) -> None:
    """Backbone + text + detector graphs on the pixels Meta's processor makes vs Meta's grounding outputs."""
    from medsam3_export import parity
    from PIL import Image
    from sam3.model import box_ops
    from torchvision.transforms import v2

    from medsam3_rt import graph_contract as gc
    from medsam3_rt.backends.ort import OrtCpuBackend
    from medsam3_rt.manifest import load_manifest
    from medsam3_rt.tokenizer import ClipTokenizer

    image, prompts = IMAGES["rgb-wide"], ["liver", "left kidney, upper pole"]
    model = meta_image_model
    with cpu_only(), torch.inference_mode():
        pixels = meta_processor.transform(v2.functional.to_image(Image.fromarray(image))).unsqueeze(0)
        backbone_out = model.backbone.forward_image(pixels)
        refs = []
        for prompt in prompts:
            backbone_out.update(model.backbone.forward_text([prompt], device="cpu"))
            out = model.forward_grounding(
                backbone_out=backbone_out,
                find_input=meta_processor.find_stage,
                geometric_prompt=model._get_dummy_prompt(),
                find_target=None,
            )
            refs.append(out)
    ref = {
        gc.PRED_LOGITS: np.concatenate([o["pred_logits"][..., 0].numpy() for o in refs]),
        gc.PRED_BOXES: np.concatenate([box_ops.box_cxcywh_to_xyxy(o["pred_boxes"]).numpy() for o in refs]),
        gc.PRESENCE_LOGITS: np.concatenate([o["presence_logit_dec"].reshape(1, 1).numpy() for o in refs]),
        gc.PRED_MASKS: np.concatenate([o["pred_masks"].numpy() for o in refs]),
    }
    m = load_manifest(meta_export)
    backend = OrtCpuBackend()

    def run(name: str, feeds: dict) -> dict:
        runner = backend.open(m.graph(name), meta_export)
        try:
            return runner.run(feeds)
        finally:
            runner.close()

    ids, attn = ClipTokenizer(meta_export / m.tokenizer.file, m.tokenizer).encode(prompts)
    feats = run(gc.IMAGE_BACKBONE, {gc.PIXEL_VALUES: pixels.numpy()})
    text = run(gc.TEXT_ENCODER, {gc.INPUT_IDS: ids, gc.ATTENTION_MASK: attn})
    det = run(
        gc.DETECTOR,
        {**{k: feats[k] for k in gc.DET_FPN}, gc.TEXT_FEATURES: text[gc.TEXT_FEATURES], gc.TEXT_MASK: attn.astype(bool)},
    )
    results = parity.compare("detector vs Meta", ref, {k: det[k] for k in ref}, parity.Tolerance())
    for r in results:
        print(f"\n[meta graphs] {r.describe()}")
    parity.check(results)


COVERED = {
    "text_encoder": ["text_features", "text_valid_tokens"],
    "image_backbone": ["det_fpn_0", "det_fpn_1", "det_fpn_2", "trk_feat_s0", "trk_feat_s1", "trk_vision_feat"],
    "detector": ["pred_logits", "pred_boxes", "presence_logits", "pred_masks"],
}


def test_parity_report_names_metas_code(meta_export: Path) -> None:
    """`export --parity-reference both`: text encoder, image backbone (detector and tracker features)
    and detector are checked against Meta's own code as well as transformers; the tracker graphs
    against transformers only. Every row names its reference."""
    from medsam3_rt.manifest import load_manifest

    report = json.loads((meta_export / "parity_report.json").read_text())
    meta = report["meta"]
    assert meta["reference"].startswith("Meta's sam3 0.1") and meta["graphs"] == list(COVERED) and meta["not_compared"] == {}
    rows: dict[str, list[str]] = {}
    for r in report["outputs"]:
        if r["reference"] == meta["reference"]:
            rows.setdefault(r["graph"], []).append(r["output"])
            print(f"\n[meta parity] {r['graph']}.{r['output']}: max|d| {r['max_abs']:.2e} (rel {r['max_rel']:.1e}, bound {r['bound']:.1e})")
            assert r["passed"], r
    assert rows == COVERED
    transformers_graphs = {r["graph"] for r in report["outputs"] if r["reference"] != meta["reference"]}
    assert transformers_graphs == {*COVERED, "tracker_init", "tracker_step", "memory_encoder"}
    for graph in COVERED:
        assert report["references"][graph].startswith("transformers") and report["references"][graph].endswith(meta["reference"])
    m = load_manifest(meta_export)
    assert m.parity["meta"]["graphs"] == list(COVERED)
    assert any(key.endswith(f"vs {meta['reference']}") for key in m.parity["worst"])
    info = cli("info", str(meta_export), check=True).stdout
    assert f"parity vs {meta['reference']}: text_encoder, image_backbone, detector" in info


def test_metas_reference_sees_a_difference(meta_checkpoint: dict, meta_export: Path, tmp_path: Path) -> None:
    """The Meta comparison is live: when the file Meta's code loads holds a different detector
    scoring weight, the detector fails against Meta while text encoder and backbone still pass."""
    from medsam3_export import load_checkpoint
    from medsam3_export.exporter import PARITY_PROMPTS, parity_image
    from medsam3_export.meta_parity import meta_parity
    from medsam3_export.parity import Tolerance

    from medsam3_rt.manifest import load_manifest
    from medsam3_rt.preprocess import pixel_values
    from medsam3_rt.tokenizer import ClipTokenizer

    state = dict(meta_checkpoint["state"])
    key = "detector.dot_prod_scoring.hs_proj.weight"
    state[key] = state[key] * 1.5
    torch.save(state, tmp_path / "changed.pt")
    ckpt = load_checkpoint(meta_checkpoint["path"], config=str(meta_checkpoint["config"]))
    m = load_manifest(meta_export)
    ids, attn = ClipTokenizer(meta_export / m.tokenizer.file, m.tokenizer).encode(list(PARITY_PROMPTS))
    pixels = pixel_values(parity_image(m.dims.image_size), m.preprocess)
    result = meta_parity(
        tmp_path / "changed.pt", ckpt, meta_export, m.graphs, pixels, ids, attn,
        prompts=PARITY_PROMPTS, prompt_semantics="meta", tolerance=Tolerance(), say=print,
    )  # fmt: skip
    failed = sorted({f"{r.graph}.{r.output}" for r in result.results if not r.passed})
    print(f"\n[meta parity] with {key} x1.5 in Meta's file: failing {failed}")
    assert failed and {f.split(".")[0] for f in failed} == {"detector"}
