"""`medsam3-rt segment`: images (and folders of them) -> label maps, overlays and JSON."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .._version import __version__
from ..errors import InputError, OutputExistsError
from ..io.atomic import atomic_path, atomic_write_text
from ..io.images import IMAGE_SUFFIXES, is_image_file, list_images, read_image, write_png
from ..manifest import INTENDED_USE
from ..overlay import draw_overlay
from ..preprocess import IntensityWindow, parse_window
from ..segmenter import Segmenter, SegmentResult, load
from ..tokenizer import as_prompt_list
from ._console import STATE, err_console, out_console, say

OUTPUT_SUFFIXES = (".mask.png", ".overlay.png", ".json")


def collect_inputs(inputs: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for p in inputs:
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise InputError(f"{p}: folder has no images ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif p.exists():
            if not is_image_file(p):
                raise InputError(f"{p}: not a supported image ({', '.join(IMAGE_SUFFIXES)})")
            files.append(p)
        else:
            raise InputError(f"{p}: no such file or folder")
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems and stems[f.stem] != f:
            raise InputError(f"{f} and {stems[f.stem]} would write the same outputs ('{f.stem}.*'); rename one")
        stems[f.stem] = f
    return list(dict.fromkeys(files))


def outputs_for(output: Path, image: Path) -> list[Path]:
    return [output / f"{image.stem}{suffix}" for suffix in OUTPUT_SUFFIXES]


def result_json(image: Path, result: SegmentResult, seg: Segmenter, timings: dict[str, float]) -> dict:
    return {
        "input": str(image),
        "image_size": list(result.label_map.shape),
        "model": seg.manifest.model.get("name"),
        "backend": seg.backend_name,
        "min_score": result.min_score,
        "prompts": [
            {
                "label": k + 1,
                "prompt": prompt,
                "score": round(float(result.scores[k]), 6),
                "box_xyxy": [round(float(v), 2) for v in result.boxes[k]],
                "area_px": int(result.areas[k]),
                "label_map_area_px": int((result.label_map == k + 1).sum()),
                "below_min_score": bool(result.scores[k] < result.min_score),
            }
            for k, prompt in enumerate(result.prompts)
        ],
        "timings_ms": {k: round(v, 3) for k, v in timings.items()},
        "producer": f"medsam3-rt {__version__}",
        "intended_use": INTENDED_USE,
    }


def write_outputs(
    image_path: Path, image: np.ndarray, result: SegmentResult, paths: list[Path], window: IntensityWindow | None, payload: dict
) -> None:
    mask_path, overlay_path, json_path = paths
    with atomic_path(mask_path) as tmp:
        write_png(tmp, result.label_map)
    with atomic_path(overlay_path) as tmp:
        labels = [f"{k + 1} {p} ({s:.2f})" for k, (p, s) in enumerate(zip(result.prompts, result.scores))]
        write_png(tmp, draw_overlay(image, result.label_map, labels, window=window))
    # The JSON goes last: its presence marks the image as complete for --resume.
    atomic_write_text(json_path, json.dumps(payload, indent=2, ensure_ascii=False))


def segment(
    model_dir: Path = typer.Argument(..., help="Export directory (from `medsam3-rt export`)."),
    inputs: list[Path] = typer.Argument(..., help="Image files (PNG/JPEG/BMP/TIFF, 8/16-bit) or folders of them."),
    prompt: list[str] = typer.Option(..., "--prompt", "-p", help="Text prompt; repeat for several structures."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder (created if missing)."),
    min_score: float = typer.Option(0.0, "--min-score", min=0.0, max=1.0, help="Empty masks whose score is below this."),
    backend: str = typer.Option("auto", "--backend", "-b", help="auto, ort-cpu, ort-cuda, ort-trt."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads per graph (default: library choice)."),
    window: str | None = typer.Option(None, "--window", help="Intensity window for 16-bit/float/CT images: LOW,HIGH or a CT preset."),
    prompt_pack: list[Path] = typer.Option([], "--prompt-pack", help="Precomputed text embeddings (`prompts pack`)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
    resume: bool = typer.Option(False, "--resume", help="Skip inputs whose outputs are already complete."),
) -> None:
    """Segment text prompts in 2D images; writes <stem>.mask.png, <stem>.overlay.png, <stem>.json per image."""
    prompts = as_prompt_list(prompt)  # validate before touching anything
    files = collect_inputs(inputs)
    win = parse_window(window) if window else None
    if output.exists() and not output.is_dir():
        raise OutputExistsError(f"--output '{output}' exists and is not a folder")
    todo = []
    for f in files:
        paths = outputs_for(output, f)
        done = [p for p in paths if p.exists()]
        if done and not force:
            if resume and len(done) == len(paths):
                continue
            if not resume:
                raise OutputExistsError(f"{done[0]} exists; pass --force to overwrite or --resume to skip finished inputs")
        todo.append((f, paths))
    if not todo:
        say(f"nothing to do: all {len(files)} inputs already have outputs in {output}")
        return
    seg = load(model_dir, backend, threads=threads, prompt_packs=prompt_pack)
    rows: list[tuple[str, str, float, int]] = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=STATE.quiet or len(todo) < 2,
        transient=True,
    ) as bar:
        task = bar.add_task("segmenting", total=len(todo))
        for f, paths in todo:
            t0 = time.perf_counter()
            image = read_image(f)
            t_read = (time.perf_counter() - t0) * 1e3
            result = seg.segment(image, prompts, min_score=min_score, window=win)
            timings = {"read": t_read, **result.timings_ms}
            t1 = time.perf_counter()
            payload = result_json(f, result, seg, timings)
            write_outputs(f, image, result, paths, win, payload)
            timings["write"] = (time.perf_counter() - t1) * 1e3
            rows += [(f.name, p, float(s), int(a)) for p, s, a in zip(result.prompts, result.scores, result.areas)]
            bar.advance(task)
    seg.close()
    if STATE.quiet:
        return
    if len(rows) <= 24:
        table = Table("image", "prompt", "score", "area px", title=f"medsam3-rt segment ({seg.backend_name})")
        for name, p, s, a in rows:
            table.add_row(name, p, f"{s:.3f}", str(a))
        out_console.print(table)
    say(f"wrote {3 * len(todo)} files for {len(todo)} image(s) to {output}")
