"""Latency of one `segment` call: libmedsam3rt (C API, through ctypes) vs the Python runtime.

Same process, same export, same image, same prompts (from one prompt pack), same thread
count; calls are interleaved so that load from other processes hits every variant alike.
Reports medians and ratios to the Python runtime on the same backend (OpenVINO), plus the
Python runtime on ONNX Runtime CPU for the backend comparison.

    python benchmarks/bench_cpp_vs_python.py MODEL_DIR --lib cpp_bindings/build-ci/libmedsam3rt.so \
        [--repeats 20] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cpp_bindings" / "python"))
from medsam3rt_ctypes import RGB, UINT8, Image, ModelOptions

PROMPTS = ["liver", "left kidney", "polyp"]


class Native:
    def __init__(self, lib_path: Path, model_dir: Path, pack: Path, threads: int) -> None:
        self.lib = ctypes.CDLL(str(lib_path))
        self.lib.medsam3rt_last_error.restype = ctypes.c_char_p
        opts = ModelOptions()
        self._ok(self.lib.medsam3rt_model_options_init(ctypes.byref(opts)))
        opts.num_threads = threads
        self.model, self.prompts = ctypes.c_void_p(), ctypes.c_void_p()
        self._ok(self.lib.medsam3rt_model_open(str(model_dir).encode(), ctypes.byref(opts), ctypes.byref(self.model)))
        self._ok(self.lib.medsam3rt_prompts_load(self.model, str(pack).encode(), ctypes.byref(self.prompts)))

    def _ok(self, status: int) -> None:
        if status:
            raise RuntimeError(self.lib.medsam3rt_last_error().decode())

    def segment(self, rgb: np.ndarray) -> dict[str, float]:
        h, w = rgb.shape[:2]
        img = Image(rgb.ctypes.data, w, h, 0, RGB, UINT8)
        res = ctypes.c_void_p()
        self._ok(self.lib.medsam3rt_segment(self.model, self.prompts, ctypes.byref(img), None, ctypes.byref(res)))
        t = [ctypes.c_double() for _ in range(3)]
        self._ok(self.lib.medsam3rt_result_timings(res, *(ctypes.byref(x) for x in t)))
        self.lib.medsam3rt_result_release(res)
        return {"preprocess": t[0].value, "inference": t[1].value, "postprocess": t[2].value}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--lib", type=Path, default=Path("cpp_bindings/build-ci/libmedsam3rt.so"))
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import medsam3_rt

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import phantom

    image = np.ascontiguousarray(phantom(480, 640))
    with tempfile.TemporaryDirectory() as tmp:
        pack = Path(tmp) / "bench.m3pack"
        cmd = [sys.executable, "-m", "medsam3_rt.cli.main", "prompts", "pack", str(args.model_dir), "-o", str(pack)]
        for p in PROMPTS:
            cmd += ["-p", p]
        subprocess.run(cmd, check=True, capture_output=True)
        native = Native(args.lib, args.model_dir, pack, args.threads)
        py = {b: medsam3_rt.load(args.model_dir, b, threads=args.threads, prompt_packs=[pack]) for b in ("openvino", "ort-cpu")}
        variants = {
            "c++ openvino": lambda: native.segment(image),
            "python openvino": lambda: py["openvino"].segment(image, PROMPTS).timings_ms,
            "python ort-cpu": lambda: py["ort-cpu"].segment(image, PROMPTS).timings_ms,
        }
        for fn in variants.values():  # warm-up: first-run allocations and kernel selection
            fn()
            fn()
        wall: dict[str, list[float]] = {k: [] for k in variants}
        stages: dict[str, dict[str, list[float]]] = {k: {} for k in variants}
        for _ in range(args.repeats):
            for name, fn in variants.items():
                t0 = time.perf_counter()
                st = fn()
                wall[name].append((time.perf_counter() - t0) * 1e3)
                for k, v in st.items():
                    stages[name].setdefault(k, []).append(v)
    base = statistics.median(wall["python openvino"])
    result = {
        "model": str(args.model_dir),
        "image": [480, 640, 3],
        "prompts": len(PROMPTS),
        "threads": args.threads,
        "repeats": args.repeats,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "medians_ms": {k: round(statistics.median(v), 2) for k, v in wall.items()},
        "ratio_to_python_openvino": {k: round(statistics.median(v) / base, 3) for k, v in wall.items()},
        "stage_medians_ms": {k: {s: round(statistics.median(v), 2) for s, v in st.items()} for k, st in stages.items()},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
