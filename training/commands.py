"""The `train` and `eval` commands of `medsam3-rt` (registered in the `medsam3_rt.commands` entry-point group).

Their bodies live in `medsam3_training.cli`, imported when a command runs: listing the
commands stays torch-free, and evaluating an export directory needs only the runtime.
"""

from __future__ import annotations

import typer

from medsam3_rt.cli.console import import_optional

train_app = typer.Typer(add_completion=False)
eval_app = typer.Typer(add_completion=False)


def _training_cli():
    return import_optional("medsam3_training.cli", "train", "`medsam3-rt train` / `medsam3-rt eval`")


@train_app.command("train")
def train_command(
    config: str | None = typer.Option(None, "--config", "-c", help="The run's YAML (datasets, model, recipe overrides)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in output_dir from its last/ checkpoint, exactly."),
    output: str | None = typer.Option(None, "--output", "-o", help="Override the config's output_dir."),
    overrides: list[str] = typer.Option([], "--set", help="Override one config key, KEY=VALUE (e.g. train.epochs=2); repeatable."),
    print_config: bool = typer.Option(
        False, "--print-config", help="Print every config key with its default (the paper's recipe) and exit."
    ),
    recipe: str = typer.Option("image", "--recipe", help="image: the detector (Medical SAM3); tracker: the video tracker on clips."),
) -> None:
    """Fine-tune a SAM3 checkpoint with the Medical SAM3 recipe (also under torchrun for DDP), or its tracker."""
    _training_cli().train_command(config, resume=resume, output=output, overrides=overrides, print_config=print_config, recipe=recipe)


@eval_app.command("eval", no_args_is_help=True)
def eval_command(
    checkpoint: str = typer.Argument(..., help="A PyTorch checkpoint folder (e.g. run/best) or an export directory."),
    output: str = typer.Option(..., "--output", "-o", help="Report folder (report.json + report.md)."),
    data: list[str] = typer.Option([], "--data", "-d", help="Dataset folder to evaluate on; repeatable."),
    config: str | None = typer.Option(None, "--config", "-c", help="Evaluate on the datasets of this training config instead."),
    exported: str | None = typer.Option(None, "--exported", help="Also evaluate this export directory and report the Dice delta."),
    split: str = typer.Option("auto", "--split", help="auto (held-out samples when the checkpoint carries its split), val, or all."),
    backend: str = typer.Option("auto", "--backend", help="Runtime backend for export directories."),
    max_images: int | None = typer.Option(None, "--max-images", min=1, help="Evaluate at most this many images per dataset."),
    device: str = typer.Option("auto", "--device", help="Device of a PyTorch checkpoint: auto, cpu, cuda, cuda:1."),
    force: bool = typer.Option(False, "--force", help="Overwrite the report in a non-empty OUTPUT."),
) -> None:
    """Evaluate with the paper's protocol (text prompts, top-1 mask, pixel-wise max); Dice/IoU report."""
    _training_cli().eval_command(
        checkpoint,
        data=data,
        config=config,
        output=output,
        exported=exported,
        split=split,
        backend=backend,
        max_images=max_images,
        device=device,
        force=force,
    )
