"""`medsam3-rt demo`: the bundled demo model on its sample slice and volume, scored against the atlas."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from .console import STATE, out_console, say


def demo(
    output: str = typer.Option(
        "demo-output", "--output", "-o", help="Folder for overlays, label maps and demo.json (its demo files are rewritten)."
    ),
    backend: str = typer.Option("auto", "--backend", "-b", help="auto, ort-cpu, openvino, ..."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads per graph."),
) -> None:
    """Segment the bundled sample MRI slice and volume with the bundled demo model; print Dice/IoU against the atlas masks."""
    from ..demo import NO_TRACKER_NOTE, REPORT_MD, TRACKED_NOTE, demo_model_dir, report_summary, run_demo

    say(f"demo model: {escape(str(demo_model_dir()))}")
    result = run_demo(Path(output), backend=backend, threads=threads)
    inputs = {r.kind: r.input for r in result.rows}
    say(f"2D: {escape(inputs['slice'])}; 3D: {escape(inputs['volume'])} (held-out slices of the training subject)")
    table = Table(title=f"medsam3-rt demo ({result.backend})")
    for col, justify in (("input", "left"), ("prompt", "left"), ("score", "right"), ("Dice %", "right"), ("IoU %", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in result.rows:
        table.add_row(
            {"slice": "2D slice", "volume-detect": "3D per-slice"}.get(
                r.kind, "3D tracked" if result.volume_mode == "tracker" else "3D volume"
            ),
            r.prompt,
            "-" if r.score is None else f"{r.score:.3f}",
            f"{100 * r.dice:.1f}",
            f"{100 * r.iou:.1f}",
        )
    if not STATE.quiet:
        out_console.print(table)
    if result.volume_mode != "tracker":
        say(f"3D: {NO_TRACKER_NOTE}")
    else:
        say(f"3D: {TRACKED_NOTE}")
    say(f"prompt cache: the text encoder ran {result.text_encoder_runs} time(s); {result.cache_hits} prompt(s) came from the cache")
    summary = report_summary()
    if summary:
        parts = [f"{escape(ds)} {100 * d:.1f}" for part in ("heldout", "second_source") for ds, d in summary[part].items()]
        say(f"this model's mean Dice in its report: {'; '.join(parts)}; per concept: {escape(str(REPORT_MD))}")
    say(f"wrote {len(result.files)} files to {escape(output)} in {result.seconds:.1f} s")
