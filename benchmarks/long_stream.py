"""Per-frame time and RSS over a long live stream whose detector fires on every frame.

Issue 17 item 1 ("bounded by default"). The model is the micro video export of
tests/reliability/test_reliability_stream.py (the tiny preset at 56 px: the runtime's own cost
dominates, as it would on a long device run); the detection thresholds are 0 so every frame
brings detections and the masks keep changing. Two policies side by side in one run:

- `meta` with default options (SAM3's track management, at most 16 objects);
- `transformers` with default options (no removal, the model's cap of 10,000 objects), for
  fewer frames: it slows down as objects pile up, which is the point.

Per-frame time is the median over windows of frames (start vs end), RSS after each window.
Usage:

    python benchmarks/long_stream.py [--frames 2000] [--transformers-frames 300] [--output FILE.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import medsam3_rt
from medsam3_rt.profiling import rss_bytes

MICRO = {"image_size": 56, "fpn_hidden": 64, "vit_hidden": 32, "vit_mlp": 64, "detr_ffn": 64, "num_queries": 8, "tracker_mlp": 64}


def micro_export(folder: Path) -> Path:
    import torch
    from medsam3_export import export_model
    from medsam3_training.config import RandomModelConfig
    from medsam3_training.model import random_model

    ckpt = random_model(RandomModelConfig(preset="tiny", overrides=MICRO, video=True, seed=1, init_std=0.1))
    ckpt.video.eval()
    with torch.no_grad():  # as tests/conftest.py TRACKER_SCORE_SHIFT: the random tracker's masks are not all "present"
        ckpt.video.tracker_model.mask_decoder.pred_obj_score_head.proj_out.bias -= 1.3
    out = folder / "micro-video-export"
    export_model(ckpt, out)
    return out


def frame(t: int, side: int = 32) -> np.ndarray:
    rng = np.random.default_rng(t)
    base = np.full((side, side, 3), 90, np.uint8)
    yy, xx = np.mgrid[:side, :side]
    base[(yy - side // 2) ** 2 + (xx - side // 4 - (t % 20) * side // 40) ** 2 < (side // 6) ** 2] = 230
    return np.clip(base.astype(np.int16) + rng.integers(-40, 40, base.shape), 0, 255).astype(np.uint8)


def rss_mb() -> float:
    return rss_bytes() / 2**20


def run(seg: medsam3_rt.Segmenter, policy: str, frames: int, window: int) -> dict:
    options = medsam3_rt.StreamOptions(policy=policy, detection_threshold=0.0, new_object_threshold=0.0)  # type: ignore[arg-type]
    stream = seg.stream("liver", options=options)
    laps, objects, rss = [], [], []
    for t in range(frames):
        t0 = time.perf_counter()
        stream.push(frame(t))
        laps.append(time.perf_counter() - t0)
        objects.append(stream.num_objects)
        if (t + 1) % window == 0:
            rss.append(round(rss_mb(), 1))
    medians = [statistics.median(laps[i : i + window]) * 1e3 for i in range(0, frames - window + 1, window)]
    return {
        "policy": policy,
        "frames": frames,
        "ms_per_frame_by_window": [round(m, 2) for m in medians],
        "late_over_early": round(medians[-1] / medians[1], 3) if len(medians) > 2 else None,  # window 0 includes warm-up
        "objects_at_end": objects[-1],
        "max_objects_seen": max(objects),
        "objects_created": stream.next_object_id,
        "rss_mb_by_window": rss,
        "rss_growth_after_first_window": round((rss[-1] - rss[0]) / rss[0], 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--transformers-frames", type=int, default=300)
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--output", type=Path, default=Path("benchmarks/results/long-stream-micro.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, medsam3_rt.load(micro_export(Path(tmp)), "ort-cpu", threads=1) as seg:
        results = [run(seg, "meta", args.frames, args.window), run(seg, "transformers", args.transformers_frames, args.window)]
    report = {
        "benchmark": "long_stream",
        "model": "micro video export (tiny preset at 56 px, random weights)",
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "medsam3_rt": medsam3_rt.__version__,
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    for r in results:
        print(
            f"{r['policy']:>12}: {r['frames']} frames, ms/frame by {args.window}: {r['ms_per_frame_by_window']}, "
            f"late/early {r['late_over_early']}, objects at end {r['objects_at_end']} (created {r['objects_created']}), "
            f"RSS {r['rss_mb_by_window'][0]} -> {r['rss_mb_by_window'][-1]} MB"
        )


if __name__ == "__main__":
    main()
