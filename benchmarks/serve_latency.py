"""Latency of `medsam3-rt serve` under N concurrent gRPC clients against the in-process Python API, same run.

Usage: python benchmarks/serve_latency.py [REQUESTS] [STUB_ENV]. Requests are 160 x 160 crops of the demo
slice (real data) with two prompts, on the bundled demo model. The server runs one model instance, so
concurrent requests queue: the numbers show the endpoint's overhead and how latency grows with clients.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from medsam3_rt.io.images import read_image
from medsam3_rt.scale.serve import ServeSettings, free_local_ports, start
from medsam3_rt.segmenter import load

DEMO = Path(__file__).resolve().parents[1] / "medsam3_rt" / "demo"
PROMPTS = np.array([b"brain", b"lateral ventricle"], dtype=object)


def _request(url: str, crop: np.ndarray) -> float:
    client = grpcclient.InferenceServerClient(url)
    a = grpcclient.InferInput("IMAGE", [*crop.shape, 1], "UINT8")
    a.set_data_from_numpy(crop[..., None])
    b = grpcclient.InferInput("PROMPTS", [len(PROMPTS)], "BYTES")
    b.set_data_from_numpy(PROMPTS)
    t = time.perf_counter()
    client.infer("segment", [a, b])
    return time.perf_counter() - t


def main(n: int, stub: Path) -> None:
    image = read_image(DEMO / "samples" / "colin27_sagittal_066.png")
    crops = [np.ascontiguousarray(image[k % 24 : k % 24 + 160, k % 24 : k % 24 + 160]) for k in range(n)]
    seg = load(DEMO / "model")
    seg.segment(crops[0], ["brain", "lateral ventricle"])
    local = []
    for c in crops:
        t = time.perf_counter()
        seg.segment(c, ["brain", "lateral ventricle"])
        local.append(time.perf_counter() - t)
    http, grpc, metrics = free_local_ports(3)
    triton = start(DEMO / "model", ServeSettings(http, grpc, metrics, stub_env=stub))
    url = f"127.0.0.1:{grpc}"
    try:
        _request(url, crops[0])
        print(f"python API (in process): median {statistics.median(local) * 1e3:.1f} ms per image")
        print("| clients | median ms | p90 ms | images/s | median vs python API |")
        print("|---|---|---|---|---|")
        for clients in (1, 2, 4, 8):
            t = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                lat = sorted(pool.map(lambda c: _request(url, c), crops))
            wall = time.perf_counter() - t
            med = statistics.median(lat)
            p90 = lat[int(0.9 * (len(lat) - 1))]
            print(f"| {clients} | {med * 1e3:.1f} | {p90 * 1e3:.1f} | {n / wall:.1f} | {med / statistics.median(local):.2f}x |")
    finally:
        triton.stop()


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 48,
        Path(sys.argv[2] if len(sys.argv) > 2 else os.environ.get("MEDSAM3_RT_SERVE_STUB_ENV", ".ci/pytriton-stub")),
    )
