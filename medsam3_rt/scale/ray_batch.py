"""Many studies through Ray Data: stateful actors that each load the model once.

Each study (an image, a NIfTI volume, a DICOM series folder, a video) is one row of a Ray
Dataset; `map_batches` sends rows to a pool of `StudyWorker` actors. A worker writes a study's
files with the very functions the single-process `medsam3-rt segment` uses, through the same
atomic writes, so both paths write the same bytes (the JSON's `timings_ms` measure the run and
differ between any two runs). The JSON goes last, so a study whose files are all present is
complete and `resume` skips it. A killed actor is restarted by Ray and its in-flight study is
retried (`max_restarts`/`max_task_retries`); a retried study simply rewrites its files atomically.
A study with bad input does not stop the others: its one-line error is reported at the end.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backends import BackendOptions
from ..errors import InputError, Medsam3Error, UsageError
from ..preprocess import IntensityWindow
from ..tracker.settings import StreamOptions

EXTRA = "scale"


@dataclass(frozen=True)
class StudySettings:
    """Everything a worker needs to segment a study like `medsam3-rt segment` would (picklable)."""

    model_dir: Path
    prompts: tuple[str, ...]
    output: Path
    backend: str = "auto"
    options: BackendOptions = field(default_factory=BackendOptions)
    prompt_packs: tuple[Path, ...] = ()
    min_score: float = 0.0
    window: IntensityWindow | None = None
    axis: str = "axial"
    bidirectional: bool = False
    stream_options: StreamOptions = field(default_factory=StreamOptions)
    series: str | None = None


@dataclass
class BatchReport:
    """What a Ray run did: studies written, skipped (already complete), failed (one line each), throughput."""

    written: list[str]
    skipped: list[str]
    failed: dict[str, str]
    actors: int
    seconds: float
    rows: list[tuple[str, str, str, str]]
    worker_pids: set[int]

    @property
    def studies_per_second(self) -> float:
        return len(self.written) / self.seconds if self.seconds > 0 else 0.0


def _ray() -> Any:
    from ..cli.console import import_optional

    return import_optional("ray", EXTRA, "segment --ray")


def connect(address: str | None, *, num_cpus: float | None = None) -> None:
    """Join the cluster at `address` ("auto", "ray://host:port", "host:port"), or start a local one on loopback."""
    ray = _ray()
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address in (None, "", "local"):
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a loopback-only cluster of this user
        ray.init(num_cpus=num_cpus, _node_ip_address="127.0.0.1", **kwargs)
    else:
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise UsageError(f"--ray {address}: cannot connect to a Ray cluster there ({str(e).splitlines()[0][:200]})") from None


class StudyWorker:
    """A Ray Data actor: loads the model once, then segments one study per call."""

    def __init__(self, settings: StudySettings) -> None:
        from ..segmenter import load

        self.settings = settings
        self.seg = load(settings.model_dir, settings.backend, options=settings.options, prompt_packs=settings.prompt_packs)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"stem": [], "rows": [], "error": [], "pid": [], "seconds": []}
        for kind, source, stem in zip(batch["kind"], batch["source"], batch["stem"]):
            t0 = time.perf_counter()
            rows: list[tuple[str, str, str, str]] = []
            error = ""
            try:
                rows = process_study(self.seg, self.settings, str(kind), Path(str(source)), str(stem))
            except Medsam3Error as e:
                error = e.message
            out["stem"].append(str(stem))
            out["rows"].append(json.dumps(rows))
            out["error"].append(error)
            out["pid"].append(os.getpid())
            out["seconds"].append(time.perf_counter() - t0)
        return out


def process_study(seg: Any, s: StudySettings, kind: str, source: Path, stem: str) -> list[tuple[str, str, str, str]]:
    """Segment one study and write its files, exactly as the single-process CLI does."""
    from ..cli._sequences import run_video, run_volume
    from ..cli.segment import Job, _run_image
    from ..io.atomic import remove_stale_temporaries

    paths = Job(kind, source, stem).outputs(s.output)
    for p in paths:  # a retried study: the hidden temporaries its killed worker left behind
        remove_stale_temporaries(p)
    prompts = list(s.prompts)
    if kind == "image":
        return _run_image(seg, source, prompts, paths, s.min_score, s.window)
    if kind == "volume":
        res = run_volume(
            seg,
            source,
            prompts,
            paths,
            axis=s.axis,  # type: ignore[arg-type]
            window=s.window,
            bidirectional=s.bidirectional,
            options=s.stream_options,
            series_uid=s.series,
            tick=lambda done, total: None,
        )
        return [(source.name, p, f"{res.prompt_volumes_ml[p]:.2f} mL", "-") for p in res.prompts]
    frames = run_video(seg, source, prompts, paths, window=s.window, options=s.stream_options, tick=lambda done, total: None)
    ids = {int(o) for fr in frames for o in fr.object_ids}
    return [(source.name, ", ".join(prompts), f"{len(frames)} frames", f"{len(ids)} objects")]


def run_jobs(
    jobs: Sequence[Any],
    settings: StudySettings,
    *,
    address: str | None = None,
    actors: int = 2,
    cpus_per_actor: float = 1.0,
    gpus_per_actor: float = 0.0,
    skipped: Sequence[str] = (),
    on_result: Callable[[str, int], None] | None = None,
) -> BatchReport:
    """Run planned `segment` jobs (`cli.segment.Job`) on `actors` Ray actors; results stream back as they finish."""
    if actors < 1:
        raise UsageError("--actors must be at least 1")
    connect(address, num_cpus=max(2.0, actors * cpus_per_actor) if address in (None, "", "local") else None)
    from ..cli.console import import_optional

    rd = import_optional("ray.data", EXTRA, "segment --ray")
    ctx = rd.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.verbose_stats_logs = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # no notes on disabled progress bars
    items = [{"kind": j.kind, "source": str(j.source), "stem": j.stem} for j in jobs]
    written: list[str] = []
    failed: dict[str, str] = {}
    rows: list[tuple[str, str, str, str]] = []
    pids: set[int] = set()
    t0 = time.perf_counter()
    if items:
        ds = rd.from_items(items, override_num_blocks=len(items)).map_batches(
            StudyWorker,
            batch_size=1,
            compute=rd.ActorPoolStrategy(size=min(actors, len(items))),
            num_cpus=cpus_per_actor,
            num_gpus=gpus_per_actor or None,
            fn_constructor_kwargs={"settings": settings},
            # Ray Data's actor defaults, relied upon: max_restarts=-1 (a killed actor comes back and loads the
            # model again) and max_task_retries=-1 (its in-flight study is retried); tests/scale/test_scale_ray.py kills one.
        )
        for row in ds.iter_rows():
            stem, pid = str(row["stem"]), int(row["pid"])
            pids.add(pid)
            if row["error"]:
                failed[stem] = str(row["error"])
            else:
                written.append(stem)
                rows += [tuple(r) for r in json.loads(row["rows"])]  # type: ignore[misc]
            if on_result is not None:
                on_result(stem, pid)
    return BatchReport(written, list(skipped), failed, actors, time.perf_counter() - t0, rows, pids)


def segment_studies(
    model_dir: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    prompts: Sequence[str],
    output: str | os.PathLike[str],
    *,
    address: str | None = None,
    actors: int = 2,
    cpus_per_actor: float = 1.0,
    gpus_per_actor: float = 0.0,
    resume: bool = True,
    force: bool = False,
    settings: dict[str, Any] | None = None,
    on_result: Callable[[str, int], None] | None = None,
) -> BatchReport:
    """Python API of `medsam3-rt segment --ray`: segment many studies on Ray, skipping complete ones.

    `settings` holds further `StudySettings` fields (backend, options, window, axis, ...).
    """
    from ..cli.segment import collect_inputs, plan_jobs
    from ..tokenizer import as_prompt_list

    prompt_list = as_prompt_list(list(prompts))
    out = Path(output)
    jobs = collect_inputs([Path(p) for p in inputs])
    todo = plan_jobs(jobs, out, force=force, resume=resume)
    planned = {j.stem for j, _ in todo}
    s = StudySettings(model_dir=Path(model_dir), prompts=tuple(prompt_list), output=out, **(settings or {}))
    report = run_jobs(
        [j for j, _ in todo],
        s,
        address=address,
        actors=actors,
        cpus_per_actor=cpus_per_actor,
        gpus_per_actor=gpus_per_actor,
        skipped=[j.stem for j in jobs if j.stem not in planned],
        on_result=on_result,
    )
    return report


def raise_for_failures(report: BatchReport) -> None:
    """One line for the CLI when some studies failed (the others were written)."""
    if report.failed:
        _stem, message = next(iter(report.failed.items()))
        more = f" (and {len(report.failed) - 1} more)" if len(report.failed) > 1 else ""
        raise InputError(f"{len(report.failed)} of {len(report.failed) + len(report.written)} studies failed{more}: {message}")
