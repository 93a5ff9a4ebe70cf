"""PEFT LoRA adapters merged at export (`medsam3-rt export BASE --adapter DIR`).

The adapters are real PEFT adapters: made with `peft.get_peft_model` on the tiny SAM3, their
LoRA matrices randomised (`init_lora_weights=False`, so B != 0 and the adapter changes the
model), saved with `save_pretrained`. The reference is PEFT's own unmerged model (the base
plus the LoRA branch at run time), so the merge is checked against what the adapter means,
not against a second copy of the merge formula.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import cli
from test_lite_text import transformers_semantics

peft = pytest.importorskip("peft", reason="the 'adapters' extra (peft) is not installed")

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "out_proj", "fc1", "fc2"]  # ViT, CLIP text, DETR attention + MLP


def make_adapter(base_dir: Path, out: Path, seed: int = 0, **lora: object) -> Path:
    from transformers import Sam3Model

    torch.manual_seed(seed)
    model = Sam3Model.from_pretrained(base_dir, local_files_only=True)
    cfg = peft.LoraConfig(**{"r": 4, "lora_alpha": 8, "target_modules": TARGETS, "lora_dropout": 0.0, "init_lora_weights": False, **lora})
    peft.get_peft_model(model, cfg).save_pretrained(out, save_embedding_layers=False)  # (True looks the base up on the Hub)
    # as published for MedSAM3: the adapter names its Hub base, not the trainer's local folder
    conf = json.loads((out / "adapter_config.json").read_text())
    conf["base_model_name_or_path"] = "facebook/sam3"
    (out / "adapter_config.json").write_text(json.dumps(conf))
    return out


def peft_reference(base_dir: Path, adapter_dir: Path):
    """The unmerged PEFT model: base weights + LoRA branch evaluated at run time."""
    from transformers import Sam3Model

    return peft.PeftModel.from_pretrained(Sam3Model.from_pretrained(base_dir, local_files_only=True), adapter_dir).eval()


@pytest.fixture(scope="module")
def lora_dir(tiny_hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_adapter(tiny_hf_dir, tmp_path_factory.mktemp("lora") / "medsam3-lora")


def _inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 49406, (2, 32), generator=g)
    mask = torch.ones(2, 32, dtype=torch.long)
    mask[1, 9:] = 0
    return {"pixel_values": torch.randn(2, 3, 224, 224, generator=g), "input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"use_rslora": True, "rank_pattern": {"fc1": 2}, "alpha_pattern": {"q_proj": 3}},
        {"modules_to_save": ["text_projection"], "lora_bias": True},
    ],
    ids=["plain", "rslora-patterns", "modules-to-save-bias"],
)
def test_merge_equals_peft_unmerged_model(tiny_hf_dir: Path, tmp_path: Path, variant: dict) -> None:
    from medsam3_export import load_checkpoint
    from medsam3_export.adapters import merge_adapter

    adapter = make_adapter(tiny_hf_dir, tmp_path / "adapter", seed=1, **variant)
    ref = peft_reference(tiny_hf_dir, adapter)
    if "modules_to_save" in variant:  # make the saved copy differ from the base, then save again
        with torch.no_grad():
            for name, p in ref.named_parameters():
                if "modules_to_save" in name:
                    p.add_(0.05 * torch.randn_like(p))
        conf = (adapter / "adapter_config.json").read_text()
        ref.save_pretrained(adapter, save_embedding_layers=False)
        (adapter / "adapter_config.json").write_text(conf)
    ckpt = load_checkpoint(tiny_hf_dir)
    base = {k: v.clone() for k, v in ckpt.detector.state_dict().items()}
    record = merge_adapter(ckpt, adapter)
    merged = ckpt.detector.state_dict()
    assert set(merged) == set(base), "the merge leaves no PEFT wrappers behind"
    changed = [k for k in base if not torch.equal(base[k], merged[k])]
    lora_weights = [k for k in changed if k.endswith(".weight") and k.rsplit(".", 2)[-2] in TARGETS]
    assert len(lora_weights) == record["lora_modules"] > 50
    assert sum(merged[k].numel() for k in lora_weights) == record["merged_parameters"]
    with torch.no_grad():
        got = ckpt.detector(**_inputs())
        want = ref(**_inputs())
    for name in ("pred_logits", "pred_boxes", "presence_logits", "pred_masks"):
        a, b = getattr(got, name), getattr(want, name)
        assert float((a - b).abs().max()) <= 1e-4 * float(b.abs().max()) + 1e-5, name
    assert record["rank"] == 4 and record["alpha"] == 8 and record["use_rslora"] == bool(variant.get("use_rslora"))
    assert record["target_modules"] == sorted(TARGETS)
    assert record["sha256"] == __import__("hashlib").sha256((adapter / "adapter_model.safetensors").read_bytes()).hexdigest()


def test_sam3_pt_base_merges_like_the_hf_base(tiny_hf_dir: Path, tiny_reference, lora_dir: Path, tmp_path: Path) -> None:
    from medsam3_export import load_checkpoint
    from medsam3_export.adapters import merge_adapter
    from medsam3_export.sam3_layout import detector_from_hf

    pt = tmp_path / "sam3.pt"
    torch.save({f"detector.{k}": v.clone() for k, v in detector_from_hf(tiny_reference.state_dict()).items()}, pt)
    from_pt = load_checkpoint(pt, config="tiny")
    from_hf = load_checkpoint(tiny_hf_dir)
    merge_adapter(from_pt, lora_dir)
    merge_adapter(from_hf, lora_dir)
    assert from_pt.source["adapter"]["sha256"] == from_hf.source["adapter"]["sha256"]
    a, b = from_pt.detector.state_dict(), from_hf.detector.state_dict()
    for k in b:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_video_model_adapter_merges_like_peft(tmp_path: Path) -> None:
    """An adapter made on a Sam3VideoModel (detector_model.* and tracker_model.* modules) on a video base."""
    from medsam3_export import random_checkpoint
    from medsam3_export.adapters import merge_adapter

    ours = random_checkpoint("tiny", video=True, seed=2)
    theirs = random_checkpoint("tiny", video=True, seed=2).video
    torch.manual_seed(0)
    cfg = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = peft.get_peft_model(theirs, cfg)
    model.save_pretrained(tmp_path / "video-lora", save_embedding_layers=False)
    want = model.merge_and_unload().state_dict()
    record = merge_adapter(ours, tmp_path / "video-lora")
    got = ours.video.state_dict()
    assert set(got) == set(want)
    assert any(k.startswith("tracker_model.") and "q_proj" in k for k in got)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-6, msg=k)
    assert record["lora_modules"] == sum(1 for k in want if k.endswith(("q_proj.weight", "v_proj.weight")))


@pytest.fixture(scope="module")
def lora_export(tiny_hf_dir: Path, lora_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lora-export") / "tiny-medsam3-lora"
    cli("export", str(tiny_hf_dir), "--adapter", str(lora_dir), "--output", str(out), "--quiet", *transformers_semantics(), check=True)
    return out


def test_export_records_the_adapter(lora_export: Path, lora_dir: Path) -> None:
    manifest = json.loads((lora_export / "manifest.json").read_text())
    rec = manifest["model"]["source"]["adapter"]
    assert rec["path"] == "medsam3-lora" and rec["format"] == "peft-lora"
    assert (rec["rank"], rec["alpha"], rec["target_modules"]) == (4, 8.0, sorted(TARGETS))
    assert rec["base_model_name_or_path"] == "facebook/sam3" and rec["merged_parameters"] > 0
    assert len(rec["sha256"]) == 64 and manifest["parity"]["passed"]


def test_torch_backend_refuses_an_adapted_export(lora_export: Path, tiny_hf_dir: Path) -> None:
    import medsam3_rt
    from medsam3_rt.backends.base import BackendOptions
    from medsam3_rt.errors import CheckpointError

    with pytest.raises(CheckpointError, match="LoRA adapter 'medsam3-lora' merged"):
        medsam3_rt.load(lora_export, "torch", options=BackendOptions(checkpoint=tiny_hf_dir))


@pytest.fixture(scope="module")
def lora_reference(tiny_hf_dir: Path, lora_dir: Path):
    return peft_reference(tiny_hf_dir, lora_dir)


@pytest.mark.parametrize("case", ["rgb", "gray", "ct-float"])
def test_adapted_export_segments_like_the_peft_model(lora_export: Path, lora_reference, case: str) -> None:
    from medsam3_export.tokenizer_files import bundled_clip_tokenizer
    from test_segment_parity import CASES, iou, reference_segment

    import medsam3_rt

    image, prompts = CASES[case], ["liver", "left kidney, upper pole"]
    ref = lora_reference
    with medsam3_rt.load(lora_export, "ort-cpu") as seg:
        res = seg.segment(image, prompts)
    masks, scores, boxes = reference_segment(ref, bundled_clip_tokenizer(), image, prompts, semantics="transformers")
    for p in range(len(prompts)):
        assert iou(res.masks[p], masks[p]) >= 0.999, (case, prompts[p], iou(res.masks[p], masks[p]))
    np.testing.assert_allclose(res.scores, scores, atol=1e-4)
    np.testing.assert_allclose(res.boxes, boxes, atol=0.05 * max(image.shape[:2]) / 100)
    with ref.disable_adapter():  # and the adapter matters: the base model scores these prompts differently
        plain = reference_segment(ref, bundled_clip_tokenizer(), image, prompts, semantics="transformers")
    assert np.abs(plain[1] - scores).max() > 1e-3


# ---- every way an adapter can fail to fit, through the CLI -------------------------------------------------


def _edit_config(**changes: object) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        conf = json.loads((d / "adapter_config.json").read_text())
        conf.update(changes)
        (d / "adapter_config.json").write_text(json.dumps(conf))

    return edit


def _edit_weights(fn: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        from safetensors.torch import load_file, save_file

        f = d / "adapter_model.safetensors"
        save_file(fn(load_file(f)), f)

    return edit


def _rename(old: str, new: str) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    return lambda w: {k.replace(old, new): v for k, v in w.items()}


def _meta_names(w: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The adapter a peft run on Meta's `sam3` modules would write (fused ViT qkv)."""
    shapes = {"A": (4, 64), "B": (192, 4)}
    key = "base_model.model.backbone.vision_backbone.trunk.blocks.{}.attn.qkv.lora_{}.weight"
    return {key.format(i, x): torch.zeros(shapes[x]) for i in range(2) for x in "AB"}


