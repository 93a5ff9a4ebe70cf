"""`medsam3-rt info`: what an export directory holds and which backends can run it here."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape

from .. import backends
from ..backends import ort_install
from ..manifest import load_manifest
from .console import out_console


def info(
    model_dir: Path = typer.Argument(..., help="Export directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole manifest as JSON."),
    verify: str = typer.Option("hash", "--verify", help="hash (SHA-256 of every file), size, or none."),
) -> None:
    """Print the manifest summary, graphs, parity and available backends."""
    if verify not in ("hash", "size", "none"):
        raise typer.BadParameter("--verify must be hash, size or none")
    m = load_manifest(model_dir, verify=verify)  # type: ignore[arg-type]
    if as_json:
        out_console.print_json(json.dumps(m.to_json()))
        return
    src = m.model.get("source", {})
    out_console.print(
        f"[bold]{m.model.get('name')}[/]  ({m.model.get('architecture')}, from {src.get('format')} "
        f"{src.get('path', src.get('preset', ''))}; files verified: {verify})"
    )
    out_console.print(
        f"image {m.dims.image_size}x{m.dims.image_size}, patch {m.dims.patch_size}, "
        f"{m.dims.num_queries} queries, tracker: {'yes' if m.has_tracker else 'no'}"
    )
    # Exports without the field predate it; their detector graphs followed transformers.
    out_console.print(f"prompt semantics: {m.model.get('prompt_semantics', 'transformers')} (detector, text-only prompts)")
    if m.tracker is not None:  # exports without the field predate it; their tracker followed transformers
        out_console.print(f"tracker semantics: {m.tracker.get('semantics', 'transformers')} (new objects: pointer and first memory)")
    out_console.print(f"[dim]{m.model.get('intended_use')}[/]")
    out_console.print("graphs:")
    for name, g in m.graphs.items():
        size = sum(m.files[f].bytes for f in (g.file, *g.external_data)) / 1e6
        fmt = lambda ts: ", ".join(f"{t.name}{list(t.shape)}" for t in ts)  # noqa: E731
        out_console.print(
            f"  {name} ({g.file}, {size:.1f} MB)\n    in:  {fmt(g.spec.inputs)}\n    out: {fmt(g.spec.outputs)}",
            highlight=False,
            soft_wrap=True,
        )
    parity = m.parity
    out_console.print(
        f"parity vs {parity.get('reference', '?')}: {'passed' if parity.get('passed') else 'NOT passed'} ({parity.get('tolerance', '')})"
    )
    meta = parity.get("meta")
    if isinstance(meta, dict):  # `export --parity-reference meta|both`
        skipped = "".join(f"; {g} not compared: {why}" for g, why in (meta.get("not_compared") or {}).items())
        out_console.print(
            f"parity vs {meta.get('reference', '?')}: {', '.join(meta.get('graphs', []))}{skipped}", highlight=False, soft_wrap=True
        )
    out_console.print(f"onnxruntime: {ort_install.describe()}", highlight=False, soft_wrap=True)
    clash = ort_install.conflict_message()
    if clash:
        out_console.print(f"[yellow]warning:[/] {escape(clash)}", highlight=False, soft_wrap=True)
    out_console.print("backends here:")
    for name, status in backends.available().items():
        out_console.print(f"  {name:9s} {'yes' if status.ok else 'no: ' + escape(status.reason)}", highlight=False, soft_wrap=True)
