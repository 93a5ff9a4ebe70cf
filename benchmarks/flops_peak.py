"""Each graph's FLOPs, its achieved GFLOP/s on ONNX Runtime CPU, and this machine's fp32 GEMM peak.

Issue 17 item 5 ("know the limit"): how far a latency is from the hardware. Free dims (the
prompt count P) are bound to --prompts; inputs are zeros of the graph's dtypes (FLOPs and dense
latency do not depend on values). Usage:

    python benchmarks/flops_peak.py [MODEL_DIR] [--prompts 1] [--repeats 20] [--output FILE.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from medsam3_bench.peak import measure_gemm_peak
from medsam3_export.flops import count_flops

_DTYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


def _observed_shapes(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """Shapes of every MatMul/Gemm/Conv operand in one real run: for what static inference leaves open."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output} | {i.name for i in probe.graph.initializer}
    names = []
    for node in probe.graph.node:
        if node.op_type in ("MatMul", "Gemm", "Conv", "ConvTranspose"):
            names += [n for n in [*node.input, *node.output] if n and n not in known and n not in names]
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = sess.run(names, feed)
    return {n: v.shape for n, v in zip(names, outs, strict=True)}


def _graph_row(path: Path, prompts: int, repeats: int) -> dict[str, object]:
    dims = {"P": prompts}
    model = onnx.load(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: np.zeros([d if isinstance(d, int) else dims[d] for d in i.shape], _DTYPES[i.type]) for i in sess.get_inputs()}
    fc = count_flops(model, dims, _observed_shapes(model, feed))
    sess.run(None, feed)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {
        "graph": path.stem,
        "gflop": fc.total / 1e9,
        "gflop_by_op": {k: v / 1e9 for k, v in fc.by_op.items()},
        "uncounted_ops": fc.uncounted,
        "median_ms": med * 1e3,
        "achieved_gflops": fc.total / med / 1e9,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", type=Path, nargs="?", default=Path("medsam3_rt/demo/model"))
    ap.add_argument("--prompts", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--output", type=Path)
    a = ap.parse_args()
    peak = measure_gemm_peak(n=1024, repeats=10)
    rows = [_graph_row(p, a.prompts, a.repeats) for p in sorted(a.model_dir.glob("*.onnx"))]
    for r in rows:
        r["fraction_of_peak"] = r["achieved_gflops"] / peak
    doc = {
        "model_dir": str(a.model_dir),
        "prompts": a.prompts,
        "fp32_gemm_peak_gflops": peak,
        "machine": {"cpu": platform.processor() or platform.machine(), "ort_threads": "default"},
        "graphs": rows,
    }
    text = json.dumps(doc, indent=2)
    print(text)
    if a.output:
        tmp = a.output.with_suffix(".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(a.output)


if __name__ == "__main__":
    main()