def _truncate(d: Path) -> None:
    f = d / "adapter_model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _drop_one_b(w: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    k = next(k for k in sorted(w) if ".lora_B." in k)
    return {key: v for key, v in w.items() if key != k}


def _widen_one_a(w: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    k = next(k for k in sorted(w) if "vision_encoder" in k and ".lora_A." in k)
    return {**w, k: torch.zeros(w[k].shape[0], w[k].shape[1] + 35)}


ERRORS: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing-folder": (lambda d: shutil.rmtree(d), "does not exist"),
    "no-config": (lambda d: (d / "adapter_config.json").unlink(), "has no adapter_config.json"),
    "bad-json": (lambda d: (d / "adapter_config.json").write_text('{"peft_type": "LORA",'), "is not valid JSON"),
    "no-weights": (lambda d: (d / "adapter_model.safetensors").unlink(), "has no adapter weights"),
    "corrupt-weights": (_truncate, "cannot read adapter weights"),
    "dora": (_edit_config(use_dora=True), "uses DoRA"),
    "loha": (_edit_config(peft_type="LOHA"), "'LOHA' adapter; medsam3-rt merges LoRA adapters only"),
    "bad-rank": (_edit_config(r=0), "'r' must be a positive number"),
    "wrong-base-name": (_edit_config(base_model_name_or_path="facebook/sam2.1-hiera-large"), "not a SAM3 model"),
    "wrong-base-class": (
        _edit_config(auto_mapping={"base_model_class": "Sam3LiteTextModel", "parent_library": "transformers"}),
        "was trained on a Sam3LiteTextModel",
    ),
    "module-missing": (_edit_weights(_rename("backbone.layers.1.", "backbone.layers.7.")), "module(s) the base checkpoint does not have"),
    "meta-module-names": (
        lambda d: (_edit_config(target_modules=["qkv"])(d), _edit_weights(_meta_names)(d)),
        "these are Meta's sam3 module names",
    ),
    "target-not-in-base": (_edit_config(target_modules=["qkv_proj"]), "does not fit the base checkpoint"),
    "tensor-missing": (_edit_weights(_drop_one_b), "has no weights for 1 base module(s)"),
    "rank-mismatch": (_edit_config(r=8), "tensor(s) of another shape"),
    "shape-mismatch": (_edit_weights(_widen_one_a), "[4, 99] vs [4, 64]"),
    "video-adapter": (_edit_weights(_rename("base_model.model.", "base_model.model.detector_model.")), "adapts a SAM3 video model"),
}


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """The CLI's entry point in this process (the subprocess test below covers the installed script)."""
    from medsam3_rt.cli.main import run

    try:
        run(args)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("name", list(ERRORS))
def test_adapter_that_does_not_fit_is_a_one_line_error(
    name: str, tiny_hf_dir: Path, lora_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mutate, message = ERRORS[name]
    adapter = tmp_path / "adapter"
    shutil.copytree(lora_dir, adapter)
    mutate(adapter)
    out = tmp_path / "export"
    code, err = run_cli(["export", str(tiny_hf_dir), "--adapter", str(adapter), "--output", str(out)], capsys)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 4, err
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err and not out.exists()


def test_adapter_error_on_a_sam3_pt_base_from_the_installed_cli(tiny_reference, lora_dir: Path, tmp_path: Path) -> None:
    from medsam3_export.sam3_layout import detector_from_hf

    pt = tmp_path / "sam3.pt"
    torch.save({f"detector.{k}": v for k, v in detector_from_hf(tiny_reference.state_dict()).items()}, pt)
    adapter = tmp_path / "adapter"
    shutil.copytree(lora_dir, adapter)
    _edit_config(r=8)(adapter)
    proc = cli("export", str(pt), "--config", "tiny", "--adapter", str(adapter), "--output", str(tmp_path / "out"))
    assert proc.returncode == 4 and "tensor(s) of another shape" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()
