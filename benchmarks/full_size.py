"""The real SAM3 geometry (random weights) end to end on this machine: export, load, segment, stream (issue 21).

For each setting ("before" = `--attention unfused` + default ort-cpu sessions, "after" =
`--attention fused` + `OrtCpuOptions(lean=True)`, "fp16-pack" = "after" with the weights stored
as fp16 and a prompt pack holding the prompt), in separate processes:

1. `medsam3-rt export full --random` (seed 0, so both exports hold the same weights): wall time
   and peak RSS of the export process (fp16-pack: `medsam3-rt fp16-weights` of the fused export,
   timed the same way, reusing that export if it exists);
2. one runtime process, as a user runs it: load, segment one 512x512 slice with one prompt
   (text-cache miss, then a second, warm segment; with a pack no miss), then stream `--frames` slices; the time
   and peak RSS (`medsam3_bench.memory`) of every stage, and the process peak (ru_maxrss).

Random weights detect nothing at the model's thresholds; the stream's detection thresholds
are set just under the prompt's best score on the first slice (as `medsam3-rt bench` does),
so the stream tracks an object and every frame runs the tracker graphs.

Needs ~10-12 GB of RAM and ~40 min on 2 cores. Usage:
  nice -n 10 python -m benchmarks.full_size [--work DIR] [--frames 3] [--settings before,after,fp16-pack]
  [--skip-export] [--out benchmarks/results/full-size.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SETTINGS: dict[str, dict[str, object]] = {
    "before": {"attention": "unfused", "lean": False, "weights": "fp32", "pack": False},
    "after": {"attention": "fused", "lean": True, "weights": "fp32", "pack": False},
    # the fused export's weights stored as fp16 (`medsam3-rt fp16-weights`), and a prompt pack
    # holding the prompt, so the text encoder never loads
    "fp16-pack": {"attention": "fused", "lean": True, "weights": "fp16", "pack": True},
}
PROMPT = "liver"

_EXPORT_CHILD = """
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - t0
if proc.returncode:
    sys.exit(proc.stderr[-3000:])
