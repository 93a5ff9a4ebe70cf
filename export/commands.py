"""The `export` and `build` commands of `medsam3-rt` (registered in the `medsam3_rt.commands` entry-point group).

This module imports only typer and the runtime: torch, onnx and TensorRT are imported when a
command runs, so `medsam3-rt --help` stays fast and a missing extra is a one-line error.
"""

from __future__ import annotations

from pathlib import Path

import typer

from medsam3_rt.cli.console import err_console, import_optional, out_console, say
from medsam3_rt.engines import AXIS_DEFAULTS, parse_axis_override

export_app = typer.Typer(add_completion=False)
build_app = typer.Typer(add_completion=False)

_AXES_HELP = ", ".join(f"{k}={r.min}:{r.opt}:{r.max}" for k, r in AXIS_DEFAULTS.items())


@export_app.command("export", no_args_is_help=True)
def export(
    checkpoint: str = typer.Argument(..., help="Hugging Face SAM3 directory (config.json + *.safetensors) or a sam3.pt file."),
    output: str = typer.Option(..., "--output", "-o", help="Export directory to create."),
    config: str | None = typer.Option(None, "--config", help="Geometry of a sam3.pt: a preset (tiny, small, full) or a config.json."),
    opset: int = typer.Option(18, "--opset", min=18, help="ONNX opset (>= 18 for antialiased Resize)."),
    force: bool = typer.Option(False, "--force", help="Replace OUTPUT if it exists."),
    random: bool = typer.Option(False, "--random", help="CHECKPOINT names a preset; export random weights (tests, benchmarks)."),
    prompt_semantics: str | None = typer.Option(
        None,
        "--prompt-semantics",
        help="Detector text-only prompt: meta (Meta's sam3: + geometry-encoder CLS token) or transformers "
        "(text tokens only). Default: what the checkpoint was trained with if it records it, else meta.",
    ),
    tracker_semantics: str = typer.Option(
        "meta",
        "--tracker-semantics",
        help="Tracker new-object path: meta (Meta's video predictor: single-mask pointer, memory of the mask at video "
        "resolution) or transformers (Sam3VideoModel).",
    ),
    adapter: str | None = typer.Option(None, "--adapter", help="A PEFT LoRA adapter folder to merge into the weights before export."),
    attention: str = typer.Option(
        "unfused",
        "--attention",
        help="fused: each attention as one com.microsoft::MultiHeadAttention node (ONNX Runtime, OpenVINO; less memory); "
        "unfused: MatMul/Softmax/MatMul (every backend, needed for `medsam3-rt build`/TensorRT).",
    ),
    batch_axis: bool = typer.Option(
        False, "--batch-axis", help="Image backbone with a dynamic batch axis: several images per call (Segmenter.segment_batch)."
    ),
    image_size: int | None = typer.Option(
        None, "--image-size", help="Export at this input size (px, e.g. 1008 -> 840/672/504) instead of the checkpoint's."
    ),
    parity_reference: str = typer.Option(
        "transformers",
        "--parity-reference",
        help="What the graphs are checked against: transformers, meta (Meta's own sam3 code, for a sam3.pt: text encoder, "
        "image backbone, detector; needs the 'reference' extra) or both.",
    ),
) -> None:
    """Export a checkpoint to ONNX graphs + manifest, and check parity with PyTorch."""
    exp = import_optional("medsam3_export.exporter", "export", "`medsam3-rt export`")
    ckpt = import_optional("medsam3_export.checkpoint", "export", "`medsam3-rt export`")
    with err_console.status("exporting") as status:

        def progress(msg: str) -> None:
            status.update(msg)
            say(msg)

        source = ckpt.random_checkpoint(checkpoint, object_score_bias=ckpt.RANDOM_OBJECT_SCORE_BIAS) if random else checkpoint
        options = exp.ExportOptions(
            opset=opset,
            overwrite=force,
            prompt_semantics=prompt_semantics,
            tracker_semantics=tracker_semantics,
            adapter=adapter,
            attention=attention,
            image_size=image_size,
            batch_axis=batch_axis,
            parity_reference=parity_reference,
        )
        exp.export_model(source, output, config=config, options=options, progress=progress)


