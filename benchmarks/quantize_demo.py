"""Accuracy of `medsam3-rt quantize` on the bundled demo model: colin27 held-out sagittal slices 60-69.

Writes the slices as PNG, runs the real command (gate bound 100 so the numbers are always
recorded), and stores the manifest's quantization record in benchmarks/results/quantize-demo.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import nibabel as nib
import numpy as np

import medsam3_rt

CH2 = Path("/usr/share/mricron/templates/ch2.nii.gz")
OUT = Path(__file__).parent / "results" / "quantize-demo.json"


def _backbone_timing(fp32_dir: Path, int8_dir: Path, calib: Path, rounds: int = 7) -> dict[str, Any]:
    """Median backbone time of fp32 and int8 (ORT CPU, 2 threads), interleaved in one run."""
    import onnxruntime as ort

    from medsam3_rt import graph_contract as gc
    from medsam3_rt.io.images import list_images, read_image
    from medsam3_rt.manifest import load_manifest
    from medsam3_rt.preprocess import pixel_values

    sessions = {}
    for label, d in (("fp32", fp32_dir), ("int8", int8_dir)):
        man = load_manifest(d, verify="none")
        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        sessions[label] = ort.InferenceSession(str(d / man.graph(gc.IMAGE_BACKBONE).file), so, providers=["CPUExecutionProvider"])
    feeds = {gc.PIXEL_VALUES: pixel_values(read_image(list_images(calib)[0]), man.preprocess)}
    samples: dict[str, list[float]] = {k: [] for k in sessions}
    for r in range(rounds + 1):
        for label, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feeds)
            if r:
                samples[label].append(1000 * (time.perf_counter() - t0))
    med = {k: float(np.median(v)) for k, v in samples.items()}
    return {"median": med, "int8_over_fp32": med["int8"] / med["fp32"], "samples": samples}


def main() -> None:
    vol = np.asarray(nib.load(CH2).dataobj, dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        calib = Path(tmp) / "calib"
        calib.mkdir()
        for x in range(60, 70):
            s = np.rot90(vol[x])
            s = (255 * (s - s.min()) / max(float(np.ptp(s)), 1e-6)).astype(np.uint8)
            cv2.imwrite(str(calib / f"colin27_sagittal_{x:03d}.png"), s)
        out = Path(tmp) / "int8"
        cmd = ["medsam3-rt", "quantize", str(medsam3_rt.demo_model_dir()), str(calib), "--output", str(out), "--max-dice-drop", "100"]
        cmd += [a for p in sys.argv[1:] for a in ("-p", p)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        print(proc.stdout, proc.stderr)
        proc.check_returncode()
        record = json.loads((out / "manifest.json").read_text())["quantization"]
        timing = _backbone_timing(medsam3_rt.demo_model_dir(), out, calib)
    record["calibration"]["folder"] = "colin27 (mricron ch2) sagittal slices 60-69 as PNG"
    OUT.write_text(
        json.dumps(
            {
                "cmd": " ".join(cmd[:2] + ["<demo>", "<calib>", "--max-dice-drop", "100"]),
                "backbone_timing_ms": timing,
                "quantization": record,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
