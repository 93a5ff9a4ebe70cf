"""`medsam3-rt triton-repo`, registered through the `medsam3_rt.commands` entry-point group."""

from __future__ import annotations

from pathlib import Path

import typer

from ..cli.console import say

triton_repo_app = typer.Typer(add_completion=False)


@triton_repo_app.command("triton-repo")
def triton_repo(
    model_dir: Path = typer.Argument(..., help="Export directory (from `medsam3-rt export`)."),
    output: Path = typer.Option(..., "--output", "-o", help="Model repository folder to write."),
    name: str | None = typer.Option(None, "--name", help="Model name prefix (default: the manifest's model name)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing repository."),
) -> None:
    """Write a model repository for NVIDIA Triton: one ONNX model per graph, Python-backend segment and stream models."""
    from .triton_repo import write_repository

    models = write_repository(model_dir, output, name=name, force=force)
    for m in models:
        typer.echo(m)
    say(f"wrote {len(models)} models to {output} (tritonserver --model-repository {output})")
