"""Throughput of `segment --ray` per actor count against the single-process loop, same studies, same run.

Usage: python benchmarks/scale_ray.py [N_STUDIES]. Studies are crops of the demo slice (real data);
the model is the bundled demo model; each worker and the baseline use 1 ONNX Runtime thread.
Cluster start-up is excluded (it happens once); each actor's model load is included.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from medsam3_rt.backends import BackendOptions
from medsam3_rt.cli.segment import Job, _run_image
from medsam3_rt.io.images import read_image, write_png
from medsam3_rt.scale import segment_studies
from medsam3_rt.scale.ray_batch import connect
from medsam3_rt.segmenter import load

DEMO = Path(__file__).resolve().parents[1] / "medsam3_rt" / "demo"
PROMPTS = ["brain", "lateral ventricle"]


def main(n: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    image = read_image(DEMO / "samples" / "colin27_sagittal_066.png")
    h, w = image.shape[:2]
    studies = []
    for k in range(n):
        p = root / "in" / f"crop{k:03d}.png"
        p.parent.mkdir(exist_ok=True)
        dy, dx = (k % 4) * 4, (k // 4 % 6) * 4
        write_png(p, np.ascontiguousarray(image[dy : h - 16 + dy, dx : w - 24 + dx]))
        studies.append(p)
    t0 = time.perf_counter()
    seg = load(DEMO / "model", "auto", options=BackendOptions(intra_op_threads=1))
    for p in studies:
        _run_image(seg, p, PROMPTS, Job("image", p, p.stem).outputs(root / "single"), 0.0, None)
    base = n / (time.perf_counter() - t0)
    print(f"| single process (1 thread) | {base:.2f} | 1.00 |")
    connect("local", num_cpus=2)
    for actors in (1, 2):
        rep = segment_studies(
            DEMO / "model", studies, PROMPTS, root / f"ray{actors}", actors=actors, settings={"options": BackendOptions(intra_op_threads=1)}
        )
        assert len(rep.written) == n and not rep.failed
        print(f"| ray, {actors} actor(s) x 1 CPU | {rep.studies_per_second:.2f} | {rep.studies_per_second / base:.2f} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 40)
