"""Peak RSS and image-encoder time of ort-cpu with and without lean sessions (issue 21).

Each setting runs in its own process, so peak RSS (ru_maxrss) is that setting's alone.
Usage: python -m benchmarks.ort_lean_rss [MODEL_DIR] [--out benchmarks/results/ort-lean-rss.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

_CHILD = """
import json, resource, sys, time
import numpy as np
import medsam3_rt
from medsam3_rt.backends import OrtCpuOptions
model_dir, lean = sys.argv[1], sys.argv[2] == "1"
t0 = time.perf_counter()
with medsam3_rt.load(model_dir, "ort-cpu", options=OrtCpuOptions(lean=lean), verify="none") as seg:
    load_s = time.perf_counter() - t0
    size = int(seg.model.manifest.image_size) if hasattr(seg.model.manifest, "image_size") else 224
    image = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    seg.model.encode_image(image)
    t1 = time.perf_counter()
    for _ in range(3):
        seg.model.encode_image(image)
    encode_s = (time.perf_counter() - t1) / 3
print(json.dumps({"lean": lean, "load_s": load_s, "encode_s": encode_s,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    from medsam3_rt.demo import demo_model_dir

    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir", nargs="?", default=None)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/ort-lean-rss.json"))
    args = ap.parse_args()
    model_dir = args.model_dir or str(demo_model_dir())
    rows = []
    for lean in ("0", "1"):
        proc = subprocess.run([sys.executable, "-c", _CHILD, model_dir, lean], check=True, capture_output=True, text=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    base = rows[0]
    result = {
        "model_dir": model_dir,
        "runs": rows,
        "lean_vs_default": {
            "peak_rss_ratio": rows[1]["peak_rss_mib"] / base["peak_rss_mib"],
            "encode_time_ratio": rows[1]["encode_s"] / base["encode_s"],
        },
        "parent_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
