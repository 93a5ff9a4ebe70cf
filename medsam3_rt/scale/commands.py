"""`medsam3-rt triton-repo` and `serve`, registered through the `medsam3_rt.commands` entry-point group."""

from __future__ import annotations

import signal
import time
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


serve_app = typer.Typer(add_completion=False)


@serve_app.command("serve")
def serve(
    model_dir: Path = typer.Argument(..., help="Export directory (from `medsam3-rt export`)."),
    port: int = typer.Option(8000, "--port", help="HTTP port; gRPC listens on PORT+1, metrics on PORT+2."),
    stream_idle: float = typer.Option(60.0, "--stream-idle", help="Seconds after which an abandoned stream is dropped."),
    stub_env: Path | None = typer.Option(None, "--stub-env", help="numpy<2 venv with nvidia-pytriton for Triton's Python stub."),
    backend: str = typer.Option("auto", "--backend", help="Runtime backend."),
) -> None:
    """Serve `segment` and explicit-id streams over HTTP/gRPC with Triton (PyTriton) until Ctrl-C."""
    from .serve import ServeSettings, start

    triton = start(model_dir, ServeSettings(port, port + 1, port + 2, stream_idle, stub_env=stub_env), backend)
    say(f"serving models segment, stream on http://0.0.0.0:{port} and grpc port {port + 1} (Ctrl-C stops)")

    def _interrupt(*_: object) -> None:
        raise KeyboardInterrupt  # SIGTERM (service managers) stops as cleanly as Ctrl-C

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while triton.is_alive():  # Triton.serve() would start a second server after start()'s run()
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        triton.stop()
