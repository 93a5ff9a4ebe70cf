"""Issue 17 goals side by side: speed of every CPU lever against transformers eager, and its Dice cost.

    python -m benchmarks.edge_pareto speed SMALL_EXPORT SMALL_EXPORT_AT_336 --work DIR
        [--rounds 8] [--frames 8] [--threads 1] [--output benchmarks/results/edge-pareto-small]
    python -m benchmarks.edge_pareto accuracy DEMO_CHECKPOINT --work DIR [--size 168 --size 154 --size 140]
        [--max-images N] [--output benchmarks/results/edge-pareto-demo.json]

`speed`: the `small` preset (504 px, random weights; make the two exports with
`medsam3-rt export small --random [--image-size 336]`). `medsam3-rt quantize` (ORT static
QDQ, MinMax, backbone + detector, calibrated on 4 Colin27 T1 slices, `--max-dice-drop 100`:
random weights have no accuracy to keep) writes the int8 versions of both, then ONE
`medsam3-rt bench` invocation measures, interleaved round by round with the same inputs and
1 thread each: transformers eager fp32 (the baseline, rebuilt from the preset and seed), our
fp32 export (`ort-cpu`), int8, fp32 at 336 px, int8 at 336 px, 2D `segment` with a cached
prompt, and streaming slices (detector + tracker) with `detect_every` 2 and 4 on the
fastest export (int8 at 336 px) and the largest k on fp32 at 504 px. Writes OUTPUT.json / OUTPUT.md (the bench's own JSON and report).

`accuracy`: the same levers on the bundled demo model (224 px, trained), whose checkpoint is
read back from its ONNX graphs (`python -m medsam3_training.recipes.demo_brain recover --work
W` -> W/run/best). Exports at each `--size` from that checkpoint, int8 of the bundle and of
every size (same quantize settings, calibrated on 16 Colin27 training-block slices with the 9
concepts), held-out Dice per concept against the atlas labels on the demo report's held-out
slices, and the drop in Dice points against the fp32 bundle. The demo model's token grid is 16
(224 px); 336/504 on `small` is 2/3 of its grid, between 154 (11/16) and 140 (10/16) here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"


def _quantize(model: Path, calib: Path, out: Path, prompts: list[str]) -> dict[str, Any]:
    from benchmarks.quantize_demo import run_quantize

    if (out / "manifest.json").is_file():
        rec = json.loads((out / "manifest.json").read_text())["quantization"]
        return {"reused": str(out), "record": rec}
    print(f"quantize {model} -> {out}", flush=True)
    run = run_quantize(model, calib, out, ["--graphs", "backbone,detector"], prompts)  # 2 threads (quantize_demo)
    if "record" not in run:
        raise SystemExit(f"quantize failed for {model}: {run['error']}")
    return run


def speed(a: argparse.Namespace) -> None:
    from benchmarks.quantize_demo import write_calibration

    a.work.mkdir(parents=True, exist_ok=True)
    calib = a.work / "calib-small"
    if not calib.is_dir():
        calib.mkdir()
        names = write_calibration(calib)
        for extra in names[6:]:  # 6 images: 4 to calibrate, 2 for the gate
            (calib / extra).unlink()
    prompt = "brain"
    runs = {
        "int8": _quantize(a.export, calib, a.work / "small-int8", [prompt]),
        "int8-336": _quantize(a.export_336, calib, a.work / "small-336-int8", [prompt]),
    }
    (a.work / "quantize-runs.json").write_text(json.dumps(runs, indent=1))
    variants = {
        "int8": a.work / "small-int8",
        "fp32-336": a.export_336,
        "int8-336": a.work / "small-336-int8",
    }
    cmd = ["medsam3-rt", "bench", str(a.export), "--baseline", "on", "--baseline-device", "cpu", "-p", prompt]
    cmd += ["--threads", str(a.threads), "--rounds", str(a.rounds), "--frames", str(a.frames), "--warmup", "1"]
    cmd += ["--tracker-rounds", "3", "--json", f"{a.output}.json", "--markdown", f"{a.output}.md"]
    for name, d in variants.items():
        cmd += ["--variant", f"{name}={d}"]
    for k in a.k:  # tracker-only slices on the fastest export, and the largest k alone on fp32
        cmd += ["--variant", f"int8-336-k{k}={variants['int8-336']},detect_every={k}"]
    cmd += ["--variant", f"fp32-k{max(a.k)}={a.export},detect_every={max(a.k)}"]
    print(" ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    res = json.loads(Path(f"{a.output}.json").read_text())
    res["settings"]["edge_pareto"] = {
        "quantize": {k: v["record"]["method"] for k, v in runs.items()},
        "load_average_at_end": list(os.getloadavg()),
        "bench_wall_s": time.perf_counter() - t0,
        "cmd": "python -m benchmarks.edge_pareto speed " + " ".join(map(str, [a.export, a.export_336])),
    }
    Path(f"{a.output}.json").write_text(json.dumps(res, indent=1))
    print(f"wrote {a.output}.json and {a.output}.md")


def accuracy(a: argparse.Namespace) -> None:
    from medsam3_training.recipes.demo_brain import CONCEPTS

    import medsam3_rt
    from benchmarks.quantize_demo import accuracy as heldout
    from benchmarks.quantize_demo import write_calibration
    from benchmarks.resolution_presets import _export
    from medsam3_rt.profiling import machine_info

    a.work.mkdir(parents=True, exist_ok=True)
    calib = a.work / "calib-demo"
    if not calib.is_dir():
        calib.mkdir()
        write_calibration(calib)
    prompts = list(CONCEPTS)
    bundle = medsam3_rt.demo_model_dir()
    dirs: dict[str, tuple[Path, str]] = {"fp32 ort": (bundle, "ort-cpu")}
    runs: dict[str, Any] = {"int8 224": _quantize(bundle, calib, a.work / "int8-224", prompts)}
    dirs["int8 224"] = (a.work / "int8-224", "ort-cpu")
    exports: dict[int, Any] = {}
    from medsam3_export import load_checkpoint

    ckpt = load_checkpoint(a.checkpoint)
    for n in a.size:
        d = a.work / f"export-{n}"
        if (d / "manifest.json").is_file():
            exports[n] = {"dir": str(d), "reused": True}
        else:
            print(f"export {n} px", flush=True)
            exports[n] = _export(ckpt, n, d)
        dirs[f"fp32 {n}"] = (d, "ort-cpu")
        runs[f"int8 {n}"] = _quantize(d, calib, a.work / f"int8-{n}", prompts)
        dirs[f"int8 {n}"] = (a.work / f"int8-{n}", "ort-cpu")
    print("held-out Dice", flush=True)
    t0 = time.perf_counter()
    acc = heldout(dirs, a.work / "eval", a.max_images)
    doc = {
        "what": "issue 17: Dice cost of int8 and reduced input size on the bundled demo model (held-out Colin27 slices)",
        "cmd": "python -m benchmarks.edge_pareto accuracy "
        + f"{a.checkpoint} "
        + " ".join(f"--size {n}" for n in a.size)
        + (f" --max-images {a.max_images}" if a.max_images else ""),
        "checkpoint": "the bundled demo detector read back from its ONNX graphs (demo_brain recover)",
        "machine": machine_info(),
        "prompts": prompts,
        "exports": exports,
        "quantize_runs": runs,
        "accuracy": acc,
        "eval_wall_s": time.perf_counter() - t0,
        "summary": {
            label: {"mean_dice": p["mean_dice"], "drop_points_vs_fp32_224": p["mean_dice_drop_points_vs_fp32"]}
            for label, p in acc["predictors"].items()
        },
    }
    a.output.write_text(json.dumps(doc, indent=1, default=float))
    for label, s in doc["summary"].items():
        print(f"{label:12s} Dice {100 * s['mean_dice']:.2f}  drop {s['drop_points_vs_fp32_224']:+.2f} points")
    print(f"wrote {a.output}")


def stream_accuracy(a: argparse.Namespace) -> None:
    """Forward tracking on the demo's held-out slabs with the levers combined: Dice per setting vs fp32 224 px, k=1."""
    from medsam3_export import ExportOptions, export_model, load_checkpoint
    from medsam3_training.recipes import demo_brain as demo
    from medsam3_training.volume_eval import dice3d

    import medsam3_rt
    from benchmarks.quantize_demo import write_calibration
    from medsam3_rt.profiling import machine_info

    a.work.mkdir(parents=True, exist_ok=True)
    if not (a.demo_work / "run" / "best" / "config.json").is_file():
        raise SystemExit(
            f"{a.demo_work}/run/best missing: run `python -m medsam3_training.recipes.demo_brain recover --work {a.demo_work}`"
        )
    start = demo.tracker_start(a.demo_work, a.tracker_weights)  # recovered detector + the given tracker
    calib = a.work / "calib-demo"
    if not calib.is_dir():
        calib.mkdir()
        write_calibration(calib)
    prompts = list(demo.CONCEPTS)
    ckpt = load_checkpoint(start)
    dirs: dict[str, Path] = {}
    runs: dict[str, Any] = {}
    for n in [224, *a.size]:
        d = a.work / f"video-{n}"
        if not (d / "manifest.json").is_file():
            print(f"export video {n} px", flush=True)
            export_model(ckpt, d, options=ExportOptions(overwrite=True, prompt_semantics=demo.PROMPT_SEMANTICS, image_size=n))
        dirs[f"fp32 {n}"] = d
        runs[f"int8 {n}"] = _quantize(d, calib, a.work / f"video-{n}-int8", prompts)
        dirs[f"int8 {n}"] = a.work / f"video-{n}-int8"
    slabs = demo.heldout_slabs(a.demo_work)[: a.max_slabs]
    _, track = demo.volume_options()  # the recipe's 3D tracking settings (top-1 starts one object)
    settings = [(label, k) for label in dirs for k in a.k]
    rows: dict[str, Any] = {}
    t_all = time.perf_counter()
    for label, k in settings:
        opts = dataclasses.replace(track, detect_every=k)
        with medsam3_rt.load(dirs[label], "ort-cpu", threads=a.threads) as seg:
            per: dict[str, list[float]] = {}
            t0, n_slices = time.perf_counter(), 0
            for slab in slabs:
                for concept, truth in slab.truths.items():
                    if not truth.any():
                        continue
                    res = seg.segment_volume(slab.image, [concept], window=(0, 255), mode="track", options=opts)
                    per.setdefault(concept, []).append(dice3d(res.labels == 1, truth))
                    n_slices += len(slab.image)
            ms = 1e3 * (time.perf_counter() - t0) / max(n_slices, 1)
        by_concept = {c: float(np.nanmean(v)) for c, v in per.items()}
        name = f"{label} k={k}"
        rows[name] = {"export": label, "detect_every": k, "dice_by_concept": by_concept,
                      "mean_dice": float(np.mean(list(by_concept.values()))), "ms_per_slice": ms}  # fmt: skip
        print(f"{name:16s} forward-tracking Dice {100 * rows[name]['mean_dice']:.2f}  {ms:.0f} ms/slice", flush=True)
    ref = rows["fp32 224 k=1"]["mean_dice"]
    for r in rows.values():
        r["drop_points_vs_fp32_224_k1"] = 100 * (ref - r["mean_dice"])
    doc = {
        "what": "issue 17 streaming: forward-tracking Dice on the demo's held-out slabs per lever (int8, input size, detect_every)",
        "cmd": f"python -m benchmarks.edge_pareto stream-accuracy {a.demo_work} {a.tracker_weights} --work W "
        + " ".join(f"--size {n}" for n in a.size)
        + " "
        + " ".join(f"--k {k}" for k in a.k),
        "model": "demo detector (recovered from the bundle) + the tracker weights given (the issue 16 candidate)",
        "tracking_options": repr(track),
        "slabs": [f"{s.dataset} / {s.name} ({len(s.image)} slices)" for s in slabs],
        "machine": machine_info(),
        "threads": a.threads,
        "quantize_runs": runs,
        "rows": rows,
        "wall_s": time.perf_counter() - t_all,
    }
    a.output.write_text(json.dumps(doc, indent=1, default=float))
    print(f"wrote {a.output}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("export", type=Path)
    s.add_argument("export_336", type=Path)
    s.add_argument("--work", type=Path, required=True)
    s.add_argument("--rounds", type=int, default=8)
    s.add_argument("--frames", type=int, default=8)
    s.add_argument("--k", type=int, action="append", default=None)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--output", default=str(RESULTS / "edge-pareto-small"))
    c = sub.add_parser("accuracy")
    c.add_argument("checkpoint", type=Path)
    c.add_argument("--work", type=Path, required=True)
    c.add_argument("--size", type=int, action="append", default=None)
    c.add_argument("--max-images", type=int, default=None)
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--output", type=Path, default=RESULTS / "edge-pareto-demo.json")
    t = sub.add_parser("stream-accuracy")
    t.add_argument("demo_work", type=Path, help="a demo recipe work folder holding run/best (demo_brain recover)")
    t.add_argument("tracker_weights", type=Path, help="tracker weights .safetensors (demo_brain tracker-weights)")
    t.add_argument("--work", type=Path, required=True)
    t.add_argument("--size", type=int, action="append", default=None)
    t.add_argument("--k", type=int, action="append", default=None)
    t.add_argument("--max-slabs", type=int, default=None)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--output", type=Path, default=RESULTS / "edge-pareto-stream-demo.json")
    a = ap.parse_args()
    if a.what == "stream-accuracy":
        a.size = a.size or [140]
        a.k = a.k or [1, 2, 4]
        stream_accuracy(a)
    elif a.what == "speed":
        a.k = a.k or [2, 4]
        speed(a)
    else:
        a.size = a.size or [168, 154, 140]
        accuracy(a)


if __name__ == "__main__":
    main()