@build_app.command("build", no_args_is_help=True)
def build(
    model_dir: Path = typer.Argument(..., help="Export directory (from `medsam3-rt export`)."),
    precision: str = typer.Option("fp16", "--precision", help="fp16, bf16 or fp32 (fp32 disables TF32)."),
    int8: bool = typer.Option(False, "--int8", help="INT8 image backbone, calibrated on --calib images (TensorRT 10 only)."),
    calib: Path | None = typer.Option(None, "--calib", help="Folder of representative images (INT8 calibration; also the gate's set)."),
    val: Path | None = typer.Option(None, "--val", help="Validation images for the accuracy gate; masks/<stem>.png adds ground truth."),
    prompt: list[str] = typer.Option([], "--prompt", "-p", help="Prompts the gate segments (default: polyp, left kidney)."),
    workspace: float = typer.Option(4.0, "--workspace", help="TensorRT workspace limit in GB."),
    timing_cache: Path | None = typer.Option(None, "--timing-cache", help="Timing cache file (default MODEL_DIR/engines/timing.cache)."),
    axis: list[str] = typer.Option([], "--axis", help=f"Profile range AXIS=MIN:OPT:MAX (defaults {_AXES_HELP})."),
    graph: list[str] = typer.Option([], "--graph", help="Build only these graphs (default: all)."),
    max_dice_drop: float = typer.Option(0.5, "--max-dice-drop", help="Fail if the Dice drop vs fp32 exceeds this (points)."),
    reference: str = typer.Option("ort-cpu", "--reference", help="Backend running the fp32 reference for the gate."),
    device: int = typer.Option(0, "--device", help="CUDA device id."),
    opt_level: int = typer.Option(3, "--opt-level", help="TensorRT builder optimisation level 0..5."),
    version_compatible: bool = typer.Option(False, "--version-compatible", help="Engines loadable by later TensorRT of the same major."),
    hardware_compatible: bool = typer.Option(False, "--hardware-compatible", help="Engines for any Ampere-or-newer GPU (slower)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the build plan (profiles, flags, files) and stop."),
) -> None:
    """Build one TensorRT engine per graph, gate its accuracy against fp32, record it in manifest.json."""
    axes = dict(parse_axis_override(a) for a in axis)
    tb = import_optional("medsam3_export.tensorrt_build", "export", "`medsam3-rt build`")
    options = tb.BuildOptions(
        precision=precision,
        int8=int8,
        calib_dir=calib,
        val_dir=val,
        prompts=tuple(prompt) or tb.accuracy.DEFAULT_PROMPTS,
        workspace_gb=workspace,
        timing_cache=timing_cache,
        axes=axes,
        graphs=tuple(graph),
        max_dice_drop=max_dice_drop,
        reference=reference,
        device_id=device,
        optimization_level=opt_level,
        version_compatible=version_compatible,
        hardware_compatible=hardware_compatible,
    )
    result = tb.build_engines(model_dir, options, progress=say, dry_run=dry_run)
    if dry_run:
        return
    for e in result.entries:
        out_console.print(
            f"{e.graph:16s} {e.label:10s} {e.file} ({e.bytes / 1e6:.1f} MB, {len(e.pinned_fp32)} layers pinned fp32)", highlight=False
        )
    out_console.print(result.report.describe(), highlight=False, soft_wrap=True)


quantize_app = typer.Typer(add_completion=False)


