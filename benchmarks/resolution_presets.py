"""Resolution presets (issue 17 item 4): Dice cost and speed of exporting at a lower input size.

    python benchmarks/resolution_presets.py CHECKPOINT --work DIR [--size 224 --size 168 ...]
        [--max-images 120] [--rounds 20] [--output benchmarks/results/NAME.json]

CHECKPOINT is a Hugging Face SAM3 directory; with `--demo-split` (a demo recipe's split.json)
accuracy is measured on that recipe's held-out Colin27 slices (mricron-data), Dice against the
atlas labels per size and the agreement (Dice) of each size's masks with the checkpoint-size
export's. Speed: every size's export segments the same image round-robin, round after round
(machine load hits all alike), ratios to the checkpoint size are medians of per-round ratios;
FLOPs per graph from `medsam3_bench.flops`. Every export goes through `medsam3-rt export`'s
own code with its parity check against the resized PyTorch model.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
from medsam3_bench.flops import image_graph_flops
from medsam3_bench.peak import measure_gemm_peak

import medsam3_rt
from medsam3_rt.profiling import machine_info


def _export(ckpt, size: int, out: Path) -> dict:
    from medsam3_export.exporter import ExportOptions, export_model

    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    m = export_model(ckpt, out, options=ExportOptions(image_size=size))
    worst = max(v["max_abs"] for v in m.parity["worst"].values())
    return {"dir": str(out), "export_s": time.perf_counter() - t0, "parity_passed": m.parity["passed"], "parity_worst_max_abs": worst}


def _speed(dirs: dict[int, Path], image: np.ndarray, prompts: list[str], rounds: int) -> dict[int, dict]:
    segs = {n: medsam3_rt.load(d, "ort-cpu") for n, d in dirs.items()}
    times: dict[int, dict[str, list[float]]] = {n: {"total": [], "backbone": [], "detector": []} for n in dirs}
    for r in range(rounds + 1):
        for n, seg in segs.items():
            t0 = time.perf_counter()
            res = seg.segment(image, prompts)
            if r == 0:
                continue  # warm-up
            times[n]["total"].append((time.perf_counter() - t0) * 1e3)
            times[n]["backbone"].append(res.timings_ms["backbone"])
            times[n]["detector"].append(res.timings_ms["detector"])
    full = max(dirs)
    out = {}
    for n in dirs:
        row = {f"{k}_p50_ms": statistics.median(v) for k, v in times[n].items()}
        for k in ("total", "backbone"):
            row[f"{k}_speedup_vs_{full}"] = statistics.median(b / a for a, b in zip(times[n][k], times[full][k], strict=True))
        out[n] = row
    for seg in segs.values():
        seg.close()
    return out


def _accuracy(dirs: dict[int, Path], split: Path, max_images: int | None) -> dict:
    """Held-out Dice of every size, all sizes on the same slices in one pass."""
    from medsam3_training.evaluate import RuntimePredictor, evaluate
    from medsam3_training.recipes import demo_brain as demo

    if split.parent.name != "run" or not split.is_file():
        raise SystemExit(f"--demo-split must be WORK/run/split.json of the demo recipe, got {split}")
    sources, refs, _ = demo.heldout_sources(split.parent.parent)
    sizes = sorted(dirs, reverse=True)  # the checkpoint's size first: the reference
    preds = [RuntimePredictor(dirs[n], "ort-cpu", name=f"{n}px") for n in sizes]
    rep = evaluate(sources, refs, preds, max_images=max_images)
    for pr in preds:
        pr.close()
    ref = rep["predictors"][f"{sizes[0]}px"]["mean"]["dice"]
    out = {}
    for n in sizes:
        p = rep["predictors"][f"{n}px"]
        out[n] = {
            "dice": p["mean"]["dice"],
            "iou": p["mean"]["iou"],
            "dice_by_source": {k: v["dice"] for k, v in p["datasets"].items()},
            "dice_delta_points_vs_checkpoint_size": 100 * (p["mean"]["dice"] - ref),
        }
    return {"images": rep["images"], "per_size": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--work", type=Path, required=True, help="folder for the exports (one per size)")
    ap.add_argument("--size", type=int, action="append", default=None)
    ap.add_argument("--demo-split", type=Path, default=None, help="WORK/run/split.json of the demo recipe: held-out Dice")
    ap.add_argument("--max-images", type=int, default=None, help="held-out images per source (default: all)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--prompt", action="append", default=None)
    ap.add_argument("--note", default="")
    ap.add_argument("--output", type=Path, default=None)
    a = ap.parse_args()
    from medsam3_export import load_checkpoint
    from medsam3_export.exporter import model_dims

    ckpt = load_checkpoint(a.checkpoint)
    full = model_dims(ckpt).image_size
    sizes = sorted(set(a.size or []) | {full}, reverse=True)
    a.work.mkdir(parents=True, exist_ok=True)
    exports = {n: _export(ckpt, n, a.work / f"export-{n}") for n in sizes}
    dirs = {n: Path(e["dir"]) for n, e in exports.items()}
    prompts = a.prompt or ["brain", "frontal lobe"]
    yy, xx = np.mgrid[:256, :256]
    image = np.clip(60 + 120 * np.exp(-((yy - 128) ** 2 + (xx - 120) ** 2) / 4000.0), 0, 255).astype(np.uint8)
    peak = measure_gemm_peak()
    speed = _speed(dirs, image, prompts, a.rounds)
    flops = {}
    for n, d in dirs.items():
        seg = medsam3_rt.load(d, "ort-cpu", verify="size")
        flops[n] = {g: f.total / 1e9 for g, f in image_graph_flops(d, seg.manifest, len(prompts)).items()}
        seg.close()
    acc = _accuracy(dirs, a.demo_split, a.max_images) if a.demo_split else None
    doc = {
        "what": "resolution presets: export at N px vs the checkpoint's size (issue 17 item 4)",
        "checkpoint": str(a.checkpoint),
        "checkpoint_image_size": full,
        "note": a.note,
        "machine": machine_info(),
        "python": platform.python_version(),
        "fp32_gemm_peak_gflops": peak,
        "prompts": prompts,
        "speed_rounds": a.rounds,
        "sizes": {
            str(n): {
                **exports[n],
                "manifest_resolution": json.loads((dirs[n] / "manifest.json").read_text())["model"]["resolution"],
                "gflop": flops[n],
                **speed[n],
                **({"accuracy": acc["per_size"][n]} if acc else {}),
            }
            for n in sizes
        },
        "heldout_images": acc["images"] if acc else None,
    }
    text = json.dumps(doc, indent=1, default=float)
    print(text)
    if a.output:
        a.output.write_text(text)


if __name__ == "__main__":
    main()
