"""One attention layer of the full SAM3 ViT on ONNX Runtime CPU: MatMul/Softmax/MatMul vs fused ops (issue 21).

A global ViT attention at 1008 px is 16 heads over 72 x 72 = 5184 tokens (head 64); a windowed
one is 9 windows of 24 x 24 = 576 tokens. Each form (unfused MatMul/Softmax/MatMul, ONNX
`Attention` opset 23, `com.microsoft::MultiHeadAttention`) runs as a one-node graph in its own
process: run time (best of `--repeats`) and the process's peak RSS (VmHWM), with its RSS before
the first run; outputs are checked against the unfused form.

Usage: nice -n 10 python -m benchmarks.attention_layer [--lean] [--out benchmarks/results/attention-layer.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

FORMS = ("unfused", "onnx_attention_23", "ms_multihead_attention")
SHAPES = {"global_1008px": (1, 5184, 16, 64), "windowed_1008px": (9, 576, 16, 64)}

_CHILD = """
import json, sys, time
import numpy as np
import onnx
from onnx import TensorProto as TP, helper as h
import onnxruntime as ort

def mib(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024

form, b, s, n, d, repeats, lean, ref = sys.argv[1], *map(int, sys.argv[2:8]), sys.argv[8]
x = h.make_tensor_value_info("x", TP.FLOAT, [b, s, n * d])
y = h.make_tensor_value_info("y", TP.FLOAT, [b, s, n * d])
opsets = [h.make_opsetid("", 23)]
if form == "ms_multihead_attention":
    nodes = [h.make_node("MultiHeadAttention", ["x", "x", "x"], ["y"], domain="com.microsoft", num_heads=n)]
    opsets.append(h.make_opsetid("com.microsoft", 1))
elif form == "onnx_attention_23":
    nodes = [h.make_node("Attention", ["x", "x", "x"], ["y"], q_num_heads=n, kv_num_heads=n)]
else:
    def c(name, v, t=TP.INT64):
        return h.make_node("Constant", [], [name], value=h.make_tensor(name + "_v", t, [len(v)] if t == TP.INT64 else [], v))
    nodes = [c("s4", [b, s, n, d]), c("s3", [b, s, n * d]), c("sc", [d ** -0.5], TP.FLOAT),
             h.make_node("Reshape", ["x", "s4"], ["r"]), h.make_node("Transpose", ["r"], ["q"], perm=[0, 2, 1, 3]),
             h.make_node("Transpose", ["r"], ["kt"], perm=[0, 2, 3, 1]), h.make_node("MatMul", ["q", "kt"], ["s0"]),
             h.make_node("Mul", ["s0", "sc"], ["sm"]), h.make_node("Softmax", ["sm"], ["p"], axis=-1),
             h.make_node("MatMul", ["p", "q"], ["o"]), h.make_node("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3]),
             h.make_node("Reshape", ["ot", "s3"], ["y"])]
model = h.make_model(h.make_graph(nodes, "g", [x], [y]), opset_imports=opsets)
so = ort.SessionOptions()
if lean:  # as OrtCpuOptions(lean=True)
    so.enable_cpu_mem_arena = False
    so.enable_mem_pattern = False
    so.add_session_config_entry("session.disable_prepacking", "1")
sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
a = np.random.default_rng(0).standard_normal((b, s, n * d), dtype=np.float32) * 0.5
before = mib("VmRSS")
times = []
for _ in range(repeats):
    t = time.perf_counter()
    out = sess.run(None, {"x": a})[0]
    times.append(time.perf_counter() - t)
res = {"run_s": min(times), "rss_before_run_mib": before, "peak_rss_mib": mib("VmHWM")}
if ref == "-":
    np.save(sys.argv[9], out)
else:
    res["max_abs_diff_vs_unfused"] = float(np.abs(out - np.load(ref)).max())
print(json.dumps(res))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/attention-layer.json"))
    ap.add_argument("--work", type=Path, default=Path("/tmp"))
    ap.add_argument("--lean", action="store_true", help="Sessions as OrtCpuOptions(lean=True).")
    args = ap.parse_args()
    import onnxruntime

    result: dict[str, object] = {"onnxruntime": onnxruntime.__version__, "lean_sessions": args.lean, "layers": {}}
    for label, (b, s, n, d) in SHAPES.items():
        ref = args.work / f"attention-layer-{label}.npy"
        rows: dict[str, dict[str, float]] = {}
        for form in FORMS:
            cmd = [sys.executable, "-c", _CHILD, form, str(b), str(s), str(n), str(d), str(args.repeats), str(int(args.lean))]
            cmd += ["-", str(ref)] if form == "unfused" else [str(ref)]
            proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
            rows[form] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(label, form, rows[form], flush=True)
        base = rows["unfused"]
        for form in FORMS[1:]:
            rows[form]["run_time_ratio"] = rows[form]["run_s"] / base["run_s"]
            rows[form]["peak_rss_ratio"] = rows[form]["peak_rss_mib"] / base["peak_rss_mib"]
        ref.unlink(missing_ok=True)
        result["layers"][label] = {"batch": b, "tokens": s, "heads": n, "head_dim": d, "forms": rows}  # type: ignore[index]
    result["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
