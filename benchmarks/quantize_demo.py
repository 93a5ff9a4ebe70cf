"""Accuracy of `medsam3-rt quantize` on the bundled demo model: colin27 held-out sagittal slices 60-69.

Writes the slices as PNG, runs the real command (gate bound 100 so the numbers are always
recorded), and stores the manifest's quantization record in benchmarks/results/quantize-demo.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np

import medsam3_rt

CH2 = Path("/usr/share/mricron/templates/ch2.nii.gz")
OUT = Path(__file__).parent / "results" / "quantize-demo.json"


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
    record["calibration"]["folder"] = "colin27 (mricron ch2) sagittal slices 60-69 as PNG"
    OUT.write_text(
        json.dumps({"cmd": " ".join(cmd[:2] + ["<demo>", "<calib>", "--max-dice-drop", "100"]), "quantization": record}, indent=1)
    )


if __name__ == "__main__":
    main()
