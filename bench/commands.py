"""`medsam3-rt bench MODEL_DIR` (registered in the `medsam3_rt.commands` entry-point group).

The measuring lives in `medsam3_bench.runner` (torch-free); the transformers baseline is a
registered candidate, loaded only when it is asked for (`--baseline on`) or, with the default
`auto`, when its package and extra are installed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer

from medsam3_rt.cli.console import out_console, say
from medsam3_rt.errors import UsageError
from medsam3_rt.io.atomic import atomic_write_text

from .report import to_markdown, write_plots
from .runner import BenchConfig, Variant, run_benchmark
from .schema import CURVE_LENGTHS, validate

bench_app = typer.Typer(add_completion=False)


def _hw(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--image-size must be HxW, e.g. 512x512, got {text!r}") from None
    if h < 2 or w < 2:
        raise UsageError(f"--image-size {text} is too small")
    return h, w


def _variant(text: str, backends: list[str]) -> Variant:
    """NAME=DIR[,backend=B][,detect_every=K] (the backend defaults to the first --backend)."""
    head, *opts = text.split(",")
    name, sep, path = head.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise UsageError(f"--variant must be NAME=DIR[,backend=B][,detect_every=K], got {text!r}")
    fields: dict[str, str] = {}
    for o in opts:
        k, sep, v = o.partition("=")
        if not sep or k.strip() not in ("backend", "detect_every"):
            raise UsageError(f"--variant {text!r}: unknown option {o!r} (backend=B, detect_every=K)")
        fields[k.strip()] = v.strip()
    try:
        every = int(fields.get("detect_every", "1"))
    except ValueError:
        raise UsageError(f"--variant {text!r}: detect_every must be an integer") from None
    d = Path(path.strip())
    if not (d / "manifest.json").is_file():
        raise UsageError(f"--variant {name.strip()!r}: {d} is not an export directory (no manifest.json)")
    return Variant(name.strip(), d, fields.get("backend", backends[0] if backends else "ort-cpu"), every)


@bench_app.command("bench", no_args_is_help=True)
def bench(
    model_dir: Path = typer.Argument(..., help="Export directory (manifest.json + graphs)."),
    backend: list[str] = typer.Option(
        ["ort-cpu"], "--backend", "-b", help="medsam3-rt backend(s) to measure; 'available' = every backend that runs here."
    ),
    baseline: str = typer.Option("auto", "--baseline", help="transformers eager fp32 baseline: auto (if installed), on, off."),
    baseline_device: str = typer.Option(
        "auto", "--baseline-device", help="Where the baseline runs: auto (a CUDA GPU when PyTorch sees one), cpu, cuda, cuda:N."
    ),
    prompts: list[str] = typer.Option(["liver", "left kidney"], "--prompts", "-p", help="Text prompts (repeat the option)."),
    frames: int = typer.Option(8, "--frames", "-n", min=0, help="Measured streaming slices per candidate."),
    rounds: int = typer.Option(5, "--rounds", min=0, help="Measured 2D image rounds per candidate."),
    warmup: int = typer.Option(1, "--warmup", min=0, help="Unmeasured leading image rounds / streaming slices."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads per candidate (default: every usable core)."),
    image_size: str = typer.Option("512x512", "--image-size", help="Input image size HxW (synthetic CT-like slices)."),
    no_image: bool = typer.Option(False, "--no-image", help="Skip the 2D image rounds."),
    stream: bool | None = typer.Option(None, "--stream/--no-stream", help="Measure streaming (default: when the export has a tracker)."),
    tracker_rounds: int = typer.Option(5, "--tracker-rounds", min=0, help="Rounds of the tracker step alone."),
    curve: int = typer.Option(0, "--curve", min=0, help=f"Streaming cost curve over this many slices (totals at {CURVE_LENGTHS})."),
    curve_backend: list[str] = typer.Option([], "--curve-backend", help="Candidates for the curve (default: the first backend)."),
    curve_baseline: int = typer.Option(0, "--curve-baseline", min=0, help="Slices of the baseline's curve (0: none)."),
    max_objects: int = typer.Option(2, "--max-objects", min=1, help="Tracked objects at most (both sides)."),
    detection_threshold: float | None = typer.Option(
        None, "--detection-threshold", help="Detection and new-object threshold (default: the model's; calibrated for random weights)."
    ),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="The export's checkpoint (baseline and torch backend)."),
    settle: float = typer.Option(0.05, "--settle", min=0.0, help="Seconds of pause before each timed call."),
    flops: bool = typer.Option(True, "--flops/--no-flops", help="Count the 2D graphs' FLOPs and time this machine's GEMM peak."),
    variant: list[str] = typer.Option(
        [],
        "--variant",
        help="Also measure NAME=DIR[,backend=B][,detect_every=K]: another export (int8, another size) or stream setting, same run.",
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Write the result JSON here."),
    markdown_out: Path | None = typer.Option(None, "--markdown", help="Write the markdown tables here."),
    plot: Path | None = typer.Option(None, "--plot", help="Write the stage-breakdown PNG here (and <stem>.curve.png); needs matplotlib."),
) -> None:
    """Per-stage latency (p50/p95/p99), throughput, cold start, prompt cache and memory vs the transformers baseline."""
    if baseline not in ("auto", "on", "off"):
        raise UsageError(f"--baseline must be auto, on or off, got {baseline!r}")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", baseline_device):
        raise UsageError(f"--baseline-device must be auto, cpu, cuda or cuda:N, got {baseline_device!r}")
    cfg = BenchConfig(
        model_dir=model_dir,
        backends=tuple(backend),
        baseline=baseline,
        baseline_device=baseline_device,
        prompts=tuple(prompts),
        rounds=rounds,
        frames=frames,
        warmup=warmup,
        threads=threads,
        image_hw=_hw(image_size),
        image=not no_image,
        stream=stream,
        tracker_rounds=tracker_rounds,
        curve_slices=curve,
        curve_backends=tuple(curve_backend),
        curve_baseline_slices=curve_baseline,
        max_objects=max_objects,
        detection_threshold=detection_threshold,
        checkpoint=checkpoint,
        settle_s=settle,
        flops=flops,
        variants=tuple(_variant(v, backend) for v in variant),
    )
    result = run_benchmark(cfg, progress=say)
    validate(result, required=False)
    md = to_markdown(result)
    out_console.print(md, markup=False, highlight=False, soft_wrap=True)
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(result, indent=1))
        say(f"wrote {json_out}")
    if markdown_out is not None:
        atomic_write_text(markdown_out, md)
        say(f"wrote {markdown_out}")
    if plot is not None:
        for p in write_plots(result, plot):
            say(f"wrote {p}")
