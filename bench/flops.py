"""FLOPs of an export's graphs, counted from one profiled ONNX Runtime run (issue 17 item 5).

`medsam3-rt bench` sets each graph's FLOPs against its measured stage time and the machine's
GEMM peak (`peak`). The bench package must not import `onnx` or the export package, so the
count comes from ONNX Runtime's own profiler: one run with graph optimisations off (the ops of
the file, unfused) records every node's input and output shapes, from which MatMul, Gemm, Conv,
ConvTranspose and their integer forms are priced (a multiply-add is 2 FLOPs). The result equals
`medsam3_export.flops.count_flops` on the same graph (tests/export/test_flops.py); ops with
arithmetic this counter cannot price from shapes alone (Einsum) are listed, never guessed.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsam3_rt import graph_contract as gc
from medsam3_rt.manifest import Manifest

__all__ = ["GraphFlops", "count_graph_flops", "image_graph_flops", "zero_feeds"]

# op -> index of the weight input (Conv-like) or None (MatMul-like: K from the first input).
_CONV_WEIGHT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}
_MATMUL = ("MatMul", "MatMulInteger", "QLinearMatMul", "FusedMatMul")
_UNPRICED = ("Einsum", "If", "Loop", "Scan")
# graph -> the bench stage whose time is that graph's run
STAGE_OF_GRAPH = {gc.IMAGE_BACKBONE: "backbone", gc.DETECTOR: "detector", gc.TEXT_ENCODER: "text_encoder"}


@dataclass
class GraphFlops:
    """FLOPs of one graph run at the shapes it was fed, per priced op type."""

    graph: str
    by_op: dict[str, int] = field(default_factory=dict)
    uncounted: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    def to_json(self) -> dict[str, Any]:
        by_op = {k: v / 1e9 for k, v in sorted(self.by_op.items())}
        return {"gflop": self.total / 1e9, "gflop_by_op": by_op, "uncounted_ops": self.uncounted}


def _shapes(entries: list[dict[str, list[int]]]) -> list[list[int]]:
    return [next(iter(e.values())) for e in entries]


def node_flops(op: str, ins: list[list[int]], outs: list[list[int]]) -> int | None:
    """2 x multiply-adds of one node from its input/output shapes; None when `op` is not priced."""
    if op in _CONV_WEIGHT:
        w = ins[_CONV_WEIGHT[op]]
        return 2 * math.prod(outs[0]) * math.prod(w[1:])  # per output: Cin/group x kernel MACs
    if op == "ConvTranspose":  # every input element scatters into Cout/group x kernel outputs
        return 2 * math.prod(ins[0]) * math.prod(ins[1][1:])
    if op in _MATMUL:
        a = ins[0]
        return 2 * math.prod(outs[0]) * (a[-1] if len(a) >= 2 else a[0])
    if op == "Gemm":  # K is A's dim that is not the output's M (transA is not in the profile)
        a, m = ins[0], outs[0][0]
        return 2 * math.prod(outs[0]) * (a[1] if a[0] == m else a[0])
    return None


def count_graph_flops(path: str | Path, feeds: Mapping[str, np.ndarray], graph: str | None = None) -> GraphFlops:
    """FLOPs of one run of the ONNX file `path` on `feeds` (zeros do: dense work does not depend on values)."""
    import onnxruntime as ort

    result = GraphFlops(graph or Path(path).stem)
    with tempfile.TemporaryDirectory(prefix="medsam3-flops-") as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "profile")
        so.log_severity_level = 3
        # pre-packed weights vanish from the profile's input shapes; keep them plain
        so.add_session_config_entry("session.disable_prepacking", "1")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        sess.run(None, dict(feeds))
        events = json.loads(Path(sess.end_profiling()).read_text())
    for ev in events:
        if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        args = ev.get("args", {})
        op = args.get("op_name", "")
        if op in _UNPRICED:
            result.uncounted[op] = result.uncounted.get(op, 0) + 1
            continue
        try:
            flops = node_flops(op, _shapes(args.get("input_type_shape", [])), _shapes(args.get("output_type_shape", [])))
        except IndexError:  # a shape the profile left out: say so rather than undercount silently
            result.uncounted[op] = result.uncounted.get(op, 0) + 1
            continue
        if flops is not None:
            result.by_op[op] = result.by_op.get(op, 0) + flops
    return result


def zero_feeds(spec: gc.GraphSpec, axes: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Zero inputs of a graph with its symbolic axes (P, N, ...) bound by `axes`."""
    feeds = {}
    for t in spec.inputs:
        shape = [d if isinstance(d, int) else int(axes[d]) for d in t.shape]
        feeds[t.name] = np.zeros(shape, np.dtype(t.dtype))
    return feeds


def image_graph_flops(model_dir: str | Path, manifest: Manifest, prompts: int) -> dict[str, GraphFlops]:
    """FLOPs of the 2D path's graphs (backbone once, text encoder and detector for `prompts` prompts)."""
    out = {}
    for name in STAGE_OF_GRAPH:
        entry = manifest.graph(name)
        axes = {"P": prompts, "B": 1}
        out[name] = count_graph_flops(Path(model_dir) / entry.file, zero_feeds(entry.spec, axes), name)
    return out
