"""Throughput of `Segmenter.segment_batch` against one image at a time (issue 17 item 6).

    python benchmarks/batching.py MODEL_DIR [--batch 2 --batch 4 --batch 8] [--images 16]
        [--rounds 3] [--threads N] [--output benchmarks/results/NAME.json]

MODEL_DIR should be an export made with `--batch-axis` (an export without it still runs,
the backbone then going image by image: the gain left is the shared text lookup). Every mode
segments the same list of synthetic CT-like slices (`medsam3_bench.runner.synthetic_slice`),
modes interleaved round after round so machine load hits all alike; the reported speedup is
the median over rounds of (one-at-a-time time / batched time) for the whole list, and the
results of every batched mode are checked equal to one at a time (scores, label maps).
"""

from __future__ import annotations

import argparse
import json
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
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--prompt", action="append", default=None)
    ap.add_argument("--output", type=Path, default=None)
    a = ap.parse_args()
    batches = sorted(set(a.batch or [2, 4, 8]))
    prompts = a.prompt or ["liver", "left kidney"]
    images = [synthetic_slice(i, (384, 384)) for i in range(a.images)]
    seg = medsam3_rt.load(a.model_dir, "ort-cpu", options=BackendOptions(intra_op_threads=a.threads))
    ref = [seg.segment(im, prompts) for im in images]  # warm-up and the reference results
    for b in batches:
        seg.segment_batch(images[: 2 * b], prompts, batch_size=b)  # warm-up at this batch shape
    modes = [1, *batches]
    times: dict[int, list[float]] = {m: [] for m in modes}
    stages: dict[int, dict[str, list[float]]] = {m: {} for m in modes}
    max_diff: dict[int, float] = {}
    label_disagree: dict[int, float] = {}
    for _ in range(a.rounds):
        for m in modes:
            t0 = time.perf_counter()
            res = [seg.segment(im, prompts) for im in images] if m == 1 else seg.segment_batch(images, prompts, batch_size=m)
            times[m].append(time.perf_counter() - t0)
            for r in res:
                for k, v in r.timings_ms.items():
                    stages[m].setdefault(k, []).append(v)
            if m > 1:
                max_diff[m] = max(max_diff.get(m, 0.0), max(float(np.abs(x.scores - y.scores).max()) for x, y in zip(ref, res)))
                label_disagree[m] = max(
                    label_disagree.get(m, 0.0), max(float((x.label_map != y.label_map).mean()) for x, y in zip(ref, res))
                )
    seg.close()
    rows = {}
    for m in modes:
        rows[str(m)] = {
            "images_per_s": a.images / statistics.median(times[m]),
            "ms_per_image_stages_p50": {k: statistics.median(v) for k, v in stages[m].items()},
            "speedup_vs_one_at_a_time": statistics.median(t1 / tm for t1, tm in zip(times[1], times[m], strict=True)),
            **({"max_score_diff_vs_one_at_a_time": max_diff[m], "max_label_disagreement": label_disagree[m]} if m > 1 else {}),
        }
    manifest = json.loads((a.model_dir / "manifest.json").read_text())
    doc = {
        "what": "segment_batch vs one image at a time, same images, interleaved rounds (issue 17 item 6)",
        "model_dir": str(a.model_dir),
        "image_size": manifest["dims"]["image_size"],
        "image_batch_axis": manifest["graphs"]["image_backbone"]["inputs"][0]["shape"][0] == "B",
        "source": manifest["model"].get("source", {}),
        "images": a.images,
        "input_hw": [384, 384],
        "prompts": prompts,
        "rounds": a.rounds,
        "threads": a.threads,
        "machine": machine_info(),
        "python": platform.python_version(),
        "batch_size": rows,
    }
    text = json.dumps(doc, indent=1)
    print(text)
    if a.output:
        a.output.write_text(text)


if __name__ == "__main__":
    main()
