"""`medsam3-rt bench`: per-stage latency, throughput and memory of candidates side by side.

One process runs every candidate on the same synthetic inputs:

- the transformers baseline (eager fp32 `Sam3Model` for images, `Sam3VideoModel` streaming for
  slices), registered by `medsam3_export` in the `medsam3_bench.candidates` entry-point group and
  loaded only when asked for; this package never imports torch;
- each requested backend of medsam3-rt (ort-cpu, openvino, torch, GPU backends).

Rounds are interleaved (candidate A, B, C, then A, B, C, ...), so load from other processes on
a shared machine hits every candidate alike; ratios are medians of per-round ratios. Stages:

  image (2D):  io, preprocess, text (cache hit), backbone, detector, postprocess; and on a
               prompt-cache miss tokenize + text_encoder instead of the cache lookup
  stream:      io, preprocess, backbone, detector, tracker, merge_memory, postprocess

`io` is reading the input PNG and writing the label-map PNG (the same code for everyone).
The result is a JSON document (schema `medsam3_bench/schemas/bench.v2.json`, described in
benchmarks/README.md), a markdown summary and optional PNG plots (matplotlib): see `report`.
"""

from __future__ import annotations

import datetime as _dt
import gc as _gc
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsam3_rt._version import __version__
from medsam3_rt.backends import BackendOptions
from medsam3_rt.errors import MissingDependencyError, UsageError
from medsam3_rt.io.images import read_image, write_png
from medsam3_rt.manifest import Manifest, load_manifest
from medsam3_rt.profiling import machine_info, median_ratio, rss_bytes, summarize

from .candidates import BASELINE_NAME, Candidate, ImageOutput, RuntimeCandidate, StreamHandle, StreamPolicy, expand_backends, load_baseline
from .flops import STAGE_OF_GRAPH, GraphFlops, image_graph_flops
from .memory import StageMemory
from .peak import measure_gemm_peak, measure_int8_gemm_peak
from .schema import CURVE_LENGTHS, IMAGE_STAGES, SCHEMA_ID, STREAM_STAGES, TEXT_MISS_STAGES

log = logging.getLogger("medsam3_bench")

Progress = Callable[[str], None]


# -- inputs ----------------------------------------------------------------------------------
def synthetic_slice(index: int, hw: tuple[int, int] = (512, 512), seed: int = 0) -> np.ndarray:
    """Slice `index` of a deterministic CT-like uint8 volume: smooth body, two moving organs, noise.

    Neighbouring slices differ a little (the organs drift and change size), like a real volume;
    any slice can be made without the others, so long volumes cost no memory.
    """
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    body = ((yy - h / 2) / (0.45 * h)) ** 2 + ((xx - w / 2) / (0.47 * w)) ** 2 < 1
    img = np.where(body, 90 + 25 * np.sin(yy / h * 5 + index / 40) + 15 * (xx / w), 10).astype(np.float32)
    t = index / 25.0
    for cy, cx, r, v, ph in ((0.42, 0.36, 0.16, 200.0, 0.0), (0.58, 0.66, 0.09, 150.0, 1.7)):
        yc, xc = h * (cy + 0.05 * np.sin(t + ph)), w * (cx + 0.05 * np.cos(0.7 * t + ph))
        rr = r * min(h, w) * (0.85 + 0.25 * np.sin(0.5 * t + ph))
        img = np.where((yy - yc) ** 2 + (xx - xc) ** 2 < rr * rr, v, img)
    noise = np.random.default_rng(seed * 1_000_003 + index).normal(0, 4, (h, w))
    return np.clip(img + noise, 0, 255).astype(np.uint8)


# -- configuration --------------------------------------------------------------------------
@dataclass
class Variant:
    """Another export of the same model (int8, another input size) or another stream setting, measured in the same run.

    Levers are compared against the transformers baseline and the main export side by side,
    interleaved round by round, so their ratios share the machine's load.
    """

    name: str
    model_dir: Path
    backend: str = "ort-cpu"
    detect_every: int = 1


