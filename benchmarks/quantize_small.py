"""int8 speed on the `small` preset (random weights: speed only, issue 17 item 3).

    python -m benchmarks.quantize_small [SMALL_EXPORT] [--rounds R] [--output benchmarks/results/quantize-small.json]

SMALL_EXPORT: an export of the `small` preset (504 px, 12-layer 384-wide ViT, default DETR);
without it one is made with `medsam3-rt export small --random`. `medsam3-rt quantize` then
writes the int8 ORT and int8 OpenVINO (NNCF) versions (backbone + detector, calibrated on 6
Colin27 T1 slices with 1 prompt; `--max-dice-drop 100`: random weights have no accuracy to
keep), and one Colin27 slice is segmented with one cached prompt by fp32 ORT, int8 ORT, fp32
OpenVINO, int8 OpenVINO and transformers eager fp32 (`Sam3Model` of the same preset), 2
threads, interleaved round by round (`benchmarks/quantize_demo.py`'s `speed`).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import tempfile
import time
from pathlib import Path

from medsam3_bench.peak import measure_gemm_peak, measure_int8_gemm_peak

from benchmarks.quantize_demo import THREADS, run_quantize, speed, write_calibration
from medsam3_rt.profiling import machine_info

OUT = Path(__file__).parent / "results" / "quantize-small.json"
PROMPTS = ["brain"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export", type=Path, nargs="?", default=None)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--output", type=Path, default=OUT)
    a = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="quantize-small-") as tmp_s:
        tmp = Path(tmp_s)
        model = a.export
        if model is None:
            model = tmp / "small"
            subprocess.run(["medsam3-rt", "export", "small", "--random", "--output", str(model), "--quiet"], check=True)
        calib = tmp / "calib"
        calib.mkdir()
        names = write_calibration(calib)
        for extra in names[6:]:  # 6 images: 4 to calibrate, 2 for the gate
            (calib / extra).unlink()
        runs = {}
        dirs = {"fp32 ort": (model, "ort-cpu"), "fp32 openvino": (model, "openvino")}
        for label, extra in {"ort minmax": [], "openvino nncf": ["--engine", "openvino"]}.items():
            print(f"quantize: {label}", flush=True)
            out = tmp / label.replace(" ", "-")
            runs[label] = run_quantize(model, calib, out, ["--graphs", "backbone,detector", *extra], PROMPTS)
            if "record" in runs[label]:
                dirs[f"int8 {label}"] = (out, "openvino" if extra else "ort-cpu")
            else:
                print(f"  failed: {runs[label]['error']}", flush=True)
        import cv2

        image = cv2.imread(str(calib / names[0]), cv2.IMREAD_GRAYSCALE)
        print("speed", flush=True)
        spd = speed(dirs, image, PROMPTS, a.rounds, preset="small")
    result = {
        "cmd": "python -m benchmarks.quantize_small" + (f" {a.export}" if a.export else ""),
        "model": "small preset, random weights (speed only)",
        "machine": machine_info(),
        "platform": platform.platform(),
        "threads": THREADS,
        "prompts": PROMPTS,
        "gemm_peak_gflops": {"fp32": measure_gemm_peak(), "int8": measure_int8_gemm_peak(threads=THREADS)},
        "quantize_runs": runs,
        "speed": spd,
        "wall_s": time.perf_counter() - t0,
    }
    a.output.write_text(json.dumps(result, indent=1))
    print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
