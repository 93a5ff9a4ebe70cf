"""`medsam3-rt pacs`: pull a study over DICOMweb, segment each series, store DICOM-SEGs back."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.table import Table

from ..backends import BackendOptions
from ..errors import InputError, OutputExistsError
from ..io.volumes import AXES
from ..preprocess import parse_window
from ..tokenizer import as_prompt_list
from ..tracker.settings import StreamOptions
from .console import STATE, out_console, say


def pacs(
    model_dir: Path = typer.Argument(..., help="Export directory (from `medsam3-rt export`)."),
    url: str = typer.Argument(..., help="DICOMweb root of the PACS, e.g. http://pacs:8042/dicom-web (or dicomweb+http://...)."),
    study: str = typer.Option(..., "--study", help="StudyInstanceUID to segment."),
    prompt: list[str] = typer.Option(..., "--prompt", "-p", help="Text prompt; repeat for several structures (one segment each)."),
    series: list[str] = typer.Option([], "--series", help="Only these SeriesInstanceUIDs (repeat); default: every image series."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Also keep each SEG and a JSON record here."),
    codes: Path | None = typer.Option(None, "--codes", help="JSON/YAML file of prompt -> SNOMED CT codes (adds to the built-in map)."),
    axis: str = typer.Option("axial", "--axis", help="Slicing plane: axial, coronal or sagittal."),
    window: str | None = typer.Option(None, "--window", help="Intensity window: LOW,HIGH or a CT preset."),
    bidirectional: bool = typer.Option(False, "--bidirectional", help="Start at the most confident slice, track both ways."),
    detection_threshold: float | None = typer.Option(None, "--detection-threshold", min=0.0, max=1.0, help="Override the model's."),
    backend: str = typer.Option("auto", "--backend", "-b", help="auto, ort-cpu, ort-cuda, ort-trt, tensorrt, openvino."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="CPU threads per graph."),
    timeout: float = typer.Option(30.0, "--timeout", min=0.01, help="Seconds to wait for the PACS per request."),
    retries: int = typer.Option(2, "--retries", min=0, help="Extra attempts when the PACS answers 408/429/503/504."),
    user: str | None = typer.Option(None, "--user", help="HTTP basic auth user; the password comes from $MEDSAM3_RT_PACS_PASSWORD."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only report which series would be segmented; pull and store nothing."),
) -> None:
    """Segment a study on a PACS (DICOMweb: QIDO-RS, WADO-RS, STOW-RS); a DICOM-SEG per series goes back.

    Idempotent: a series that already has a SEG from this model and these prompts is
    skipped, so rerunning after an error finishes the study without duplicates.
    """
    from ..io.dicom_seg import SegProvenance, manifest_sha256
    from ..io.pacs import PASSWORD_ENV, Pacs, PacsConfig, StudyJob, run_study
    from ..io.seg_codes import ConceptMap
    from ..manifest import load_manifest
    from ..segmenter import load

    prompts = as_prompt_list(prompt)
    if axis not in AXES:
        raise typer.BadParameter(f"--axis must be one of {', '.join(AXES)}", param_hint="--axis")
    if output is not None and output.exists() and not output.is_dir():
        raise OutputExistsError(f"--output '{output}' exists and is not a folder")
    win = parse_window(window) if window else None
    concepts = ConceptMap.from_file(codes)
    manifest = load_manifest(model_dir, verify="size")
    settings = {"axis": axis, "window": window, "bidirectional": bidirectional, "detection_threshold": detection_threshold}
    provenance = SegProvenance(
        str(manifest.model.get("name") or model_dir.name), manifest_sha256(model_dir), {k: v for k, v in settings.items() if v is not None}
    )
    client = Pacs(PacsConfig(url, timeout_s=timeout, retries=retries, user=user, password=os.environ.get(PASSWORD_ENV)))
    job = StudyJob(
        study,
        prompts,
        provenance,
        lambda: load(model_dir, backend, options=BackendOptions(intra_op_threads=threads)),
        concepts=concepts,
        series_filter=tuple(series),
        axis=axis,
        window=win,
        bidirectional=bidirectional,
        stream_options=StreamOptions(detection_threshold=detection_threshold),
        output=output,
        dry_run=dry_run,
        progress=say,
    )
    outcomes = run_study(client, job)
    if not STATE.quiet:  # the SEG series UIDs are in the lines above and in --output's JSON records
        table = Table("series", "description", "status", "detail", title=f"medsam3-rt pacs: study {study}")
        for o in outcomes:
            if o.status == "skipped":  # SEG, SR, ... series: counted below
                continue
            detail = ", ".join(f"{p} {v:.2f} mL" for p, v in o.volumes_ml.items()) or o.message
            table.add_row(o.series_uid, o.description or o.modality, o.status, detail)
        out_console.print(table)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise InputError(f"{len(failed)} of {len(outcomes)} series not segmented; first: {failed[0].message}")
    count = {s: sum(o.status == s for o in outcomes) for s in ("stored", "exists", "skipped", "would segment")}
    skipped = f", {count['skipped']} non-image series skipped" if count["skipped"] else ""
    planned = f", {count['would segment']} to segment (--dry-run)" if dry_run else ""
    say(f"{count['stored']} SEG(s) stored, {count['exists']} already there{skipped}{planned}")