@dataclass(frozen=True)
class BenchConfig:
    model_dir: Path
    backends: tuple[str, ...] = ("ort-cpu",)
    baseline: str = "auto"  # auto | on | off
    baseline_device: str = "auto"  # auto (the GPU when torch sees one) | cpu | cuda | cuda:N
    prompts: tuple[str, ...] = ("liver", "left kidney")
    rounds: int = 5  # measured 2D rounds
    frames: int = 8  # measured streaming slices
    warmup: int = 1  # unmeasured 2D rounds / leading streaming slices
    threads: int | None = None  # CPU threads per candidate (None: every usable core)
    image_hw: tuple[int, int] = (512, 512)
    image: bool = True
    stream: bool | None = None  # None: when the export has tracker graphs
    flops: bool = True  # count the 2D graphs' FLOPs and time the GEMM peak (achieved GFLOP/s per stage)
    tracker_rounds: int = 5
    curve_slices: int = 0  # streaming cost curve (0: skip)
    curve_backends: tuple[str, ...] = ()  # default: the first medsam3-rt backend
    curve_baseline_slices: int = 0
    max_objects: int = 2
    detection_threshold: float | None = None  # None: the model's, or calibrated for random weights
    checkpoint: Path | None = None  # baseline / torch backend: the checkpoint the export came from
    settle_s: float = 0.05  # pause before each timed call so one runtime's spinning threads do not slow the next
    seed: int = 0
    variants: tuple[Variant, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def _usable_cpus() -> int:
    try:
        import os

        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        import os

        return os.cpu_count() or 1


# -- measuring ------------------------------------------------------------------------------
class _Entry:
    """Everything measured for one candidate."""

    def __init__(self, cand: Candidate) -> None:
        self.cand = cand
        self.error: str | None = None
        self.cold: dict[str, float] = {}
        self.mem: dict[str, int | None] = {}
        self.image_stages: dict[str, list[float]] = {}
        self.image_e2e: list[float] = []
        self.image_cpu: list[float] = []
        self.text_miss: dict[str, list[float]] = {}
        self.image_out: list[ImageOutput] = []
        self.stream_stages: dict[str, list[float]] = {}
        self.stream_e2e: list[float] = []
        self.stream_cpu: list[float] = []
        self.stream_first: float | None = None
        self.stream_objects: list[int] = []
        self.stream_labels: list[np.ndarray] = []
        self.tracker: list[float] = []
        self.tracker_shape: dict[str, int] = {}
        self.handle: StreamHandle | None = None
        self.peak_rss = 0  # over the RSS at the start of each measured call
        self.peak_abs = 0  # the process RSS itself

    def add(self, table: dict[str, list[float]], ms: dict[str, float]) -> None:
        for k, v in ms.items():
            table.setdefault(k, []).append(v)


def _settle(cfg: BenchConfig) -> None:
    if cfg.settle_s > 0:
        time.sleep(cfg.settle_s)


def _io(path: Path, out_dir: Path, label: np.ndarray | None) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    image = read_image(path)
    ms = (time.perf_counter() - t0) * 1e3
    if label is not None:
        t0 = time.perf_counter()
        write_png(out_dir / f"{path.stem}.mask.png", label)
        ms += (time.perf_counter() - t0) * 1e3
    return ms, image


def _label_map(masks: np.ndarray) -> np.ndarray:
    if len(masks) == 0:
        return np.zeros((0, 0), np.uint8)
    return np.where(masks.any(axis=0), np.argmax(masks, axis=0) + 1, 0).astype(np.uint8)


def _label_iou(a: np.ndarray, b: np.ndarray, labels: int) -> float:
    """Mean IoU over labels 1..labels present in either map (1.0 where both are empty)."""
    scores = []
    for k in range(1, labels + 1):
        x, y = a == k, b == k
        union = np.logical_or(x, y).sum()
        if union:
            scores.append(float(np.logical_and(x, y).sum() / union))
    return float(np.mean(scores)) if scores else 1.0


def _calibrate(cfg: BenchConfig, manifest: Manifest, reference: Candidate, frame: np.ndarray) -> StreamPolicy:
    tracker = manifest.tracker or {}
    source = (manifest.model.get("source") or {}).get("format")
    if cfg.detection_threshold is not None:
        det = new = float(cfg.detection_threshold)
        how = "given"
    elif source == "random":
        # Random weights score every query about alike, below the model's thresholds: set the
        # threshold just under the weakest prompt's best score on the first slice, so every
        # prompt starts an object and the tracker and memory run on every later slice.
        probs = reference.detection_probs(frame, cfg.prompts)
        det = new = float(np.min(probs.max(axis=1))) - 1e-4
        how = f"calibrated on slice 0 with {reference.name} (random weights)"
    else:
        det, new = float(tracker.get("score_threshold_detection", 0.5)), float(tracker.get("new_det_thresh", 0.7))
        how = "model"
    return StreamPolicy(det, new, cfg.max_objects, thresholds_from=how)


def _timed_load(entry: _Entry) -> None:
    before = rss_bytes()
    t0 = time.perf_counter()
    entry.cand.load()
    entry.cold["load"] = (time.perf_counter() - t0) * 1e3
    entry.mem["load_rss_delta_bytes"] = rss_bytes() - before


def _image_round(cfg: BenchConfig, e: _Entry, prompts: list[str], path: Path, out_dir: Path, measured: bool) -> None:
    _settle(cfg)
    miss = e.cand.text_miss(prompts)
    _settle(cfg)
    c0, t0 = time.process_time(), time.perf_counter()
    io_in, image = _io(path, out_dir, None)
    ms, out = e.cand.segment(image, prompts)
    t_io = time.perf_counter()
    write_png(out_dir / f"{e.cand.name}-{path.stem}.mask.png", _label_map(out.masks))
    io_w = (time.perf_counter() - t_io) * 1e3
    total = (time.perf_counter() - t0) * 1e3
    cpu = (time.process_time() - c0) * 1e3
    if measured:
        e.image_cpu.append(cpu)
        e.add(e.text_miss, miss)
        e.add(e.image_stages, {**ms, "io": io_in + io_w})
        e.image_e2e.append(total)
        e.image_out.append(out)


def _open_stream(e: _Entry, prompts: list[str], hw: tuple[int, int], policy: StreamPolicy) -> None:
    e.handle = e.cand.stream(prompts, hw, policy)


def _stream_slice(cfg: BenchConfig, e: _Entry, i: int, path: Path, out_dir: Path, measured: bool) -> None:
    assert e.handle is not None
    _settle(cfg)
    c0, t0 = time.process_time(), time.perf_counter()
    io_in, image = _io(path, out_dir, None)
    ms, out = e.handle.push(image)
    t_io = time.perf_counter()
    write_png(out_dir / f"{e.cand.name}-{path.stem}.label.png", out.label_map)
    io_w = (time.perf_counter() - t_io) * 1e3
    total = (time.perf_counter() - t0) * 1e3
    cpu = (time.process_time() - c0) * 1e3
    if i == 0:
        e.stream_first = total
    e.stream_objects.append(out.objects)
    e.stream_labels.append(out.label_map)
    if measured:
        e.add(e.stream_stages, {**ms, "io": io_in + io_w})
        e.stream_e2e.append(total)
        e.stream_cpu.append(cpu)


def _tracker_round(cfg: BenchConfig, e: _Entry) -> None:
    assert e.handle is not None
    _settle(cfg)
    got = e.handle.tracker_step()
    if got is not None:
        e.tracker.append(got[0])
        e.tracker_shape = got[1] or e.tracker_shape


def run_benchmark(cfg: BenchConfig, progress: Progress | None = None) -> dict[str, Any]:
    """Measure every candidate of `cfg`; returns the JSON-ready result (see SCHEMA_FILE)."""
    say = progress or (lambda msg: log.info(msg))
    manifest = load_manifest(cfg.model_dir, verify="size")
    threads = cfg.threads or _usable_cpus()
    options = BackendOptions(intra_op_threads=threads, checkpoint=cfg.checkpoint)
    do_stream = manifest.has_tracker if cfg.stream is None else cfg.stream
    if do_stream and not manifest.has_tracker:
        raise UsageError("this export has no tracker graphs: streaming cannot be measured (drop --stream)")
    machine = machine_info()
    prompts = list(cfg.prompts)

    candidates: list[Candidate] = []
    notes: list[str] = []
    if cfg.baseline in ("auto", "on"):
        try:
            candidates.append(
                load_baseline(
                    BASELINE_NAME, cfg.model_dir, manifest, checkpoint=cfg.checkpoint, threads=threads, device=cfg.baseline_device
                )
            )
        except (MissingDependencyError, UsageError) as e:  # auto: measure without it and say why
            if cfg.baseline == "on":
                raise
            notes.append(f"baseline skipped: {e.message}")
    backends = expand_backends(cfg.backends, manifest)
    for name in backends:
        candidates.append(RuntimeCandidate(cfg.model_dir, name, options))
    candidates += _variant_candidates(cfg, backends, do_stream, options)
    if not candidates:
        raise UsageError("nothing to measure: no backend and no baseline")

    work = Path(tempfile.mkdtemp(prefix="medsam3-bench-"))
    n_slices = max(cfg.warmup + cfg.frames, cfg.warmup + cfg.rounds, 1)
    inputs = []
    for i in range(n_slices):
        p = work / f"slice{i:04d}.png"
        write_png(p, synthetic_slice(i, cfg.image_hw, cfg.seed))
        inputs.append(p)
    out_dir = work / "out"
    out_dir.mkdir()

    graph_flops: dict[str, GraphFlops] = {}
    peaks: list[float] = []
    int8_peaks: list[float] = []
    if cfg.flops:
        say("counting graph FLOPs and timing the fp32 and int8 GEMM peaks")
        try:
            graph_flops = image_graph_flops(cfg.model_dir, manifest, len(prompts))
        except Exception as ex:  # a graph ONNX Runtime cannot profile here: reported, not fatal
            notes.append(f"graph FLOPs not counted: {type(ex).__name__}: {str(ex).splitlines()[0]}")
        peaks.append(measure_gemm_peak())
        int8_peaks.append(measure_int8_gemm_peak(threads=threads))

    entries = [_Entry(c) for c in candidates]
    sampler = StageMemory()
    for c in candidates:
        c.memory = sampler  # stopwatch laps record peak RSS per stage
    # cold start: load + first image (cache miss), one candidate after the other
    for e in entries:
        say(f"{e.cand.name}: loading")
        sampler.start()
        try:
            _timed_load(e)
            sampler.record(e.cand.name, "load", sampler.lap())
            io_ms, image = _io(inputs[0], out_dir, None)
            t0 = time.perf_counter()
            e.cand.text_miss(prompts)
            e.cand.segment(image, prompts)
            e.cold["first_image"] = (time.perf_counter() - t0) * 1e3 + io_ms
            e.cold["total"] = e.cold["load"] + e.cold["first_image"]
        except Exception as ex:  # a backend that cannot run here is reported, not fatal
            e.error = f"{type(ex).__name__}: {ex}"
            log.debug("candidate failed", exc_info=True)
            say(f"{e.cand.name}: skipped ({e.error.splitlines()[0]})")
        e.peak_rss = max(e.peak_rss, sampler.stop() - sampler.start_bytes)
        e.peak_abs = max(e.peak_abs, sampler.peak)
    live = [e for e in entries if e.error is None]
    if not live:
        raise UsageError("no candidate could run: " + "; ".join(f"{e.cand.name}: {e.error}" for e in entries))

    def guarded(e: _Entry, fn: Callable[..., None], *args: Any) -> None:
        """Run one measured call; a candidate that fails is reported and dropped, never fatal."""
        if e.error is not None:
            return
        sampler.start()
        try:
            fn(*args)
        except Exception as ex:
            e.error = f"{type(ex).__name__}: {ex}"
            log.debug("candidate failed", exc_info=True)
            say(f"{e.cand.name}: failed ({e.error.splitlines()[0]})")
        finally:
            phase = _PHASES.get(fn.__name__)
            if phase is not None:  # stages without their own stopwatch laps (a stream slice, a tracker step)
                sampler.record(e.cand.name, phase, sampler.lap())
            e.peak_rss = max(e.peak_rss, sampler.stop() - sampler.start_bytes)
            e.peak_abs = max(e.peak_abs, sampler.peak)

    # images: interleaved rounds
    if cfg.image:
        for r in range(cfg.warmup + cfg.rounds):
            measured = r >= cfg.warmup
            say(f"image round {r + 1}/{cfg.warmup + cfg.rounds}{'' if measured else ' (warm-up)'}")
            for e in live:
                guarded(e, _image_round, cfg, e, prompts, inputs[r % len(inputs)], out_dir, measured)

    # streaming: one stream per candidate, slices interleaved
    policy = None
    if do_stream:
        policy = _calibrate(cfg, manifest, live[0].cand, read_image(inputs[0]))
        say(f"streaming: thresholds {policy.detection_threshold:.4f} ({policy.thresholds_from}), at most {policy.max_objects} objects")
        for e in live:
            guarded(e, _open_stream, e, prompts, cfg.image_hw, policy)
        for i in range(cfg.warmup + cfg.frames):
            measured = i >= cfg.warmup
            say(f"slice {i + 1}/{cfg.warmup + cfg.frames}{'' if measured else ' (warm-up)'}")
            for e in live:
                guarded(e, _stream_slice, cfg, e, i, inputs[i], out_dir, measured)
        # the tracker step alone, on the memory each stream has built
        for _ in range(cfg.tracker_rounds):
            for e in live:
                guarded(e, _tracker_round, cfg, e)
        for e in live:
            if e.handle is not None:
                e.handle.close()
                e.handle = None

    gpu = {e.cand.name: e.cand.gpu_memory_bytes() for e in live}
    curve = None
    if cfg.curve_slices > 0 and do_stream and policy is not None:
        curve = _curve(cfg, live, policy, say)

    if cfg.flops:
        peaks.append(measure_gemm_peak())  # again after the candidates: the peak under the run's conditions
        int8_peaks.append(measure_int8_gemm_peak(threads=threads))
    result = _assemble(cfg, manifest, machine, entries, threads, policy, gpu, curve, notes, backends, sampler.stage_peaks)
    if cfg.flops:
        _add_compute(result, entries, graph_flops, peaks, int8_peaks)
    for e in entries:
        e.cand.close()
    _gc.collect()
    return result


def _variant_candidates(cfg: BenchConfig, backends: Sequence[str], do_stream: bool, options: BackendOptions) -> list[Candidate]:
    """One candidate per variant; names must not clash with a backend's or the baseline's."""
    taken = {BASELINE_NAME, *backends}
    out: list[Candidate] = []
    for v in cfg.variants:
        if v.name in taken:
            raise UsageError(f"variant name {v.name!r} is used twice (or by a backend / the baseline): give each variant its own name")
        taken.add(v.name)
        if v.detect_every < 1:
            raise UsageError(f"variant {v.name!r}: detect_every must be >= 1, got {v.detect_every}")
        m = load_manifest(v.model_dir, verify="size")
        if do_stream and not m.has_tracker:
            raise UsageError(f"variant {v.name!r}: {v.model_dir} has no tracker graphs, so it cannot stream (use --no-stream)")
        out.append(RuntimeCandidate(v.model_dir, v.backend, options, name=v.name, detect_every=v.detect_every))
    return out


def _curve(cfg: BenchConfig, live: list[_Entry], policy: StreamPolicy, say: Progress) -> dict[str, Any]:
    """Per-slice latency and memory over a long stream, one candidate at a time (not interleaved)."""
    names = list(cfg.curve_backends) or [next((e.cand.name for e in live if e.cand.kind == "medsam3-rt"), live[0].cand.name)]
    runs: dict[str, Any] = {}
    prompts = list(cfg.prompts)
    plan = [(n, cfg.curve_slices) for n in names]
    base = next((e for e in live if e.cand.kind == "baseline"), None)
    if base is not None and cfg.curve_baseline_slices > 0 and base.cand.name not in names:
        plan.append((base.cand.name, cfg.curve_baseline_slices))
    by_name = {e.cand.name: e for e in live}
    for name, n in plan:
        e = by_name.get(name)
        if e is None or e.error is not None:
            continue
        handle = e.cand.stream(prompts, cfg.image_hw, policy)
        lat, rss, state, objects = [], [], [], []
        _gc.collect()
        rss0 = rss_bytes()
        for i in range(n):
            if i % 25 == 0:
                say(f"curve {name}: slice {i + 1}/{n}")
            frame = synthetic_slice(i, cfg.image_hw, cfg.seed)
            t0 = time.perf_counter()
            _, out = handle.push(frame)
            lat.append((time.perf_counter() - t0) * 1e3)
            rss.append(rss_bytes())
            state.append(handle.state_bytes())
            objects.append(out.objects)
        handle.close()
        runs[name] = {
            "slices": n,
            "latency_ms": [round(x, 3) for x in lat],
            "rss_bytes": rss,
            "rss_at_start_bytes": rss0,
            "state_bytes": state if any(s is not None for s in state) else None,
            "objects": objects,
            "totals_ms": {str(L): float(np.sum(lat[:L])) for L in CURVE_LENGTHS if n >= L},
            "analysis": _curve_analysis(lat, rss),
        }
    return {
        "note": "streaming is causal: a volume of L slices costs exactly the first L slices of this run",
        "runs": runs,
    }


def _fit(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    if len(x) < 2:
        return {"slope": 0.0, "intercept": float(y[0]) if len(y) else 0.0, "r2": 1.0}
    slope, intercept = np.polyfit(x, y, 1)
    pred = slope * x + intercept
    ss = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - pred) ** 2).sum()) / ss if ss > 0 else 1.0
    return {"slope": float(slope), "intercept": float(intercept), "r2": r2}