@quantize_app.command("quantize", no_args_is_help=True)
def quantize(
    model_dir: Path = typer.Argument(..., help="Export directory (from `medsam3-rt export`)."),
    calib_dir: Path = typer.Argument(..., help="Folder of representative images: calibration, and a hold-out part for the gate."),
    output: Path = typer.Option(..., "--output", "-o", help="Quantised export directory to create (written only if the gate passes)."),
    prompt: list[str] = typer.Option(
        [],
        "--prompts",
        "--prompt",
        "-p",
        help="Prompts the gate segments and the detector is calibrated on (default: the export's prompt packs).",
    ),
    graphs: list[str] = typer.Option(
        [],
        "--graphs",
        help="Graphs to quantise: backbone, detector, or backbone,detector (default: those faster in int8 that pass the gate).",
    ),
    engine: str = typer.Option("ort", "--engine", help="ort (ONNX Runtime QDQ, ONNX) or openvino (NNCF, OpenVINO IR)."),
    method: str = typer.Option("minmax", "--method", help="Activation ranges (ort): minmax, percentile or entropy."),
    per_tensor: bool = typer.Option(False, "--per-tensor", help="One weight scale per tensor instead of per output channel (ort)."),
    keep_fp32: list[str] = typer.Option(
        [],
        "--keep-fp32",
        help="Module path fragment whose layers stay fp32 (repeatable; 'none': none; default: the detector's score/box heads).",
    ),
    holdout: float = typer.Option(0.25, "--holdout", help="Fraction of CALIB_DIR held out of calibration for the accuracy gate."),
    max_dice_drop: float = typer.Option(
        1.0, "--max-dice-drop", help="Refuse to write OUTPUT if the Dice drop vs fp32 exceeds this (points)."
    ),
    threads: int | None = typer.Option(None, "--threads", help="Runtime threads."),
    force: bool = typer.Option(False, "--force", help="Replace OUTPUT if it exists."),
) -> None:
    """Static int8 backbone and/or detector calibrated on your images; refuses a Dice drop above the bound."""
    q = import_optional("medsam3_export.quantize", "export", "`medsam3-rt quantize`")
    keep: tuple[str, ...] | None = None
    if keep_fp32:
        keep = () if [k.lower() for k in keep_fp32] == ["none"] else tuple(keep_fp32)
    options = q.QuantizeOptions(
        prompts=tuple(prompt),
        holdout=holdout,
        max_dice_drop=max_dice_drop,
        overwrite=force,
        threads=threads,
        graphs=q.parse_graphs(graphs),
        engine=engine,
        method=method,
        per_channel=not per_tensor,
        keep_fp32=keep,
    )
    result = q.quantize_export(model_dir, calib_dir, output, options, progress=say)
    for graph, r in result.graph_reports.items():
        state = "int8" if graph in result.graphs else "fp32 (int8 not kept)"
        out_console.print(
            f"{graph:16s} {state:20s} worst output max|d|/max|ref| {r.worst_rel:.4f}; "
            f"{r.fp32_ms:.1f} ms fp32 -> {r.int8_ms:.1f} ms int8 ({r.speed_ratio:.2f}x); "
            f"{r.quantised_nodes} layers int8, {r.kept_fp32_nodes} kept fp32",
            highlight=False,
            soft_wrap=True,
        )
    for p, d in result.per_prompt_dice.items():
        out_console.print(f"prompt {p!r:24s} Dice int8 vs fp32 {d:.4f}", highlight=False)
    out_console.print(result.report.describe(), highlight=False, soft_wrap=True)
    out_console.print(f"wrote {result.output}", highlight=False)


fp16_weights_app = typer.Typer(add_completion=False)


@fp16_weights_app.command("fp16-weights", no_args_is_help=True)
def fp16_weights(
    model_dir: Path = typer.Argument(..., help="Export directory (from `medsam3-rt export`)."),
    output: Path = typer.Option(..., "--output", "-o", help="Export directory to create (written only if parity passes)."),
    force: bool = typer.Option(False, "--force", help="Replace OUTPUT if it exists."),
) -> None:
    """Store the weights as fp16 (half the disk and weight memory), computed in fp32; checked against MODEL_DIR."""
    ws = import_optional("medsam3_export.weight_storage", "export", "`medsam3-rt fp16-weights`")
    record = ws.store_export_fp16(model_dir, output, overwrite=force, progress=say)
    before = sum(g["converted_fp32_bytes"] for g in record["graphs"].values())
    after = sum(g["converted_fp16_bytes"] for g in record["graphs"].values())
    worst = max(v["max_rel"] for v in record["parity"]["worst"].values())
    out_console.print(
        f"weights {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB as fp16; every output within "
        f"{worst:.1e} x max|fp32 output| of {model_dir}",
        highlight=False,
    )
    out_console.print(f"wrote {output}", highlight=False)
