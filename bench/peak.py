"""This machine's measured compute peak (issue 17 item 5): what a speed figure is compared with.

A timed square fp32 GEMM through numpy's BLAS is the best dense rate plain software reaches
here; achieved GFLOP/s of a graph (FLOPs from `medsam3_export.flops`) divided by it says how far
a latency is from the hardware. Best of several runs, so load from other processes lowers it less.
"""

from __future__ import annotations

import math
import time

import numpy as np

__all__ = ["measure_gemm_peak"]


def measure_gemm_peak(n: int = 1024, repeats: int = 5) -> float:
    """Best fp32 GEMM rate of this machine in GFLOP/s (numpy's BLAS, n x n x n, best of `repeats`)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up: thread pool and caches
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9