print(json.dumps({"export_s": wall, "export_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""

_RUN_CHILD = """
import json, resource, sys, time
import numpy as np
from medsam3_bench.candidates import RuntimeCandidate, StreamPolicy
from medsam3_bench.memory import StageMemory
from medsam3_bench.runner import synthetic_slice
from medsam3_rt.backends import OrtCpuOptions

model_dir, lean, frames, prompt, pack = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1"
mib = lambda b: round(b / 2**20, 1)
mem = StageMemory().start()
cand = RuntimeCandidate(model_dir, "ort-cpu", OrtCpuOptions(lean=lean))
cand.memory = mem
out = {"lean": lean, "prompt_pack": pack}
t0 = time.perf_counter()
cand.load()
out["load_s"] = time.perf_counter() - t0
mem.record(cand.name, "load", mem.lap())
image = synthetic_slice(0)
t0 = time.perf_counter()
if not pack:  # with a pack the prompt is a cache hit: the text encoder never opens
    out["text_miss_ms"] = cand.text_miss([prompt])
out["segment_cold_ms"], _ = cand.segment(image, [prompt])
out["segment_cold_s"] = time.perf_counter() - t0
t0 = time.perf_counter()
out["segment_warm_ms"], _ = cand.segment(image, [prompt])
out["segment_warm_s"] = time.perf_counter() - t0
out["segment_peak_rss_mib"] = mib(mem.overall)
probs = cand.detection_probs(image, [prompt])
det = float(probs.max()) - 1e-4
out["stream_detection_threshold"] = det
mem.lap()
handle = cand.stream([prompt], (512, 512), StreamPolicy(det, det, 4, thresholds_from="forced: best score of slice 0"))
mem.record(cand.name, "stream_open", mem.lap())
out["stream_frames"] = []
for i in range(frames):
    t0 = time.perf_counter()
    ms, res = handle.push(synthetic_slice(i))
    peak = mem.lap()
    mem.record(cand.name, "stream_frame", peak)
    out["stream_frames"].append({"s": time.perf_counter() - t0, "stages_ms": ms, "objects": res.objects, "peak_rss_mib": mib(peak)})
handle.close()
out["open_graphs"] = cand.seg.model.open_graphs()
mem.stop()
out["stage_peak_rss_mib"] = {k: mib(v) for k, v in mem.stage_peaks[cand.name].items()}
out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def cli_path() -> str:
    """The `medsam3-rt` console script of this interpreter's environment."""
    return str(Path(sys.executable).with_name("medsam3-rt"))


def timed_export(cmd: list[str]) -> dict[str, float]:
    """Run an export command in a child process: its wall time and peak RSS (also used by fused_attention.py)."""
    proc = subprocess.run([sys.executable, "-c", _EXPORT_CHILD, *cmd], check=True, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def export(out: Path, attention: str) -> dict[str, float]:
    return timed_export([cli_path(), "export", "full", "--random", "-o", str(out), "--force", "--quiet", "--attention", attention])


def store_fp16(src: Path, out: Path) -> dict[str, float]:
    """`medsam3-rt fp16-weights` of an export, timed like the export."""
    return {
        k.replace("export", "fp16_weights"): v
        for k, v in timed_export([cli_path(), "fp16-weights", str(src), "-o", str(out), "--force"]).items()
    }


def make_pack(model_dir: Path) -> None:
    """A prompt pack of PROMPT in the export's prompt_packs/ folder (loaded with the model)."""
    pack = model_dir / "prompt_packs" / "bench.m3pack"
    pack.parent.mkdir(exist_ok=True)
    cmd = [cli_path(), "prompts", "pack", str(model_dir), "-p", PROMPT, "-o", str(pack), "--force"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def run(model_dir: Path, lean: bool, frames: int, pack: bool = False) -> dict[str, object]:
    args = [str(model_dir), "1" if lean else "0", str(frames), PROMPT, "1" if pack else "0"]
    proc = subprocess.run([sys.executable, "-c", _RUN_CHILD, *args], check=True, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/medsam3-full-size"))
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--settings", default="before,after,fp16-pack")
    ap.add_argument("--skip-export", action="store_true", help="Reuse the exports already in --work.")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/full-size.json"))
    ap.add_argument("--table", action="store_true", help="Print the markdown table of --out and stop.")
    args = ap.parse_args()
    if args.table:
        print(table(json.loads(args.out.read_text())))
        return
    result: dict[str, object] = {"prompt": PROMPT, "frames": args.frames, "settings": {}}
    if args.out.is_file():  # settings run one at a time add to the same file
        result["settings"] = json.loads(args.out.read_text()).get("settings", {})
    for name in args.settings.split(","):
        setting = SETTINGS[name]
        fp32_dir = args.work / f"full-{setting['attention']}"
        model_dir = fp32_dir if setting["weights"] == "fp32" else args.work / f"full-{setting['attention']}-fp16"
        row: dict[str, object] = {**setting}
        if not args.skip_export:
            if not (fp32_dir / "manifest.json").is_file() or setting["weights"] == "fp32":
                print(f"{name}: exporting ({setting['attention']} attention)", flush=True)
                row["export"] = export(fp32_dir, str(setting["attention"]))
                print(f"{name}: {row['export']}", flush=True)
            if setting["weights"] == "fp16":
                print(f"{name}: storing the weights as fp16", flush=True)
                row["fp16_weights"] = store_fp16(fp32_dir, model_dir)
                print(f"{name}: {row['fp16_weights']}", flush=True)
        if setting["pack"]:
            make_pack(model_dir)
        row["disk_mib"] = round(sum(f.stat().st_size for f in model_dir.rglob("*.onnx*")) / 2**20, 1)
        print(f"{name}: load, segment, stream", flush=True)
        row["runtime"] = run(model_dir, bool(setting["lean"]), args.frames, bool(setting["pack"]))
        print(f"{name}: {json.dumps(row['runtime'])}", flush=True)
        result["settings"][name] = row  # type: ignore[index]
        _write(args.out, result)
    print(f"wrote {args.out}")


def table(result: dict[str, Any]) -> str:
    """The markdown table docs/footprint.md shows (`--table`: print it for an existing result file)."""
    rows = [
        "| setting | disk | export (or fp16-weights) | load | segment cold / warm | stream frames "
        "| peak RSS: load / segment / stream / process |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in result["settings"].items():
        rt = row.get("runtime", {})
        exp = row.get("export") or {}
        half = row.get("fp16_weights") or {}
        if exp:
            made = f"{exp['export_s'] / 60:.1f} min, {exp['export_peak_rss_mib'] / 1024:.1f} GiB"
        elif half:
            made = f"{half['fp16_weights_s'] / 60:.1f} min, {half['fp16_weights_peak_rss_mib'] / 1024:.1f} GiB"
        else:
            made = "-"
        st = rt.get("stage_peak_rss_mib", {})
        seg_peak = max((v for k, v in st.items() if k not in ("load", "stream_open", "stream_frame")), default=0.0)
        frames = " / ".join(f"{f['s']:.0f}" for f in rt.get("stream_frames", []))
        gib = lambda m: f"{m / 1024:.2f}"  # noqa: E731
        if not rt:
            rows.append(f"| {name} | {row.get('disk_mib', 0) / 1024:.2f} GiB | {made} | {row.get('note', 'not run')} | | | |")
            continue
        rows.append(
            f"| {name} | {row.get('disk_mib', 0) / 1024:.2f} GiB | {made} | {rt.get('load_s', 0):.1f} s | "
            f"{rt.get('segment_cold_s', 0):.0f} / {rt.get('segment_warm_s', 0):.0f} s | {frames} s | "
            f"{gib(st.get('load', 0))} / {gib(seg_peak)} / {gib(st.get('stream_frame', 0))} / {gib(rt.get('peak_rss_mib', 0))} GiB |"
        )
    return "\n".join(rows)


def _write(out: Path, result: dict[str, object]) -> None:
    """After every setting, atomically: a run that dies later keeps what it measured."""
    result["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)


if __name__ == "__main__":
    main()
