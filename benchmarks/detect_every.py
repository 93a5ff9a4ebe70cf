"""Cost and agreement of tracker-only frames: `StreamOptions(detect_every=k)` against k=1.

    python benchmarks/detect_every.py MODEL_DIR [--frames 40] [--k 1 --k 2 --k 4 --k 8]
        [--detection-threshold 0.19] [--output benchmarks/results/NAME.json]

Every k streams the same synthetic sequence (a textured slice whose bright disc drifts, as in
tests/tracker/test_streaming.py). Per k: median ms per frame (the streams are pushed
round-robin, frame by frame, so machine load hits every k alike; ratios to k=1 are what
count), the share of frames on which the detector ran, and the agreement of each frame's
label map with k=1's (mean and min IoU of the foreground). With a random-weight model the
agreement says how far the tracker alone drifts from detect-every-frame on this model, not a
Dice against ground truth: no tracker trained on real data exists yet (issue 16).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

import medsam3_rt
from medsam3_rt.profiling import machine_info


def frame(t: int, h: int = 160, w: int = 192) -> np.ndarray:
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    img = 60 + 80 * xx / w + 30 * np.sin(yy / 9) + rng.normal(0, 6, (h, w))
    img[(yy - h / 2) ** 2 + (xx - w / 4 - (t % 60)) ** 2 < (h / 6) ** 2] = 230
    return np.clip(img, 0, 255).astype(np.uint8)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--k", type=int, action="append", default=None)
    ap.add_argument("--prompt", default="liver")
    ap.add_argument("--detection-threshold", type=float, default=None, help="forced threshold for random-weight models")
    ap.add_argument("--output", type=Path, default=None)
    a = ap.parse_args()
    ks = sorted(set(a.k or [1, 2, 4, 8]) | {1})
    forced = a.detection_threshold
    thr = {} if forced is None else {"detection_threshold": forced, "new_object_threshold": forced}
    with medsam3_rt.load(a.model_dir, "ort-cpu") as seg:
        streams = {k: seg.stream(a.prompt, options=medsam3_rt.StreamOptions(detect_every=k, **thr)) for k in ks}
        ms: dict[int, list[float]] = {k: [] for k in ks}
        labels: dict[int, list[np.ndarray]] = {k: [] for k in ks}
        for t in range(a.frames):
            img = frame(t)
            for k in ks:
                t0 = time.perf_counter()
                res = streams[k].push(img)
                ms[k].append((time.perf_counter() - t0) * 1e3)
                labels[k].append(res.label_map > 0)
        rows = []
        base = statistics.median(ms[1][1:])
        for k in ks:
            ious = [iou(x, y) for x, y in zip(labels[k], labels[1])]
            med = statistics.median(ms[k][1:])
            rows.append({
                "k": k,
                "median_ms_per_frame": med,
                "time_vs_k1": med / base,
                "detector_share": streams[k].detector_frames / a.frames,
                "label_iou_vs_k1_mean": float(np.mean(ious)),
                "label_iou_vs_k1_min": float(np.min(ious)),
                "frames_with_objects": int(sum(x.any() for x in labels[k])),
            })  # fmt: skip
            print(f"k={k}: {med:.1f} ms/frame ({med / base:.2f}x k=1), detector on {streams[k].detector_frames}/{a.frames} frames, "
                  f"label IoU vs k=1 mean {rows[-1]['label_iou_vs_k1_mean']:.3f} min {rows[-1]['label_iou_vs_k1_min']:.3f}")  # fmt: skip
    result = {
        "benchmark": "detect_every",
        "model": str(a.model_dir),
        "frames": a.frames,
        "machine": machine_info(),
        "python": platform.python_version(),
        "rows": rows,
    }
    if a.output:
        a.output.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
