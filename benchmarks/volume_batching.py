"""Throughput of `segment_volume(batch_size=B)` against slice by slice (issue 17, batching in volumes).

    python -m benchmarks.volume_batching MODEL_DIR [--batch 4 --batch 8] [--slices 32] [--rounds 3]
        [--mode track --mode detect] [--threads N] [--output benchmarks/results/NAME.json]

MODEL_DIR should be an export made with `--batch-axis` (with a tracker for mode "track").
One volume of synthetic CT-like slices (`medsam3_bench.runner.synthetic_slice`) is segmented
forward per mode (tracker; per-slice detection), slice by slice and with B slices per
backbone call, interleaved round after round so machine load hits all alike; the speedup is
the median over rounds of (slice-by-slice time / batched time) for the whole volume, and the
label volumes of every batched run are compared with slice by slice (fraction of voxels that
differ, objects found).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from medsam3_bench.runner import synthetic_slice

import medsam3_rt
from medsam3_rt.backends import BackendOptions
from medsam3_rt.profiling import machine_info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--batch", type=int, action="append", default=None)
    ap.add_argument("--slices", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mode", action="append", default=None, choices=("track", "detect"))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--prompt", action="append", default=None)
    ap.add_argument("--output", type=Path, default=None)
    a = ap.parse_args()
    batches = [1, *sorted(set(a.batch or [4, 8]) - {1})]
    modes = a.mode or ["track", "detect"]
    prompts = a.prompt or ["liver"]
    volume = np.stack([synthetic_slice(i, (256, 256)) for i in range(a.slices)]).astype(np.float32)
    # the model's own thresholds find nothing on synthetic slices with random weights: a low one makes the tracker work
    opts = medsam3_rt.StreamOptions(detection_threshold=0.0, new_object_threshold=0.0, max_objects=2)
    seg = medsam3_rt.load(a.model_dir, "ort-cpu", options=BackendOptions(intra_op_threads=a.threads))
    load0 = list(os.getloadavg())
    ref = {m: seg.segment_volume(volume, prompts, mode=m, options=opts) for m in modes}  # warm-up and the reference
    times: dict[tuple[str, int], list[float]] = {(m, b): [] for m in modes for b in batches}
    stages: dict[tuple[str, int], dict[str, float]] = {}
    diff: dict[tuple[str, int], float] = {}
    same_objects: dict[tuple[str, int], bool] = {}
    for _ in range(a.rounds):
        for m in modes:
            for b in batches:
                t0 = time.perf_counter()
                res = seg.segment_volume(volume, prompts, mode=m, options=opts, batch_size=b)
                times[(m, b)].append(time.perf_counter() - t0)
                stages[(m, b)] = {k: v / a.slices for k, v in res.timings_ms.items()}
                diff[(m, b)] = max(diff.get((m, b), 0.0), float((res.labels != ref[m].labels).mean()))
                same_objects[(m, b)] = [(o.object_id, o.first_slice, o.last_slice) for o in res.objects] == [
                    (o.object_id, o.first_slice, o.last_slice) for o in ref[m].objects
                ]
    seg.close()
    rows: dict[str, dict] = {}
    for m in modes:
        for b in batches:
            key = (m, b)
            rows[f"{m} batch {b}"] = {
                "slices_per_s": a.slices / statistics.median(times[key]),
                "ms_per_slice_stages_last_round": stages[key],
                "speedup_vs_slice_by_slice": statistics.median(t1 / tb for t1, tb in zip(times[(m, 1)], times[key], strict=True)),
                "label_voxels_differing_vs_reference": diff[key],
                "same_objects_as_reference": same_objects[key],
                "objects": len(ref[m].objects),
            }
            print(f"{m:6s} batch {b}: {rows[f'{m} batch {b}']['slices_per_s']:.2f} slices/s, "
                  f"{rows[f'{m} batch {b}']['speedup_vs_slice_by_slice']:.2f}x, differing voxels {diff[key]:.2g}")  # fmt: skip
    manifest = json.loads((a.model_dir / "manifest.json").read_text())
    doc = {
        "what": "segment_volume(batch_size=B) vs slice by slice, same volume, interleaved rounds (issue 17 batching)",
        "cmd": "python -m benchmarks.volume_batching "
        + " ".join([str(a.model_dir), *(f"--batch {b}" for b in batches[1:]), f"--slices {a.slices}", f"--rounds {a.rounds}"]),
        "model_dir": str(a.model_dir),
        "image_size": manifest["dims"]["image_size"],
        "image_batch_axis": manifest["graphs"]["image_backbone"]["inputs"][0]["shape"][0] == "B",
        "source": manifest["model"].get("source", {}),
        "slices": a.slices,
        "slice_hw": [256, 256],
        "prompts": prompts,
        "rounds": a.rounds,
        "threads": a.threads,
        "machine": machine_info(),
        "load_average_start_end": [load0, list(os.getloadavg())],
        "python": platform.python_version(),
        "rows": rows,
    }
    text = json.dumps(doc, indent=1)
    if a.output:
        a.output.write_text(text)
        print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
