"""The proof it learns: train -> evaluate -> export -> segment, on real MRI (Debian's mricron-data).

A tiny SAM3 geometry (random init, 112 px) learns "brain" on Colin27 T1 slices for 120 steps
(about a minute or two on 2 CPU cores); its validation Dice must rise well above the untrained
model's. The best checkpoint is then exported with `medsam3_export.export_model` and segmented
through the torch-free runtime, which must reproduce the PyTorch model's masks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from training_datasets import MRICRON

torch = pytest.importorskip("torch")
pytest.importorskip("scipy")
pytest.importorskip("yaml")

pytestmark = pytest.mark.skipif(not MRICRON.is_dir(), reason="mricron-data is not installed (apt-get install mricron-data)")

GEOMETRY = {"image_size": 112, "fpn_hidden": 64}
CONFIG = """\
output_dir: run
model:
  random: {{preset: tiny, overrides: {{image_size: 112, fpn_hidden: 64}}, seed: 0, init_std: 0.05}}
data:
  datasets:
    - {{path: {mricron}, layout: mricron, concepts: [brain], axes: [axial, coronal], slice_stride: 3}}
  num_workers: 0
train: {{epochs: 50, max_steps: 120, batch_size: 8, log_every: 10}}
# a random model learns from scratch: one rate for every group (the paper's rates assume SAM3's pre-training)
optim: {{warmup_steps: 10, decay_timescale: 100, lr_decoder: 3.0e-4, lr_vision: 3.0e-4, lr_language: 3.0e-4, lr_geometry: 3.0e-4}}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, one_torch_thread) -> dict:
    from medsam3_export.tokenizer_files import checkpoint_tokenizer
    from medsam3_training.config import load_config
    from medsam3_training.data.dataset import prepare_data
    from medsam3_training.evaluate import TorchPredictor, evaluate
    from medsam3_training.model import load_model
    from medsam3_training.trainer import train

    root = tmp_path_factory.mktemp("mricron-run")
    (root / "train.yaml").write_text(CONFIG.format(mricron=MRICRON))
    cfg = load_config(root / "train.yaml")
    tokenizer, _ = checkpoint_tokenizer(None)
    data = prepare_data(cfg.data)
    untrained = load_model(cfg.model)  # the same initialisation the run starts from
    before = evaluate(data.sources, data.val, [TorchPredictor(untrained.detector, tokenizer)])["predictors"]["pytorch"]["mean"]
    result = train(cfg)
    return {"root": root, "cfg": cfg, "result": result, "before": before, "data": data, "tokenizer": tokenizer}


def test_validation_dice_rises_well_above_the_untrained_model(run) -> None:
    result, before = run["result"], run["before"]
    after = result.history[-1]["mean"]
    print(f"validation Dice: untrained {before['dice']:.3f} -> trained {after['dice']:.3f} (best {result.best_dice:.3f})")
    assert result.steps == 120
    assert result.best_dice >= before["dice"] + 0.25, (before, result.history)
    assert result.best_dice >= 0.6, result.history
    # logs: CSV scalars per log interval, per-dataset validation every epoch
    csv_rows = (run["root"] / "run" / "metrics.csv").read_text().splitlines()
    assert csv_rows[0].startswith("step,epoch,batch,") and len(csv_rows) == 1 + 120 // 10
    assert {"lr_decoder", "lr_vision", "lr_language", "lr_geometry", "find_ce", "seg_mask_dice", "find_o2m"} <= set(csv_rows[0].split(","))
    val = [json.loads(line) for line in (run["root"] / "run" / "validation.jsonl").read_text().splitlines()]
    assert len(val) >= 2 and val[-1]["step"] == 120, "validated every epoch and when the run stopped"
    assert all("mricron" in v["datasets"] and {"dice", "iou"} <= set(v["datasets"]["mricron"]) for v in val)


def test_checkpoints_are_hugging_face_directories(run) -> None:
    from medsam3_export import load_checkpoint
    from medsam3_training.evaluate import TorchPredictor, evaluate

    best = run["result"].best_dir
    assert best is not None and (best / "config.json").is_file() and (best / "model.safetensors").is_file()
    assert (best / "split.json").is_file() and json.loads((best / "training.json").read_text())["validation"]
    assert not (best / "trainer_state.pt").exists() and (run["result"].last_dir / "trainer_state.pt").is_file()
    loaded = load_checkpoint(best)
    assert loaded.video is None
    again = evaluate(run["data"].sources, run["data"].val, [TorchPredictor(loaded.detector, run["tokenizer"])])
    assert again["predictors"]["pytorch"]["mean"]["dice"] == pytest.approx(run["result"].best_dice, abs=1e-9)


@pytest.fixture(scope="module")
def exported(run) -> Path:
    from medsam3_export import export_model

    out = run["root"] / "model"
    export_model(run["result"].best_dir, out)
    return out


def test_exported_model_reproduces_the_pytorch_masks(run, exported: Path) -> None:
    from medsam3_export import load_checkpoint
    from medsam3_training.evaluate import RuntimePredictor, TorchPredictor

    torch_pred = TorchPredictor(load_checkpoint(run["result"].best_dir).detector, run["tokenizer"])
    runtime = RuntimePredictor(exported, "ort-cpu")
    src = run["data"].sources[0]
    ious = []
    for ref in run["data"].val["mricron"]:
        image = src.load(ref).image
        a, b = torch_pred.predict(image, ["brain"]), runtime.predict(image, ["brain"])
        union = np.logical_or(a.masks, b.masks).sum()
        ious.append(1.0 if union == 0 else np.logical_and(a.masks, b.masks).sum() / union)
        np.testing.assert_allclose(b.scores, a.scores, atol=1e-4)
    runtime.close()
    assert min(ious) >= 0.98 and np.mean(ious) >= 0.995, ious


def test_eval_cli_reports_the_export_dice_delta(run, exported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medsam3_rt.cli.main import run as cli_main

    report_dir = run["root"] / "report"
    cli_main(
        [
            "eval",
            str(run["result"].best_dir),
            "--config",
            str(run["root"] / "train.yaml"),
            "--exported",
            str(exported),
            "-o",
            str(report_dir),
        ]
    )
    err = capsys.readouterr().err
    report = json.loads((report_dir / "report.json").read_text())
    assert report["samples"]["mricron"].startswith("validation split")
    assert report["images"]["mricron"] == len(run["data"].val["mricron"])
    assert report["predictors"]["pytorch"]["mean"]["dice"] == pytest.approx(run["result"].best_dice, abs=1e-9)
    assert abs(report["comparison"]["dice_delta"]) < 0.005
    assert "exported vs pytorch: mean Dice delta" in err
    assert "| mricron |" in (report_dir / "report.md").read_text()


def test_evaluating_an_export_needs_no_torch(run, exported: Path) -> None:
    import subprocess
    import sys

    code = f"""
import sys
from medsam3_rt.cli.main import run
run(["eval", {str(exported)!r}, "--config", {str(run["root"] / "train.yaml")!r}, "-o", {str(run["root"] / "report-rt")!r}, "-q"])
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "medsam3_export"))
assert not bad, bad[:5]
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=run["root"])
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]
    report = json.loads((run["root"] / "report-rt" / "report.json").read_text())
    assert report["predictors"]["exported"]["mean"]["dice"] == pytest.approx(run["result"].best_dice, abs=0.005)
