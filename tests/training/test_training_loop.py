"""The training loop: exact --resume, video checkpoints keep their tracker, the CLI's errors and eval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from training_datasets import folders_dataset, write_gray

torch = pytest.importorskip("torch")
pytest.importorskip("scipy")
pytest.importorskip("yaml")

from medsam3_rt.cli.main import run as cli_main  # noqa: E402

TINY = "{preset: tiny, overrides: {image_size: 56, fpn_hidden: 32, vit_hidden: 32, vit_mlp: 64, detr_ffn: 64, num_queries: 8}, seed: 0}"


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Every test here runs with torch on one thread (conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def discs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return folders_dataset(tmp_path_factory.mktemp("data") / "discs", n=6)


def config(tmp_path: Path, data: Path, *, out: str = "run", extra: str = "", model: str = f"{{random: {TINY}}}") -> Path:
    p = tmp_path / f"{out}.yaml"
    p.write_text(
        f"output_dir: {out}\nmodel: {model}\n"
        f"data: {{datasets: [{{path: {data}}}], num_workers: 0, negatives: 0.5}}\n"
        "train: {epochs: 3, batch_size: 2, grad_accum: 2, log_every: 1}\n"
        "optim: {warmup_steps: 2, decay_timescale: 4}\n" + extra
    )
    return p


def state_of(run_dir: Path) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "last" / "model.safetensors")), torch.load(run_dir / "last" / "trainer_state.pt", weights_only=True)


def test_resume_is_exact(tmp_path: Path, discs: Path) -> None:
    """Stopping after 2 optimizer steps and resuming to 5 equals 5 steps in one go (crossing an epoch end)."""
    from medsam3_training.config import load_config
    from medsam3_training.trainer import train

    straight = train(load_config(config(tmp_path, discs, out="a"), {"train.max_steps": 5}))
    first = train(load_config(config(tmp_path, discs, out="b"), {"train.max_steps": 2}))
    assert first.steps == 2 and straight.steps == 5 and straight.epochs_done >= 1, "the run must cross an epoch boundary"
    resumed = train(load_config(config(tmp_path, discs, out="b"), {"train.max_steps": 5}), resume=True)
    assert resumed.steps == 5
    (wa, sa), (wb, sb) = state_of(tmp_path / "a"), state_of(tmp_path / "b")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    for pa, pb in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values()):
        assert torch.equal(pa["exp_avg"], pb["exp_avg"]) and torch.equal(pa["exp_avg_sq"], pb["exp_avg_sq"])
    assert sa["scheduler"]["last_epoch"] == sb["scheduler"]["last_epoch"] == 5
    assert (sa["epoch"], sa["batch"]) == (sb["epoch"], sb["batch"])
    # the run's own changes happened: weights moved away from the initialisation
    from medsam3_training.config import RandomModelConfig
    from medsam3_training.model import random_model

    init = random_model(RandomModelConfig(preset="tiny", overrides=dict(straight.model.source["overrides"]), seed=0)).detector.state_dict()
    assert any(not torch.equal(init[k], wa[k]) for k in wa)
    # the default (Meta's) prompt semantics is recorded for export, and the CLS token was trained
    assert json.loads((tmp_path / "a" / "last" / "training.json").read_text())["prompt_semantics"] == "meta"
    cls = "geometry_encoder.cls_embed.weight"
    assert not torch.equal(init[cls], wa[cls])


def test_video_checkpoint_keeps_the_source_tracker(tmp_path: Path, discs: Path) -> None:
    from medsam3_export import load_checkpoint
    from medsam3_training.config import RandomModelConfig, load_config
    from medsam3_training.model import random_model
    from medsam3_training.trainer import train

    video_model = f"{{random: {TINY[:-1]}, video: true}}}}"
    result = train(load_config(config(tmp_path, discs, model=video_model), {"train.max_steps": 2}))
    cfg = json.loads((result.last_dir / "config.json").read_text())
    assert cfg["model_type"] == "sam3_video"
    saved = load_checkpoint(result.last_dir)
    assert saved.has_tracker
    src = random_model(RandomModelConfig(preset="tiny", overrides=dict(result.model.source["overrides"]), video=True, seed=0)).video
    new = saved.video.state_dict()
    tracker = [k for k in new if k.startswith(("tracker_model.", "tracker_neck."))]
    assert tracker and all(torch.equal(new[k], src.state_dict()[k]) for k in tracker), "the tracker is the source's"
    det = [k for k in new if k.startswith("detector_model.")]
    assert any(not torch.equal(new[k], src.state_dict()[k]) for k in det), "the detector is fine-tuned"


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        cli_main(args)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_errors_are_one_line(tmp_path: Path, discs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["train", "--print-config"], capsys)
    import yaml

    assert code == 0 and yaml.safe_load(out)["loss"]["o2m"]["topk"] == 4
    cases = []
    cases.append((["train"], 2, "give the run's YAML with --config"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {random: {preset: tiny}}\ndata: {datasets: [{path: d}]}\ntrain: {epoch: 2}\n")
    cases.append((["train", "--config", str(bad)], 2, "unknown key 'train.epoch'; did you mean 'epochs'?"))
    cases.append((["train", "--config", str(config(tmp_path, tmp_path / "nowhere"))], 3, "does not exist"))
    broken = folders_dataset(tmp_path / "broken", n=2)
    write_gray(broken / "masks" / "case00.png", np.full((72, 88), 9, np.uint8))
    cases.append((["train", "--config", str(config(tmp_path, broken, out="x"))], 3, "label 9 is not in the label-to-text dictionary"))
    cases.append((["train", "--config", str(config(tmp_path, discs, out="y")), "--set", "train.batch_size"], 2, "expected KEY=VALUE"))
    cases.append((["eval", str(tmp_path / "nope"), "--data", str(discs), "-o", str(tmp_path / "r")], 2, "does not exist"))
    for args, want_code, message in cases:
        code, _, err = run_cli(args, capsys)
        assert code == want_code and message in err and err.strip().count("\n") == 0, (args, code, err)
    (tmp_path / "run").mkdir(exist_ok=True)
    (tmp_path / "run" / "something").write_text("x")
    code, _, err = run_cli(["train", "--config", str(config(tmp_path, discs))], capsys)
    assert code == 2 and "pass --resume" in err


def test_eval_cli_on_a_pytorch_checkpoint(tmp_path: Path, discs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medsam3_training.config import RandomModelConfig
    from medsam3_training.model import random_model

    ckpt = tmp_path / "ckpt"
    overrides = {"image_size": 56, "fpn_hidden": 32, "vit_hidden": 32, "vit_mlp": 64, "detr_ffn": 64, "num_queries": 8}
    random_model(RandomModelConfig(overrides=overrides)).detector.save_pretrained(ckpt)
    code, out, err = run_cli(["eval", str(ckpt), "--data", str(discs), "-o", str(tmp_path / "rep"), "--device", "cpu"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["samples"] == {"discs": "all samples"} and report["images"] == {"discs": 6}
    ds = report["predictors"]["pytorch"]["datasets"]["discs"]
    assert set(ds["concepts"]) == {"bright disc", "dim disc"} and 0.0 <= ds["dice"] <= 1.0 and ds["n"] > 0
    assert "medsam3-rt eval" in out and (tmp_path / "rep" / "report.md").is_file()
    code, _, err = run_cli(["eval", str(ckpt), "--data", str(discs), "-o", str(tmp_path / "rep"), "--split", "val"], capsys)
    assert code == 2 and "not empty" in err
    code, _, err = run_cli(["eval", str(ckpt), "--data", str(discs), "-o", str(tmp_path / "rep2"), "--split", "val"], capsys)
    assert code == 2 and "no saved split for dataset 'discs'" in err


def test_epoch_sampler_shards_are_disjoint_and_resumable() -> None:
    from medsam3_training.trainer import EpochSampler

    shards = [EpochSampler(11, r, 2, seed=5, batch_size=2) for r in range(2)]
    for s in shards:
        s.set_epoch(3)
    a, b = list(shards[0]), list(shards[1])
    assert len(a) == len(b) == 6 and set(a) | set(b) == set(range(11))
    assert shards[0].batches() == 3
    shards[0].set_epoch(3, skip_batches=1)
    assert list(shards[0]) == a[2:]
    shards[0].set_epoch(4)
    assert list(shards[0]) != a


def test_bf16_autocast_checkpointing_and_workers(tmp_path: Path, discs: Path) -> None:
    """The memory-saving options run: bf16 autocast (CPU autocast here), gradient checkpointing, loader workers."""
    from medsam3_training.config import load_config
    from medsam3_training.trainer import train

    cfg = load_config(
        config(tmp_path, discs),
        {"train.max_steps": 2, "train.precision": "bf16", "train.gradient_checkpointing": True, "data.num_workers": 2},
    )
    result = train(cfg)
    assert result.steps == 2 and (result.last_dir / "model.safetensors").is_file()
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and all("nan" not in r for r in rows[1:])