def _curve_analysis(lat: list[float], rss: list[int]) -> dict[str, Any]:
    """Flatness of per-slice latency and memory, and linearity of the total time."""
    n = len(lat)
    a = np.asarray(lat)
    idx = np.arange(n, dtype=np.float64)
    skip = min(10, n // 4)  # the first slices create objects and fill the memory bank
    win = max(1, min(50, (n - skip) // 4))
    early = float(np.median(a[skip : skip + win])) if n > skip else float(np.median(a))
    late = float(np.median(a[-win:]))
    steady = _fit(idx[skip:], a[skip:]) if n > skip + 1 else _fit(idx, a)
    cum = np.cumsum(a)
    r = np.asarray(rss, dtype=np.float64)
    mem = _fit(idx[skip:], r[skip:]) if n > skip + 1 else _fit(idx, r)
    return {
        "steady_from_slice": skip,
        "median_early_ms": early,
        "median_late_ms": late,
        "late_over_early": late / early if early > 0 else None,
        "latency_slope_ms_per_100_slices": 100 * steady["slope"],
        "total_time_fit": _fit(idx + 1, cum),
        "rss_slope_bytes_per_slice": mem["slope"],
        "rss_growth_bytes": float(r[-1] - r[skip]) if n > skip else 0.0,
    }


# -- assembling ------------------------------------------------------------------------------
def _stats(table: dict[str, list[float]], order: Sequence[str]) -> dict[str, Any]:
    keys = [k for k in order if k in table] + [k for k in table if k not in order]
    return {k: summarize(table[k]) for k in keys}


# runner phases whose peak RSS is recorded as a stage of its own (stopwatch laps cover the rest)
_PHASES = {"_open_stream": "stream_open", "_stream_slice": "stream_slice", "_tracker_round": "tracker_step"}


def _assemble(cfg, manifest, machine, entries, threads, policy, gpu, curve, notes, backends, stage_peaks) -> dict[str, Any]:
    base = next((e for e in entries if e.cand.kind == "baseline" and e.error is None), None)
    cands = []
    for e in entries:
        d: dict[str, Any] = {**e.cand.describe(), "available": e.error is None, "error": e.error}
        d["cold_start_ms"] = e.cold or None
        d["memory"] = {
            "load_rss_delta_bytes": e.mem.get("load_rss_delta_bytes"),
            "peak_rss_delta_bytes": e.peak_rss,
            "peak_rss_bytes": e.peak_abs,
            "stage_peak_rss_bytes": stage_peaks.get(e.cand.name, {}),
            "gpu_bytes": gpu.get(e.cand.name),
        }
        if e.image_e2e:
            miss_total = [
                t - s + sum(e.text_miss[k][i] for k in TEXT_MISS_STAGES if k in e.text_miss)
                for i, (t, s) in enumerate(zip(e.image_e2e, e.image_stages.get("text", [0.0] * len(e.image_e2e))))
            ]
            d["image"] = {
                "stages_ms": _stats(e.image_stages, IMAGE_STAGES),
                "text_cache_miss_ms": _stats(e.text_miss, TEXT_MISS_STAGES),
                "end_to_end_ms": summarize(e.image_e2e),
                "end_to_end_cache_miss_ms": summarize(miss_total),
                "cpu_time_ms": summarize(e.image_cpu),
                "throughput_per_s": 1e3 / float(np.mean(e.image_e2e)),
            }
        if e.stream_e2e:
            d["stream"] = {
                "stages_ms": _stats(e.stream_stages, STREAM_STAGES),
                "end_to_end_ms": summarize(e.stream_e2e),
                "cpu_time_ms": summarize(e.stream_cpu),
                "first_slice_ms": e.stream_first,
                "throughput_per_s": 1e3 / float(np.mean(e.stream_e2e)),
                "objects_per_slice": e.stream_objects,
            }
        if e.tracker:
            d["tracker_step"] = {"ms": summarize(e.tracker), **e.tracker_shape}
        cands.append(d)

    ratios: dict[str, Any] = {}
    agreement: dict[str, Any] = {}
    if base is not None:
        for e in entries:
            if e is base or e.error is not None:
                continue
            r: dict[str, Any] = {}
            if e.image_e2e and base.image_e2e:
                r["image_end_to_end"] = _speedup(base.image_e2e, e.image_e2e)
                r["image_cpu_time"] = _speedup(base.image_cpu, e.image_cpu)
                r["image_stages"] = {k: _speedup(base.image_stages[k], v) for k, v in e.image_stages.items() if k in base.image_stages}
                r["text_cache_miss"] = {k: _speedup(base.text_miss[k], v) for k, v in e.text_miss.items() if k in base.text_miss}
                ious = [float(np.mean([_iou(a, b) for a, b in zip(x.masks, y.masks)])) for x, y in zip(e.image_out, base.image_out)]
                agreement.setdefault(e.cand.name, {})["image_mask_iou_mean"] = float(np.mean(ious)) if ious else None
                diffs = [float(np.max(np.abs(x.scores - y.scores))) for x, y in zip(e.image_out, base.image_out)]
                agreement[e.cand.name]["image_score_max_abs_diff"] = max(diffs) if diffs else None
            if e.stream_e2e and base.stream_e2e:
                r["stream_end_to_end"] = _speedup(base.stream_e2e, e.stream_e2e)
                # throughput over the run: with detect_every > 1 slices alternate between detector and
                # tracker-only ones, so the median of per-slice ratios would report the cheap slices only
                r["stream_mean"] = float(np.mean(base.stream_e2e) / np.mean(e.stream_e2e))
                r["stream_cpu_time"] = _speedup(base.stream_cpu, e.stream_cpu)
                r["stream_stages"] = {k: _speedup(base.stream_stages[k], v) for k, v in e.stream_stages.items() if k in base.stream_stages}
                n_lab = len(cfg.prompts)
                ious = [_label_iou(a, b, n_lab) for a, b in zip(e.stream_labels, base.stream_labels)]
                agreement.setdefault(e.cand.name, {})["stream_label_iou_mean"] = float(np.mean(ious)) if ious else None
                agreement[e.cand.name]["stream_label_iou_min"] = float(np.min(ious)) if ious else None
                agreement[e.cand.name]["stream_objects_equal"] = e.stream_objects == base.stream_objects
            if e.tracker and base.tracker:
                r["tracker_step"] = _speedup(base.tracker, e.tracker)
            if e.cold.get("total") and base.cold.get("total"):
                r["cold_start"] = base.cold["total"] / e.cold["total"]
            ratios[e.cand.name] = r

    src = manifest.model.get("source") or {}
    return {
        "schema": SCHEMA_ID,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "medsam3_rt": __version__,
        "command": list(sys.argv),
        "machine": machine,
        "model": {
            "dir": str(cfg.model_dir),
            "name": manifest.model.get("name"),
            "source": {k: v for k, v in src.items() if k in ("format", "preset", "seed", "class", "path", "sha256")},
            "dims": manifest.dims.to_json(),
            "has_tracker": manifest.has_tracker,
        },
        "settings": {
            "prompts": list(cfg.prompts),
            "image_hw": list(cfg.image_hw),
            "warmup": cfg.warmup,
            "image_rounds": cfg.rounds if cfg.image else 0,
            "stream_slices": cfg.frames if policy is not None else 0,
            "tracker_rounds": cfg.tracker_rounds if policy is not None else 0,
            "threads": threads,
            "settle_s": cfg.settle_s,
            "backends": list(backends),
            "stream_policy": asdict(policy) if policy is not None else None,
            "variants": [{**asdict(v), "model_dir": str(v.model_dir)} for v in cfg.variants],
            "interleaved": True,
            "speedup": "baseline time / candidate time, median of per-round ratios (> 1: faster than the baseline)",
            **cfg.extra,
        },
        "notes": notes,
        "candidates": cands,
        "baseline": base.cand.name if base is not None else None,
        "speedup_vs_baseline": ratios,
        "agreement_with_baseline": agreement,
        "curve": curve,
    }


def _add_compute(
    result: dict[str, Any], entries: list[_Entry], flops: dict[str, GraphFlops], peaks: list[float], int8_peaks: Sequence[float] = ()
) -> None:
    """FLOPs per graph, the GEMM peaks, and per candidate the achieved GFLOP/s of each graph's stage."""
    peak = max(peaks)
    result["hardware"] = {
        "fp32_gemm_peak_gflops": peak,
        "fp32_gemm_peak_samples_gflops": peaks,
        "peak_method": "numpy BLAS square fp32 GEMM n=1024, best of 5; timed before and after the candidates, the higher kept",
    }
    if int8_peaks:  # what an int8 (quantised) export could reach: ONNX Runtime's u8 x s8 GEMM
        result["hardware"] |= {
            "int8_gemm_peak_gops": max(int8_peaks),
            "int8_gemm_peak_samples_gops": list(int8_peaks),
            "int8_peak_method": "ONNX Runtime MatMulInteger u8 x s8 -> s32, n=1024, best of 5, the bench's threads; before and after",
        }
    result["graph_flops"] = {
        name: {**f.to_json(), "stage": STAGE_OF_GRAPH[name], "prompts": len(result["settings"]["prompts"])} for name, f in flops.items()
    }
    by_cand = {e.cand.name: e for e in entries}
    for c in result["candidates"]:
        e = by_cand[c["name"]]
        if Path(getattr(e.cand, "model_dir", result["model"]["dir"])) != Path(result["model"]["dir"]):
            continue  # a variant on another export (int8, another size): these FLOPs are not its work
        times = {**e.image_stages, **e.text_miss}
        compute = {}
        for name, f in flops.items():
            ms = times.get(STAGE_OF_GRAPH[name])
            if not ms or f.total == 0:
                continue
            med = float(np.median(ms))
            rate = f.total / (med / 1e3) / 1e9 if med > 0 else None
            compute[name] = {
                "stage_p50_ms": med,
                "achieved_gflops": rate,
                "fraction_of_fp32_peak": rate / peak if rate is not None and peak > 0 else None,
            }
        if compute:
            c["compute"] = compute


def _speedup(baseline: Sequence[float], candidate: Sequence[float]) -> float | None:
    r = median_ratio(candidate, baseline)
    return None if r is None or r == 0 else 1.0 / r


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
