"""int8 on the bundled demo model (issue 17 item 3): Dice per prompt and speed, fp32 vs int8 ORT vs int8 OpenVINO.

    python benchmarks/quantize_demo.py [--max-images N] [--rounds R] [--output benchmarks/results/quantize-demo.json]

One command, re-runnable on whatever model `medsam3_rt.demo_model_dir()` holds:

1. Calibration folder: 16 slices of the Colin27 T1 (mricron-data) from the demo recipe's
   *training* blocks (sagittal 70-126 and coronal 100-156, every 8th), written as PNG.
2. `medsam3-rt quantize` itself (the real command, `--max-dice-drop 100` so every variant is
   recorded) for: ORT MinMax / Percentile / Entropy, per-channel and per-tensor, the heads
   quantised too (`--keep-fp32 none`), NNCF for OpenVINO, and the default (automatic) choice.
3. Accuracy against the atlas labels on the demo report's held-out slices (the blocks in
   `medsam3_rt/demo/report.json` -> corpus.split.val_groups, T1 and skull-stripped, every
   slice; `medsam3_training.recipes.demo_brain.heldout_sources`), the 9 concepts as prompts:
   Dice per concept for fp32 (ORT, OpenVINO) and every int8 variant, and the drop in points.
4. Speed, 2 threads, one held-out slice with the 9 prompts (cached): the runtime's own stage
   times (backbone, detector) and end to end `segment`, fp32 ORT / int8 ORT / fp32 OpenVINO /
   int8 OpenVINO, next to transformers eager fp32 (a `Sam3Model` of the demo preset with random
   weights: same architecture and work, so the same speed; the runtime's pre/post-processing),
   all interleaved round by round in one process.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

import medsam3_rt
from medsam3_rt.profiling import machine_info

OUT = Path(__file__).parent / "results" / "quantize-demo.json"
CH2 = Path("/usr/share/mricron/templates/ch2.nii.gz")
THREADS = 2
# label -> extra `medsam3-rt quantize` arguments
VARIANTS: dict[str, list[str]] = {
    "ort minmax": ["--graphs", "backbone,detector"],
    "ort percentile": ["--graphs", "backbone,detector", "--method", "percentile"],
    "ort entropy": ["--graphs", "backbone,detector", "--method", "entropy"],
    "ort minmax per-tensor": ["--graphs", "backbone,detector", "--per-tensor"],
    "ort minmax heads int8": ["--graphs", "backbone,detector", "--keep-fp32", "none"],
    "openvino nncf": ["--graphs", "backbone,detector", "--engine", "openvino"],
    "ort auto": [],
}


def write_calibration(folder: Path) -> list[str]:
    from medsam3_training.data.sources import load_volume, take_slice, volume_to_uint8

    vol, _ = load_volume(CH2)
    vol8 = volume_to_uint8(vol, None)
    names = []
    for axis, idx in [("sagittal", i) for i in range(70, 127, 8)] + [("coronal", i) for i in range(100, 157, 8)]:
        name = f"colin27_{axis}_{idx:03d}.png"
        cv2.imwrite(str(folder / name), take_slice(vol8, axis, idx))
        names.append(name)
    return names


def run_quantize(model: Path, calib: Path, out: Path, extra: list[str], prompts: list[str]) -> dict[str, Any]:
    cmd = ["medsam3-rt", "quantize", str(model), str(calib), "--output", str(out), "--max-dice-drop", "100", "--threads", str(THREADS)]
    cmd += extra + [a for p in prompts for a in ("-p", p)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"args": extra, "error": proc.stderr.strip().splitlines()[-1], "wall_s": wall}
    rec = json.loads((out / "manifest.json").read_text())["quantization"]
    rec["calibration"]["folder"] = "colin27 T1 training-block slices (benchmarks/quantize_demo.py)"
    return {"args": extra, "wall_s": wall, "stdout": proc.stdout.strip().splitlines()[-12:], "record": rec}


def accuracy(dirs: dict[str, tuple[Path, str]], work: Path, max_images: int | None) -> dict[str, Any]:
    from medsam3_training.evaluate import RuntimePredictor, evaluate
    from medsam3_training.recipes import demo_brain as demo

    report = json.loads((medsam3_rt.demo_model_dir().parent / "report.json").read_text())
    val = report["corpus"]["split"]["val_groups"]
    (work / "run").mkdir(parents=True, exist_ok=True)
    (work / "run" / "split.json").write_text(json.dumps({"datasets": {demo.DATASET: {"val": val}}}))
    sources, refs, _ = demo.heldout_sources(work)
    preds = [RuntimePredictor(d, backend, name=label) for label, (d, backend) in dirs.items()]
    rep = evaluate(sources, refs, preds, max_images=max_images)
    for p in preds:
        p.close()
    out: dict[str, Any] = {"images": rep["images"], "val_groups": val, "predictors": {}}
    for label, (_, backend) in dirs.items():
        p = rep["predictors"][label]
        ref_label = "fp32 openvino" if backend == "openvino" else "fp32 ort"
        ref = rep["predictors"][ref_label]
        per_concept: dict[str, dict[str, float]] = {}
        for ds, d in p["datasets"].items():
            for c, v in d["concepts"].items():
                if not v.get("n"):  # the concept is in none of these images' ground truth
                    continue
                r = ref["datasets"][ds]["concepts"][c]
                per_concept.setdefault(c, {"dice": 0.0, "drop_points": 0.0, "n": 0})
                per_concept[c]["dice"] += v["dice"] * v["n"]
                per_concept[c]["drop_points"] += 100 * (r["dice"] - v["dice"]) * v["n"]
                per_concept[c]["n"] += v["n"]
        for v in per_concept.values():
            v["dice"] /= max(v["n"], 1)
            v["drop_points"] /= max(v["n"], 1)
        out["predictors"][label] = {
            "backend": backend,
            "mean_dice": p["mean"]["dice"],
            "mean_dice_drop_points_vs_fp32": 100 * (ref["mean"]["dice"] - p["mean"]["dice"]),
            "dice_by_source": {k: v["dice"] for k, v in p["datasets"].items()},
            "per_concept": per_concept,
        }
    return out


class EagerTimer:
    """transformers eager fp32 `Sam3Model` of a preset (the demo's by default), random weights, behind the
    runtime's pre/post-processing (`medsam3_training.evaluate.TorchPredictor`)."""

    def __init__(self, preset: str | None = None) -> None:
        import torch
        from medsam3_export.checkpoint import random_checkpoint
        from medsam3_export.tokenizer_files import checkpoint_tokenizer
        from medsam3_training.evaluate import TorchPredictor
        from medsam3_training.recipes.demo_brain import PRESET, PROMPT_SEMANTICS

        torch.set_num_threads(THREADS)
        det = random_checkpoint(preset or PRESET, video=False, seed=0, init_std=0.05).detector.eval()
        tok, _ = checkpoint_tokenizer(None)
        self.pred = TorchPredictor(det, tok, prompt_semantics=PROMPT_SEMANTICS)
        self.det = det
        self.backbone_ms = 0.0
        inner = det.get_vision_features

        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            r = inner(*a, **k)
            self.backbone_ms = 1e3 * (time.perf_counter() - t0)
            return r

        det.get_vision_features = timed  # type: ignore[method-assign]

    def segment(self, image: np.ndarray, prompts: list[str]) -> dict[str, float]:
        t0 = time.perf_counter()
        self.pred.predict(image, prompts)
        total = 1e3 * (time.perf_counter() - t0)
        return {"total": total, "backbone": self.backbone_ms}


def speed(
    dirs: dict[str, tuple[Path, str]], image: np.ndarray, prompts: list[str], rounds: int, preset: str | None = None
) -> dict[str, Any]:
    """Median stage and end-to-end times, every candidate once per round (warm, prompts cached)."""
    segs = {label: medsam3_rt.load(d, backend, threads=THREADS) for label, (d, backend) in dirs.items()}
    eager = EagerTimer(preset)
    samples: dict[str, dict[str, list[float]]] = {k: {"total": [], "backbone": [], "detector": []} for k in [*segs, "transformers eager"]}
    for r in range(rounds + 2):  # two warm-up rounds (prompt cache, lazy allocations)
        for label, seg in segs.items():
            t0 = time.perf_counter()
            res = seg.segment(image, prompts)
            total = 1e3 * (time.perf_counter() - t0)
            if r >= 2:
                samples[label]["total"].append(total)
                samples[label]["backbone"].append(res.timings_ms.get("backbone", float("nan")))
                samples[label]["detector"].append(res.timings_ms.get("detector", float("nan")))
        t = eager.segment(image, prompts)
        if r >= 2:
            samples["transformers eager"]["total"].append(t["total"])
            samples["transformers eager"]["backbone"].append(t["backbone"])
    for s in segs.values():
        s.close()
    med = {k: {st: float(np.median(v)) for st, v in d.items() if v} for k, d in samples.items()}
    base = med["transformers eager"]["total"]
    ort32 = med["fp32 ort"]
    for m in med.values():
        m["speedup_vs_transformers_eager"] = base / m["total"]
        m["total_over_fp32_ort"] = m["total"] / ort32["total"]
        for st in ("backbone", "detector"):
            if st in m and st in ort32:
                m[f"{st}_over_fp32_ort"] = m[st] / ort32[st]
    return {"median_ms": med, "rounds": rounds, "samples_ms": samples}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-images", type=int, default=None, help="held-out images per source (default: all)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--variant", action="append", default=None, help=f"only these variants ({', '.join(VARIANTS)})")
    ap.add_argument("--output", type=Path, default=OUT)
    a = ap.parse_args()
    from medsam3_training.recipes.demo_brain import CONCEPTS

    model = medsam3_rt.demo_model_dir()
    prompts = list(CONCEPTS)
    variants = {k: v for k, v in VARIANTS.items() if not a.variant or k in a.variant}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="quantize-demo-") as tmp_s:
        tmp = Path(tmp_s)
        calib = tmp / "calib"
        calib.mkdir()
        calib_names = write_calibration(calib)
        runs: dict[str, Any] = {}
        dirs: dict[str, tuple[Path, str]] = {"fp32 ort": (model, "ort-cpu"), "fp32 openvino": (model, "openvino")}
        for label, extra in variants.items():
            print(f"quantize: {label}", flush=True)
            out = tmp / label.replace(" ", "-")
            runs[label] = run_quantize(model, calib, out, extra, prompts)
            if "record" in runs[label]:
                dirs[f"int8 {label}"] = (out, "openvino" if "--engine" in extra else "ort-cpu")
            else:
                print(f"  failed: {runs[label]['error']}", flush=True)
        partial: dict[str, Any] = {"cmd": _cmd(a), "partial": True, "quantize_runs": runs}
        a.output.write_text(json.dumps(partial, indent=1))  # a long run keeps what it measured so far
        print("accuracy on the held-out slices", flush=True)
        acc = accuracy(dirs, tmp / "work", a.max_images)
        a.output.write_text(json.dumps({**partial, "accuracy": acc}, indent=1))
        print("speed", flush=True)
        from medsam3_rt.demo import SAMPLES_DIR

        image = cv2.imread(str(SAMPLES_DIR / "colin27_sagittal_066.png"), cv2.IMREAD_GRAYSCALE)
        timed = {k: v for k, v in dirs.items() if k in ("fp32 ort", "fp32 openvino", "int8 ort minmax", "int8 openvino nncf")}
        if "int8 ort auto" in dirs:
            timed["int8 ort auto"] = dirs["int8 ort auto"]
        spd = speed(timed, image, prompts, a.rounds)
    from medsam3_bench.peak import measure_gemm_peak, measure_int8_gemm_peak

    result = {
        "cmd": _cmd(a),
        "model": {"dir": "medsam3_rt.demo_model_dir()", "manifest_sha256": _sha(model / "manifest.json")},
        "machine": machine_info(),
        "platform": platform.platform(),
        "threads": THREADS,
        "gemm_peak_gflops": {"fp32": measure_gemm_peak(), "int8": measure_int8_gemm_peak(threads=THREADS)},
        "prompts": prompts,
        "calibration_images": calib_names,
        "quantize_runs": runs,
        "accuracy": acc,
        "speed": spd,
        "wall_s": time.perf_counter() - t_start,
    }
    a.output.write_text(json.dumps(result, indent=1))
    print(f"wrote {a.output}")


def _cmd(a: argparse.Namespace) -> str:
    return "python benchmarks/quantize_demo.py" + (f" --max-images {a.max_images}" if a.max_images else "")


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


if __name__ == "__main__":
    shutil.which("medsam3-rt") or sys.exit("medsam3-rt is not on PATH: activate the environment first")
    main()
