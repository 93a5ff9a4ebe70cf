"""Per-stage latency of the deployment backends on one export, as ratios to ort-cpu in the same run.

    python benchmarks/gpu_backends.py MODEL_DIR --checkpoint CKPT [--backend torch --backend tensorrt ...]
        [--runs 10] [--warmup 2] [--prompts 2] [--output benchmarks/results/NAME.json]

Every backend runs the same image and prompts; each stage (backbone, detector, text encoder
on a cache miss, backbone + detector) is timed with the backend's `synchronize()` before the
clock stops, so GPU work is counted. The reference `ort-cpu` runs in the same process and
the runs are interleaved round by round, so the reported ratio (median of per-round ratios)
cancels the load drift of a shared machine; absolute milliseconds do not. The JSON records the machine, library versions
and, for CUDA, the device name and driver.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

import medsam3_rt
from medsam3_rt import graph_contract as gc
from medsam3_rt.backends import BackendOptions, as_numpy
from medsam3_rt.preprocess import pixel_values


def _image(size: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 60 + 120 * xx + 40 * np.sin(yy * 9) + rng.normal(0, 5, (size, size))
    return np.clip(img, 0, 255).astype(np.uint8)


class _Bench:
    """One loaded backend with the four timed stages prepared on the same inputs."""

    def __init__(self, model_dir: Path, backend: str, options: BackendOptions, prompts: list[str]) -> None:
        self.seg = medsam3_rt.load(model_dir, backend, options=options)
        model = self.seg.model
        self.sync = getattr(model.backend, "synchronize", lambda: None)  # GPU backends wait for queued work
        pixels = pixel_values(_image(512), model.manifest.preprocess)
        text = model.text_batch(prompts)
        feats = model.encode_image(pixels)
        self.stages = {
            "image_backbone": lambda: model.encode_image(pixels),
            "detector": lambda: model.detect(feats, text),
            "text_encoder": lambda: model.encode_new_prompts(prompts),
            "backbone+detector": lambda: model.detect(model.encode_image(pixels), text),
        }
        out = model.detect(model.encode_image(pixels), text)
        self.pred_logits = as_numpy(out[gc.PRED_LOGITS]).astype(float)

    def time(self, stage: str) -> float:
        t0 = time.perf_counter()
        self.stages[stage]()
        self.sync()
        return (time.perf_counter() - t0) * 1e3


def bench(model_dir: Path, backends: dict[str, BackendOptions], prompts: list[str], runs: int, warmup: int) -> dict[str, Any]:
    """Runs are interleaved: in every round each backend runs each stage once, so a shared
    machine's load drifts equally over all of them and the per-round ratio cancels it."""
    benches = {name: _Bench(model_dir, name, opts, prompts) for name, opts in backends.items()}
    ref_name = next(iter(benches))
    times: dict[str, dict[str, list[float]]] = {b: {s: [] for s in _STAGES} for b in benches}
    for r in range(warmup + runs):
        for stage in _STAGES:
            for name, b in benches.items():
                t = b.time(stage)
                if r >= warmup:
                    times[name][stage].append(t)
    results: dict[str, Any] = {}
    for name, b in benches.items():
        ratios = {s: [t / max(ref, 1e-9) for t, ref in zip(times[name][s], times[ref_name][s])] for s in _STAGES}
        results[name] = {
            "backend": b.seg.backend_name,
            "median_ms": {s: round(statistics.median(v), 3) for s, v in times[name].items()},
            "ratio_to_" + ref_name: {s: round(statistics.median(v), 3) for s, v in ratios.items()},
            "ratio_range": {s: [round(min(v), 3), round(max(v), 3)] for s, v in ratios.items()},
            "runs_ms": {s: [round(t, 3) for t in v] for s, v in times[name].items()},
            "pred_logits_max_abs_diff_vs_" + ref_name: float(np.abs(b.pred_logits - benches[ref_name].pred_logits).max()),
        }
        b.seg.close()
    return results


_STAGES = ("image_backbone", "detector", "text_encoder", "backbone+detector")


def environment() -> dict[str, Any]:
    import onnxruntime

    env: dict[str, Any] = {
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "medsam3_rt": medsam3_rt.__version__,
    }
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            env["cuda_device"] = torch.cuda.get_device_name(0)
            env["cuda"] = torch.version.cuda
    except ImportError:
        pass
    try:
        import os

        env["cpu_count"] = os.cpu_count()
        with open("/proc/cpuinfo") as f:
            env["cpu_model"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--checkpoint", type=Path, help="for --backend torch")
    ap.add_argument("--backend", action="append", default=[], help="backend to compare with ort-cpu (repeat)")
    ap.add_argument("--precision", default=None, help="torch/tensorrt precision (default: backend's own)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--output", type=Path)
    args = ap.parse_args()
    prompts = ["polyp", "left kidney", "liver", "fetal head", "placenta", "spleen"][: args.prompts]
    if args.threads:
        import contextlib

        with contextlib.suppress(ImportError):
            import torch

            torch.set_num_threads(args.threads)
    options = {
        b: BackendOptions(intra_op_threads=args.threads, checkpoint=args.checkpoint, precision=None if b == "ort-cpu" else args.precision)
        for b in ["ort-cpu", *args.backend]
    }
    results = bench(args.model_dir, options, prompts, args.runs, args.warmup)
    for name, r in results.items():
        print(f"{name:10s} median ms {r['median_ms']}")
        print(f"{'':10s} ratio to ort-cpu {r['ratio_to_ort-cpu']} (range {r['ratio_range']})")
    manifest = medsam3_rt.load_manifest(args.model_dir, verify="none")
    report = {
        "model": {"dims": manifest.dims.to_json(), "source": manifest.model.get("source")},
        "prompts": prompts,
        "runs": args.runs,
        "warmup": args.warmup,
        "threads": args.threads,
        "environment": environment(),
        "results": results,
    }
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
