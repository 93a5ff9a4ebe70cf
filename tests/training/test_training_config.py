"""One typed config with the paper's defaults; YAML loading with one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("yaml")

from medsam3_training.config import (
    ConfigError,
    DataConfig,
    OptimConfig,
    TrainConfig,
    TrainLoopConfig,
    default_yaml,
    from_dict,
    load_config,
)


def test_paper_defaults() -> None:
    o = OptimConfig()
    assert (o.lr_decoder, o.lr_vision, o.lr_language, o.lr_geometry) == (3e-4, 5e-5, 5e-5, 1e-4)
    assert (o.betas, o.layer_decay, o.layer_decay_levels) == ((0.9, 0.999), 0.85, 12)
    d = DataConfig()
    assert (d.val_fraction, d.split_seed) == (0.15, 42)
    assert TrainLoopConfig().epochs == 10


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "train.yaml"
    p.write_text(text)
    return p


def test_yaml_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "output_dir: runs/a\nmodel: {checkpoint: ckpt}\ndata: {datasets: [{path: data/kvasir, layout: kvasir-seg}]}\n"
        "optim: {lr_decoder: 1e-4}\ntrain: {epochs: 3}\n",
    )
    cfg = load_config(p, {"train.batch_size": 2})
    assert cfg.output_dir == str(tmp_path / "runs/a")
    assert cfg.model.checkpoint == str(tmp_path / "ckpt")
    assert cfg.data.datasets[0].path == str(tmp_path / "data/kvasir")
    assert cfg.optim.lr_decoder == 1e-4 and cfg.train.epochs == 3 and cfg.train.batch_size == 2
    assert isinstance(cfg, TrainConfig)


@pytest.mark.parametrize(
    "text, message",
    [
        ("model: {checkpoint: x}\ndata: {datasets: [{path: d}]}\ntrian: {epochs: 1}\n", "unknown key 'trian'; did you mean 'train'?"),
        ("model: {checkpoint: x}\ndata: {datasets: [{path: d}]}\ntrain: {epochs: many}\n", "train.epochs must be an integer"),
        ("model: {checkpoint: x}\ndata: {datasets: [{path: d}]}\ntrain: {batch_size: 0}\n", "train.batch_size must be >= 1, got 0"),
        ("model: {checkpoint: x}\ndata: {datasets: []}\n", "data.datasets is empty"),
        ("data: {datasets: [{path: d}]}\n", "lacks the required key 'model'"),
        ("model: {}\ndata: {datasets: [{path: d}]}\n", "exactly one of model.checkpoint"),
        ("model: {checkpoint: x}\ndata: {datasets: [{path: d, axes: [oblique]}]}\n", "axes entries must be axial"),
        ("model: {checkpoint: x}\ndata: {datasets: [{path: d, layout: coco}]}\n", "layout must be one of"),
        ("model: {checkpoint: x}\ndata: {datasets: [{path: d}]}\ntrain: {precision: fp8}\n", "train.precision must be one of"),
        ("model: [\n", "not valid YAML"),
        ("- a\n- b\n", "YAML mapping at the top level"),
    ],
)
def test_bad_configs_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert message in str(e.value)
    assert "\n" not in str(e.value)
    assert e.value.exit_code == 2


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_default_yaml_round_trips() -> None:
    import yaml

    data = yaml.safe_load(default_yaml())
    cfg = from_dict(data)
    assert cfg.to_dict() == data
    assert data["loss"]["find"]["pad_queries"] == 200 and data["optim"]["layer_decay"] == 0.85
