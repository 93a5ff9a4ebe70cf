"""`medsam3-rt segment`: images, volumes and videos -> label maps, overlays and JSON."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from .._version import __version__
from ..backends import BackendOptions
from ..errors import InputError, OutputExistsError, UsageError
from ..io.atomic import atomic_path, atomic_write_text, remove_stale_temporaries
from ..io.images import IMAGE_SUFFIXES, is_image_file, list_images, read_image, write_png
from ..io.video import VIDEO_SUFFIXES, is_video_file
from ..io.volumes import AXES, is_nifti
from ..manifest import INTENDED_USE
from ..overlay import draw_overlay
from ..preprocess import IntensityWindow, parse_window
from ..segmenter import Segmenter, SegmentResult, load
from ..tokenizer import as_prompt_list
from ..tracker.settings import MODES, StreamOptions
from ._sequences import DICOM_SEG_OUTPUTS, VIDEO_OUTPUTS, VOLUME_OUTPUTS, run_video, run_volume
from .console import STATE, err_console, out_console, say

OUTPUT_SUFFIXES = (".mask.png", ".overlay.png", ".json")


@dataclass(frozen=True)
class Job:
    """One input and the outputs it writes."""

    kind: str  # "image" | "volume" | "video"
    source: Path
    stem: str
    fmt: str = "nifti"  # volumes: "nifti" | "dicom-seg"

    @property
    def suffixes(self) -> tuple[str, ...]:
        if self.kind == "volume" and self.fmt == "dicom-seg":
            return DICOM_SEG_OUTPUTS
        return {"image": OUTPUT_SUFFIXES, "volume": VOLUME_OUTPUTS, "video": VIDEO_OUTPUTS}[self.kind]

    def outputs(self, output: Path) -> list[Path]:
        return [output / f"{self.stem}{suffix}" for suffix in self.suffixes]


def _is_dicom_folder(folder: Path) -> bool:
    for f in sorted(folder.rglob("*"))[:2000]:
        try:
            if f.is_file() and f.stat().st_size > 132:
                with open(f, "rb") as fh:
                    fh.seek(128)
                    if fh.read(4) == b"DICM":
                        return True
        except OSError:  # unreadable entries are not DICOM evidence
            continue
    return False


def collect_inputs(inputs: Sequence[Path], *, as_sequence: bool = False) -> list[Job]:
    """Classify inputs: 2D images, NIfTI volumes, DICOM series folders, videos, image sequences."""
    jobs: list[Job] = []
    for p in inputs:
        if p.is_dir():
            if _is_dicom_folder(p):
                jobs.append(Job("volume", p, p.name))
                continue
            found = list_images(p)
            if not found:
                raise InputError(f"{p}: folder has no images ({', '.join(IMAGE_SUFFIXES)}) and no DICOM files")
            jobs += [Job("video", p, p.name)] if as_sequence else [Job("image", f, f.stem) for f in found]
        elif p.exists():
            name = p.name.lower()
            if is_nifti(p):
                jobs.append(Job("volume", p, p.name[: -len(".nii.gz")] if name.endswith(".nii.gz") else p.stem))
            elif is_video_file(p):
                jobs.append(Job("video", p, p.stem))
            elif is_image_file(p):
                jobs.append(Job("image", p, p.stem))
            else:
                raise InputError(
                    f"{p}: not a supported input (images {', '.join(IMAGE_SUFFIXES)}; volumes .nii/.nii.gz or a DICOM "
                    f"folder; videos {', '.join(VIDEO_SUFFIXES)})"
                )
        else:
            raise InputError(f"{p}: no such file or folder")
    stems: dict[str, Path] = {}
    for j in jobs:
        if j.stem in stems and stems[j.stem] != j.source:
            raise InputError(f"{j.source} and {stems[j.stem]} would write the same outputs ('{j.stem}.*'); rename one")
        stems[j.stem] = j.source
    return list({j.source: j for j in jobs}.values())


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
    inputs: list[Path] = typer.Argument(
        ..., help="Images (PNG/JPEG/BMP/TIFF, 8/16-bit), folders of them, NIfTI volumes, DICOM series folders, videos."
    ),
    prompt: list[str] = typer.Option(..., "--prompt", "-p", help="Text prompt; repeat for several structures."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder (created if missing)."),
    min_score: float = typer.Option(0.0, "--min-score", min=0.0, max=1.0, help="2D: empty masks whose score is below this."),
    backend: str = typer.Option("auto", "--backend", "-b", help="auto, ort-cpu, ort-cuda, ort-trt, tensorrt, openvino, torch."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads per graph (default: library choice)."),
    gpu_mem_limit: str | None = typer.Option(
        None, "--gpu-mem-limit", help="ort-cuda: cap of its memory arena; ort-trt: TensorRT workspace. Bytes, or e.g. 4G, 512M."
    ),
    window: str | None = typer.Option(None, "--window", help="Intensity window for 16-bit/float/CT data: LOW,HIGH or a CT preset."),
    prompt_pack: list[Path] = typer.Option([], "--prompt-pack", help="Precomputed text embeddings (`prompts pack`)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
    resume: bool = typer.Option(False, "--resume", help="Skip inputs whose outputs are already complete."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="--backend torch: the checkpoint the export was made from."),
    axis: str = typer.Option("axial", "--axis", help="Volumes: slicing plane, axial, coronal or sagittal."),
    bidirectional: bool = typer.Option(False, "--bidirectional", help="Volumes: start at the most confident slice, track both ways."),
    series: str | None = typer.Option(None, "--series", help="DICOM: the SeriesInstanceUID to use when a folder holds several."),
    as_sequence: bool = typer.Option(False, "--as-sequence", help="Treat each folder of images as one video (frames in name order)."),
    detection_threshold: float | None = typer.Option(
        None, "--detection-threshold", min=0.0, max=1.0, help="Volumes/video: override the model's detection threshold."
    ),
    new_object_threshold: float | None = typer.Option(
        None, "--new-object-threshold", min=0.0, max=1.0, help="Volumes/video: score for a detection to start a new object."
    ),
    forget_after: int | None = typer.Option(None, "--forget-after", min=1, help="Volumes/video: drop objects empty this many frames."),
    detect_every: int = typer.Option(
        1, "--detect-every", min=1, help="Volumes/video: run the detector on every k-th frame; the tracker alone in between."
    ),
    track_policy: str = typer.Option(
        "meta",
        "--track-policy",
        help="Volumes/video: 'meta' (SAM3's own track management, at most --max-objects) or 'transformers' (no removal).",
    ),
    max_objects: int | None = typer.Option(
        None, "--max-objects", min=1, help="Volumes/video: objects tracked at once (default 16; 'transformers': the model's)."
    ),
    no_nms: bool = typer.Option(False, "--no-nms", help="Volumes/video: no detection NMS (as transformers without hub kernels)."),
    no_fill_holes: bool = typer.Option(False, "--no-fill-holes", help="Volumes/video: no hole filling / sprinkle removal."),
    ray: str | None = typer.Option(
        None, "--ray", metavar="ADDRESS", help="Run on Ray actors: 'local' (a local cluster) or a cluster address ('scale' extra)."
    ),
    actors: int = typer.Option(2, "--actors", min=1, help="--ray: actors, each loading the model once (1 CPU each)."),
    batch_size: int = typer.Option(
        1,
        "--batch-size",
        min=1,
        help="Images and volume slices: this many per backbone call (exports made with --batch-axis; else one by one).",
    ),
    fmt: str = typer.Option("nifti", "--format", help="Volume labels: nifti, or dicom-seg (DICOM series input; the 'dicom' extra)."),
    codes: Path | None = typer.Option(None, "--codes", help="--format dicom-seg: JSON/YAML file of prompt -> SNOMED CT codes."),
) -> None:
    """Segment text prompts in images, volumes and videos.

    Images: <stem>.mask.png, <stem>.overlay.png, <stem>.json. Volumes (NIfTI, DICOM series):
    <stem>.labels.nii.gz on the input grid, <stem>.overlay.png, <stem>.json with volumes in mL.
    Videos and --as-sequence folders: <stem>.overlay.mp4, <stem>.labels.npz, <stem>.json per frame.
    """
    prompts = as_prompt_list(prompt)  # validate before touching anything
    if axis not in AXES:
        raise typer.BadParameter(f"--axis must be one of {', '.join(AXES)}", param_hint="--axis")
    jobs = collect_inputs(inputs, as_sequence=as_sequence)
    win = parse_window(window) if window else None
    seg_output = None
    if fmt != "nifti":
        from ..io.dicom_seg import dicom_seg_output

        seg_output = dicom_seg_output(fmt, jobs, model_dir, codes, axis=axis, window=window, bidirectional=bidirectional, series=series)
        jobs = [replace(j, fmt=fmt) for j in jobs]
    if track_policy not in MODES:
        raise typer.BadParameter(f"--track-policy must be one of {', '.join(MODES)}", param_hint="--track-policy")
    stream_options = StreamOptions(
        policy=track_policy,  # type: ignore[arg-type]
        max_objects=max_objects,
        nms=not no_nms,
        fill_holes=not no_fill_holes,
        forget_after=forget_after,
        detection_threshold=detection_threshold,
        new_object_threshold=new_object_threshold,
        detect_every=detect_every,
    )
    if output.exists() and not output.is_dir():
        raise OutputExistsError(f"--output '{output}' exists and is not a folder")
    todo = plan_jobs(jobs, output, force=force, resume=resume)
    if not todo:
        say(f"nothing to do: all {len(jobs)} inputs already have outputs in {output}")
        return
    options = BackendOptions(intra_op_threads=threads, checkpoint=checkpoint, gpu_mem_limit_bytes=parse_bytes(gpu_mem_limit))
    if ray is not None:  # the same jobs on a Ray cluster (medsam3_rt.scale)
        from ..scale.cli import segment_on_ray

        settings = dict(backend=backend, options=options, prompt_packs=tuple(prompt_pack), min_score=min_score, window=win)
        settings |= dict(axis=axis, bidirectional=bidirectional, stream_options=stream_options, series=series)
        segment_on_ray(model_dir, jobs, todo, prompts, output, ray, actors, settings)
        return
    seg = load(model_dir, backend, options=options, prompt_packs=prompt_pack)
    rows: list[tuple[str, str, str, str]] = []
    images = sum(1 for j, _ in todo if j.kind == "image")
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=STATE.quiet or not err_console.is_terminal,  # no bars in logs and pipes
        transient=True,
    ) as bar:
        task = bar.add_task("images", total=images, visible=images > 1)
        pending: list[tuple[Job, list[Path]]] = []  # images waiting to share a backbone call

        def flush() -> None:
            if pending:
                rows.extend(_run_images(seg, pending, prompts, min_score, win))
                bar.advance(task, len(pending))
                pending.clear()

        for job, paths in todo:
            if job.kind == "image":
                pending.append((job, paths))
                if len(pending) >= batch_size:
                    flush()
                continue
            flush()
            sub = bar.add_task(f"{job.source.name}", total=None)

            def tick(done: int, total: int, sub: TaskID = sub) -> None:
                bar.update(sub, completed=done, total=total)

            if job.kind == "volume":
                res = run_volume(
                    seg,
                    job.source,
                    prompts,
                    paths,
                    axis=axis,
                    window=win,
                    bidirectional=bidirectional,  # type: ignore[arg-type]
                    options=stream_options,
                    series_uid=series,
                    tick=tick,
                    seg_output=seg_output,
                    batch_size=batch_size,
                )
                rows += [(job.source.name, p, f"{res.prompt_volumes_ml[p]:.2f} mL", "-") for p in res.prompts]
            else:
                frames = run_video(seg, job.source, prompts, paths, window=win, options=stream_options, tick=tick)
                ids = {int(o) for fr in frames for o in fr.object_ids}
                rows.append((job.source.name, ", ".join(prompts), f"{len(frames)} frames", f"{len(ids)} objects"))
            bar.remove_task(sub)
        flush()
    seg.close()
    if STATE.quiet:
        return
    if len(rows) <= 24:
        table = Table("input", "prompt", "score / volume", "area px", title=f"medsam3-rt segment ({seg.backend_name})")
        for row in rows:
            table.add_row(*row)
        out_console.print(table)
    files = sum(len(p) for _, p in todo)
    say(f"wrote {files} files for {len(todo)} input(s) to {output}")


def plan_jobs(jobs: Sequence[Job], output: Path, *, force: bool, resume: bool) -> list[tuple[Job, list[Path]]]:
    """The jobs still to run with their output paths: complete ones are skipped under --resume."""
    todo = []
    for job in jobs:
        paths = job.outputs(output)
        for p in paths:  # hidden temporaries of a run that was killed mid-write
            remove_stale_temporaries(p)
        done = [p for p in paths if p.exists()]
        if done and not force:
            if resume and len(done) == len(paths):
                continue
            if not resume:
                raise OutputExistsError(f"{done[0]} exists; pass --force to overwrite or --resume to skip finished inputs")
        todo.append((job, paths))
    return todo


def parse_bytes(text: str | None) -> int | None:
    """'4G', '512M', '64k' or a plain number of bytes (binary units)."""
    if text is None:
        return None
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = value[-1:] if value[-1:] in units and value[-1:] else ""
    try:
        amount = float(value[: len(value) - len(unit)])
    except ValueError:
        amount = -1.0
    if not amount > 0 or amount * units[unit] >= 1 << 62:
        raise UsageError(f"--gpu-mem-limit '{text}' is not a size; give bytes or a number with K, M, G or T (e.g. 4G)")
    return int(amount * units[unit])


def _run_images(
    seg: Segmenter, batch: list[tuple[Job, list[Path]]], prompts: list[str], min_score: float, window: IntensityWindow | None
) -> list[tuple[str, str, str, str]]:
    """Several image jobs through `Segmenter.segment_batch`; the same outputs as one `_run_image` each."""
    if len(batch) == 1:
        job, paths = batch[0]
        return _run_image(seg, job.source, prompts, paths, min_score, window)
    t0 = time.perf_counter()
    images = [read_image(job.source) for job, _ in batch]
    t_read = (time.perf_counter() - t0) * 1e3 / len(batch)
    try:
        results = seg.segment_batch(images, prompts, batch_size=len(batch), min_score=min_score, window=window)
    except InputError:  # name the file: run them one by one, the failing one raises with its path
        return [row for job, paths in batch for row in _run_image(seg, job.source, prompts, paths, min_score, window)]
    rows = []
    for (job, paths), image, result in zip(batch, images, results, strict=True):
        path = job.source
        timings = {"read": t_read, **result.timings_ms}
        write_outputs(path, image, result, paths, window, result_json(path, result, seg, timings))
        rows += [(path.name, p, f"{s:.3f}", str(int(a))) for p, s, a in zip(result.prompts, result.scores, result.areas, strict=True)]
    return rows


def _run_image(
    seg: Segmenter, path: Path, prompts: list[str], paths: list[Path], min_score: float, window: IntensityWindow | None
) -> list[tuple[str, str, str, str]]:
    t0 = time.perf_counter()
    image = read_image(path)
    t_read = (time.perf_counter() - t0) * 1e3
    try:
        result = seg.segment(image, prompts, min_score=min_score, window=window)
    except InputError as e:  # array rules (size, NaN) do not know the file name
        raise InputError(e.message if str(path) in e.message else f"{path}: {e.message}") from None
    timings = {"read": t_read, **result.timings_ms}
    write_outputs(path, image, result, paths, window, result_json(path, result, seg, timings))
    return [(path.name, p, f"{s:.3f}", str(int(a))) for p, s, a in zip(result.prompts, result.scores, result.areas, strict=True)]
