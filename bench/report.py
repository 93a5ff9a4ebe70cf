"""The bench result as markdown tables and PNG plots (matplotlib, the `bench` extra)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from medsam3_rt.errors import MissingDependencyError

from .schema import CURVE_LENGTHS, IMAGE_STAGES, STREAM_STAGES

# the order stages run in; others (a baseline's own laps) follow
_MEMORY_STAGES = (
    "load",
    "tokenize",
    "text_encoder",
    "text",
    "preprocess",
    "backbone",
    "detector",
    "postprocess",
    "stream_open",
    "stream_slice",
    "tracker_step",
)


def _stage_memory_table(candidates: list[dict[str, Any]]) -> list[str]:
    """Peak process RSS (MB) per stage and in total: which stage holds the memory."""
    live = [c for c in candidates if c["available"] and c["memory"].get("stage_peak_rss_bytes")]
    if not live:
        return []
    seen = {k for c in live for k in c["memory"]["stage_peak_rss_bytes"]}
    stages = [k for k in _MEMORY_STAGES if k in seen] + sorted(seen - set(_MEMORY_STAGES))
    lines = [
        "## Peak RSS per stage (MB, the whole process)",
        "",
        "| candidate | " + " | ".join(stages) + " | total |",
        "|---|" + "---|" * (len(stages) + 1),
    ]
    for c in live:
        peaks = c["memory"]["stage_peak_rss_bytes"]
        cells = [_mb(peaks.get(k)) if k in peaks else "-" for k in stages]
        lines.append(f"| {c['name']} | " + " | ".join(cells) + f" | {_mb(c['memory']['peak_rss_bytes'])} |")
    lines.append("")
    return lines


def _fmt_ms(s: dict[str, Any] | None, key: str = "p50") -> str:
    if not s or s.get("n", 0) == 0:
        return "-"
    v = s[key]
    return f"{v / 1e3:.2f} s" if v >= 1e4 else f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def _fmt_x(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}x"


def _mb(b: int | None) -> str:
    return "-" if b is None else f"{b / 2**20:.0f}"


def to_markdown(result: dict[str, Any]) -> str:
    """Tables of the result: latency (ms) per stage, speedups vs the baseline, memory, cold start."""
    m = result["machine"]
    s = result["settings"]
    lines = [
        f"# medsam3-rt bench: {result['model']['name']} ({_model_label(result)})",
        "",
        f"Machine: {m['cpu_model']}, {m['usable_cpus']} usable of {m['logical_cpus']} logical CPUs"
        + (f", GPU {', '.join(g['name'] for g in m['gpus'])}" if m.get("gpus") else ", no GPU")
        + f"; load average at start {m.get('load_average_at_start')}; {m['os']}, Python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in m["libraries"].items()),
        "",
        f"Prompts {s['prompts']}, image {s['image_hw'][0]}x{s['image_hw'][1]}, {s['threads']} threads, "
        f"{s['warmup']} warm-up + {s['image_rounds']} image rounds, {s['stream_slices']} streaming slices, "
        "interleaved. Times in ms (p50 unless said), speedup = baseline time / candidate time (median of per-round ratios).",
        "",
    ]
    cands = [c for c in result["candidates"] if c["available"]]
    sp = result.get("speedup_vs_baseline") or {}
    base = result.get("baseline")
    for section, title, stages in (
        ("image", "Image (2D), prompt cache hit", IMAGE_STAGES),
        ("stream", "Streaming, per slice", STREAM_STAGES),
    ):
        rows = [c for c in cands if section in c]
        if not rows:
            continue
        lines += [f"## {title}", ""]
        means = section == "stream" and any(c.get("detect_every", 1) > 1 for c in rows)  # tracker-only slices: compare means
        head = ["candidate", "p50", "p95", "p99", "mean", "per s", "speedup", *(["speedup of means"] if means else []), *stages]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for c in rows:
            sec = c[section]
            e2e = sec["end_to_end_ms"]
            x = 1.0 if c["name"] == base else (sp.get(c["name"], {}).get(f"{section}_end_to_end"))
            cells = [
                c["name"],
                _fmt_ms(e2e),
                _fmt_ms(e2e, "p95"),
                _fmt_ms(e2e, "p99"),
                _fmt_ms(e2e, "mean"),
                f"{sec['throughput_per_s']:.2f}",
                "baseline" if c["name"] == base else _fmt_x(x),
            ]
            if means:
                cells.append("baseline" if c["name"] == base else _fmt_x(sp.get(c["name"], {}).get("stream_mean")))
            for st in stages:
                v = _fmt_ms(sec["stages_ms"].get(st))
                r = None if c["name"] == base else sp.get(c["name"], {}).get(f"{section}_stages", {}).get(st)
                cells.append(v if r is None else f"{v} ({_fmt_x(r)})")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    img = [c for c in cands if "image" in c]
    if img:
        lines += [
            "## Prompt cache: text for all prompts",
            "",
            "| candidate | hit (lookup) | miss: tokenize | miss: text encoder | image end to end, miss |",
            "|---|---|---|---|---|",
        ]
        for c in img:
            t = c["image"]
            lines.append(
                f"| {c['name']} | {_fmt_ms(t['stages_ms'].get('text'))} | {_fmt_ms(t['text_cache_miss_ms'].get('tokenize'))} | "
                f"{_fmt_ms(t['text_cache_miss_ms'].get('text_encoder'))} | {_fmt_ms(t['end_to_end_cache_miss_ms'])} |"
            )
        lines.append("")
    trk = [c for c in cands if "tracker_step" in c]
    if trk:
        lines += ["## Tracker step alone", "", "| candidate | p50 | speedup | objects | memories | pointers |", "|---|---|---|---|---|---|"]
        for c in trk:
            t = c["tracker_step"]
            x = "baseline" if c["name"] == base else _fmt_x(sp.get(c["name"], {}).get("tracker_step"))
            shape = " | ".join(str(t.get(k, "-")) for k in ("objects", "memories", "pointers"))
            lines.append(f"| {c['name']} | {_fmt_ms(t['ms'])} | {x} | {shape} |")
        lines.append("")
    lines += _compute_lines(result, cands)
    lines += [
        "## Cold start and memory",
        "",
        "| candidate | load ms | first image ms | RSS after load MB | peak RSS over start MB | GPU MB |",
        "|---|---|---|---|---|---|",
    ]
    for c in result["candidates"]:
        if not c["available"]:
            lines.append(f"| {c['name']} | unavailable: {str(c['error']).splitlines()[0][:80]} | | | | |")
            continue
        cs = c["cold_start_ms"] or {}
        mem = c["memory"]
        lines.append(
            f"| {c['name']} | {cs.get('load', 0):.0f} | {cs.get('first_image', 0):.0f} | {_mb(mem['load_rss_delta_bytes'])} | "
            f"{_mb(mem['peak_rss_delta_bytes'])} | {_mb(mem['gpu_bytes'])} |"
        )
    lines.append("")
    lines += _stage_memory_table(result["candidates"])
    agr = result.get("agreement_with_baseline") or {}
    if agr:
        lines += [
            "## Agreement with the baseline",
            "",
            "| candidate | image mask IoU | max score diff | stream label IoU mean / min | same object counts |",
            "|---|---|---|---|---|",
        ]
        for name, a in agr.items():

            def f(v: Any, spec: str = ".4f") -> str:
                return "-" if v is None else format(v, spec) if isinstance(v, float) else str(v)

            lines.append(
                f"| {name} | {f(a.get('image_mask_iou_mean'))} | {f(a.get('image_score_max_abs_diff'), '.2e')} | "
                f"{f(a.get('stream_label_iou_mean'))} / {f(a.get('stream_label_iou_min'))} | {f(a.get('stream_objects_equal'))} |"
            )
        lines.append("")
    curve = result.get("curve")
    if curve and curve.get("runs"):
        lines += [
            "## Streaming cost curve",
            "",
            "| candidate | slices | median ms early / late | late/early | slope ms per 100 slices | RSS growth MB | "
            + " | ".join(f"total {L} slices s" for L in CURVE_LENGTHS)
            + " |",
            "|---|---|---|---|---|---|" + "---|" * len(CURVE_LENGTHS),
        ]
        for name, run in curve["runs"].items():
            a = run["analysis"]
            totals = [f"{run['totals_ms'][str(L)] / 1e3:.1f}" if str(L) in run["totals_ms"] else "-" for L in CURVE_LENGTHS]
            lines.append(
                f"| {name} | {run['slices']} | {a['median_early_ms']:.0f} / {a['median_late_ms']:.0f} | {a['late_over_early']:.2f} | "
                f"{a['latency_slope_ms_per_100_slices']:.1f} | {a['rss_growth_bytes'] / 2**20:.1f} | " + " | ".join(totals) + " |"
            )
        lines.append("")
    for n in result.get("notes") or []:
        lines.append(f"- {n}")
    return "\n".join(lines).rstrip() + "\n"


def _unpriced(ops: dict[str, int]) -> str:
    return f" (+ unpriced {', '.join(f'{n} {k}' for k, n in ops.items())})" if ops else ""


def _compute_lines(result: dict[str, Any], cands: list[dict[str, Any]]) -> list[str]:
    """Each graph's FLOPs and, per candidate, achieved GFLOP/s and its share of the measured GEMM peak."""
    flops, hw = result.get("graph_flops"), result.get("hardware")
    if not flops or not hw:
        return []
    peak = hw["fp32_gemm_peak_gflops"]
    names = list(flops)
    lines = [
        "## Work and the hardware limit",
        "",
        f"fp32 GEMM peak of this machine: {peak:.1f} GFLOP/s"
        + (f", int8 GEMM peak (ONNX Runtime MatMulInteger): {hw['int8_gemm_peak_gops']:.1f} GOP/s" if "int8_gemm_peak_gops" in hw else "")
        + " (measured in this run). GFLOP per call at "
        f"{len(result['settings']['prompts'])} prompt(s): "
        + ", ".join(f"{n} {flops[n]['gflop']:.3g}" + _unpriced(flops[n]["uncounted_ops"]) for n in names)
        + ".",
        "",
        "| candidate | " + " | ".join(f"{n} GFLOP/s (of peak)" for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for c in cands:
        comp = c.get("compute") or {}
        cells = []
        for n in names:
            g = comp.get(n) or {}
            rate, frac = g.get("achieved_gflops"), g.get("fraction_of_fp32_peak")
            cells.append("-" if rate is None else f"{rate:.1f} ({100 * frac:.0f} %)" if frac is not None else f"{rate:.1f}")
        lines.append(f"| {c['name']} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _model_label(result: dict[str, Any]) -> str:
    src = result["model"]["source"]
    if src.get("format") == "random":
        return f"preset {src.get('preset')}, random weights, {result['model']['dims']['image_size']} px"
    return f"{src.get('format')} checkpoint, {result['model']['dims']['image_size']} px"


def stage_colors(cmap: Any) -> dict[str, Any]:
    """One colour per stage name across both panels, so `backbone` is the same colour in the image and stream bars."""
    names = list(dict.fromkeys((*IMAGE_STAGES, *STREAM_STAGES)))
    return {name: cmap(k % cmap.N) for k, name in enumerate(names)}


def write_plots(result: dict[str, Any], path: Path) -> list[Path]:
    """Stage-breakdown bar chart at `path`; with a curve also `<stem>.curve.png`. Needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise MissingDependencyError("plots need matplotlib: pip install 'medsam3-rt[bench]'") from e
    written = []
    cands = [c for c in result["candidates"] if c["available"]]
    sections = [(s, st) for s, st in (("image", IMAGE_STAGES), ("stream", STREAM_STAGES)) if any(s in c for c in cands)]
    fig, axes = plt.subplots(1, max(1, len(sections)), figsize=(6.5 * max(1, len(sections)), 4.2), squeeze=False)
    colors = stage_colors(plt.get_cmap("tab10"))
    for ax, (section, stages) in zip(axes[0], sections):
        rows = [c for c in cands if section in c]
        bottoms = np.zeros(len(rows))
        for st in stages:
            vals = np.array([c[section]["stages_ms"].get(st, {}).get("p50", 0.0) for c in rows]) / 1e3
            ax.bar([c["name"] for c in rows], vals, bottom=bottoms, label=st, color=colors[st])
            bottoms += vals
        for x, (c, b) in enumerate(zip(rows, bottoms)):
            sp = (result.get("speedup_vs_baseline") or {}).get(c["name"], {}).get(f"{section}_end_to_end")
            if sp:
                ax.text(x, b, f"{sp:.2f}x", ha="center", va="bottom", fontsize=9)
        ax.set_ylabel("seconds (p50 per stage)")
        ax.set_title(f"{'2D image' if section == 'image' else 'streaming slice'}: {result['model']['name']}")
        ax.tick_params(axis="x", labelrotation=20)
        ax.legend(fontsize=7)
    fig.suptitle(_model_label(result) + f" - {result['machine']['cpu_model']}, {result['settings']['threads']} threads", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    curve = result.get("curve")
    if curve and curve.get("runs"):
        cpath = path.with_name(path.stem + ".curve.png")
        fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(16, 4.2))
        for name, run in curve["runs"].items():
            lat = np.asarray(run["latency_ms"]) / 1e3
            a1.plot(np.arange(len(lat)), lat, lw=0.8, label=name)
            a2.plot(np.arange(len(lat)), (np.asarray(run["rss_bytes"]) - run["rss_at_start_bytes"]) / 2**20, lw=0.8, label=name)
            (line,) = a3.plot(np.arange(1, len(lat) + 1), np.cumsum(lat), lw=1.0, label=name)
            lens = [int(k) for k in run["totals_ms"]]
            a3.plot(lens, [run["totals_ms"][str(L)] / 1e3 for L in lens], "o", color=line.get_color())
        a1.set(xlabel="slice index", ylabel="seconds per slice", title="latency vs slice")
        a2.set(xlabel="slice index", ylabel="RSS growth since slice 0 (MB)", title="memory vs slice")
        a3.set(xlabel="volume length (slices)", ylabel="total seconds", title="total time vs volume length")
        for a in (a1, a2, a3):
            a.legend(fontsize=8)
            a.grid(alpha=0.3)
        fig.suptitle(_model_label(result), fontsize=9)
        fig.tight_layout()
        fig.savefig(cpath, dpi=110)
        plt.close(fig)
        written.append(cpath)
    return written
