"""Fused vs unfused attention: export time/peak, and per graph ORT CPU load time, run time and peak RSS (issue 21).

Exports one random-weight preset twice (`--attention unfused` and `--attention fused`, same
seed, so the same weights), then runs every graph of each export in its own process on the
same chained inputs (the exporter's parity inputs, computed once from the unfused export), so
a graph's peak RSS is its own: `peak_rss_mib` is the process peak, `run_peak_mib` the growth
over the RSS after the session opened (what running the graph adds); both from /proc's VmHWM
(ru_maxrss would carry the parent's peak over exec). Ratios are fused/unfused from the same run.

Usage: nice -n 10 python -m benchmarks.fused_attention [--preset small] [--work DIR]
       [--out benchmarks/results/fused-attention-small.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    from benchmarks.full_size import cli_path, timed_export
except ModuleNotFoundError:  # run as a script (python benchmarks/fused_attention.py)
    from full_size import cli_path, timed_export  # type: ignore[no-redef]

MODES = ("unfused", "fused")

_GRAPH_CHILD = """
import json, sys, time
from pathlib import Path
import numpy as np
from medsam3_rt.backends import OrtCpuBackend, OrtCpuOptions
from medsam3_rt.manifest import load_manifest

def status_mib(key):
    # VmHWM/VmRSS of this process image: unlike ru_maxrss, VmHWM does not carry the parent's peak over exec
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024

export, name, inputs_file, lean, repeats = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1", int(sys.argv[5])
inputs = dict(np.load(inputs_file))
entry = load_manifest(export).graphs[name]
t0 = time.perf_counter()
runner = OrtCpuBackend(OrtCpuOptions(lean=lean)).open(entry, Path(export))
load_s = time.perf_counter() - t0
opened, open_peak = status_mib("VmRSS"), status_mib("VmHWM")
times = []
for _ in range(repeats):
    t = time.perf_counter()
    runner.run(inputs)
    times.append(time.perf_counter() - t)
peak = status_mib("VmHWM")
print(json.dumps({"load_s": load_s, "run_s": min(times), "runs_s": times, "rss_after_open_mib": opened,
                  "open_peak_mib": open_peak, "peak_rss_mib": peak, "run_peak_mib": max(0.0, peak - opened)}))
"""


def export(preset: str, out: Path, mode: str) -> dict[str, float]:
    return timed_export([cli_path(), "export", preset, "--random", "-o", str(out), "--force", "--quiet", "--attention", mode])


def chained_inputs(export_dir: Path, work: Path) -> dict[str, Path]:
    """The exporter's parity inputs of every graph (chained through the unfused export's outputs), one .npz each."""
    import numpy as np
    from medsam3_export.exporter import PARITY_PROMPTS, parity_image, parity_inputs

    from medsam3_rt.backends import OrtCpuBackend
    from medsam3_rt.manifest import load_manifest
    from medsam3_rt.preprocess import pixel_values
    from medsam3_rt.tokenizer import ClipTokenizer

    m = load_manifest(export_dir)
    ids, attn = ClipTokenizer(export_dir / m.tokenizer.file, m.tokenizer).encode(PARITY_PROMPTS[:1])
    pixels = pixel_values(parity_image(m.dims.image_size), m.preprocess)
    outs: dict[str, dict[str, object]] = {}
    files = {}
    backend = OrtCpuBackend()
    for name in m.graphs:
        inputs = {k: v.numpy() for k, v in parity_inputs(name, m.dims, ids, attn, pixels, outs).items()}  # type: ignore[arg-type]
        files[name] = work / f"inputs-{name}.npz"
        np.savez(files[name], **inputs)
        runner = backend.open(m.graphs[name], export_dir)
        outs[name] = dict(runner.run(inputs))
        runner.close()
    return files


def run_graph(export_dir: Path, name: str, inputs: Path, lean: bool, repeats: int) -> dict[str, float]:
    args = [str(export_dir), name, str(inputs), "1" if lean else "0", str(repeats)]
    proc = subprocess.run([sys.executable, "-c", _GRAPH_CHILD, *args], check=True, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--work", type=Path, default=None, help="Folder for the two exports (default: a temporary one).")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lean", action="store_true", help="Open the sessions with OrtCpuOptions(lean=True).")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--reuse", action="store_true", help="Reuse the exports in --work (export figures from the previous --out).")
    args = ap.parse_args()
    out = args.out or Path(f"benchmarks/results/fused-attention-{args.preset}.json")
    with tempfile.TemporaryDirectory(prefix="fused-attn-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        exports = {mode: work / f"{args.preset}-{mode}" for mode in MODES}
        if args.reuse:
            previous = json.loads(out.read_text())["exports"] if out.exists() else {}
            export_runs = {mode: {k: v for k, v in previous.get(mode, {}).items() if k.startswith("export_")} for mode in MODES}
        else:
            export_runs = {mode: export(args.preset, exports[mode], mode) for mode in MODES}
        files = chained_inputs(exports["unfused"], work)
        graphs: dict[str, dict[str, dict[str, float]]] = {}
        for name, inputs in files.items():
            graphs[name] = {mode: run_graph(exports[mode], name, inputs, args.lean, args.repeats) for mode in MODES}
            u, f = graphs[name]["unfused"], graphs[name]["fused"]
            graphs[name]["fused_vs_unfused"] = {
                "run_time_ratio": f["run_s"] / u["run_s"],
                "peak_rss_ratio": f["peak_rss_mib"] / u["peak_rss_mib"],
                "run_peak_ratio": f["run_peak_mib"] / u["run_peak_mib"] if u["run_peak_mib"] else None,
            }
            print(
                f"{name:15s} run {u['run_s']:.3f}s -> {f['run_s']:.3f}s   peak {u['peak_rss_mib']:.0f} -> {f['peak_rss_mib']:.0f} MiB"
                f"   run adds {u['run_peak_mib']:.0f} -> {f['run_peak_mib']:.0f} MiB",
                flush=True,
            )
        manifests = {mode: json.loads((exports[mode] / "manifest.json").read_text()) for mode in MODES}
    result = {
        "preset": args.preset,
        "lean_sessions": args.lean,
        "machine": {"cpus": os.cpu_count(), "note": "2-core machine shared with other sessions; ratios are from the same run"},
        "exports": {
            mode: {
                **export_runs[mode],
                "attention": {g: e.get("attention", "unfused") for g, e in manifests[mode]["graphs"].items()},
                "parity_passed": manifests[mode]["parity"]["passed"],
            }
            for mode in MODES
        },
        "graphs": graphs,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name(out.name + ".tmp")
    tmp_out.write_text(json.dumps(result, indent=2))
    tmp_out.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
