"""FLOPs of an exported ONNX graph (issue 17 item 5).

Speed figures mean little without the distance to the hardware: a graph's FLOPs divided by its
measured latency gives achieved GFLOP/s, to set next to the timed GEMM peak of
`medsam3_bench.peak`.
FLOPs are counted from shapes after ONNX shape inference, with the graph's free (symbolic)
input dimensions bound to concrete values first. Only MatMul, Gemm, Conv, ConvTranspose and
fused attention (com.microsoft::MultiHeadAttention, priced as its two matmuls) are counted
(multiply and add = 2 FLOPs); they carry nearly all of a SAM3 forward's work. Any other
op whose cost is not counted but could matter (Einsum, ops inside subgraphs) is listed in
`FlopCount.uncounted` so a figure never silently claims to be complete.

`onnx` is imported lazily so importing this module stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FlopCount", "count_flops"]

_COUNTED = ("MatMul", "Gemm", "Conv", "ConvTranspose", "MultiHeadAttention")
# Ops with real arithmetic this counter does not price; reported, not guessed.
_UNPRICED = ("Einsum", "MatMulInteger", "QLinearMatMul", "QLinearConv", "ConvInteger", "If", "Loop", "Scan")


@dataclass
class FlopCount:
    """FLOPs per counted op type, and the ops that were seen but not priced."""

    by_op: dict[str, int] = field(default_factory=dict)
    uncounted: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.by_op.values())


def _shape(vi: Any) -> list[int] | None:
    """Concrete dims of a ValueInfo, or None when any dim is unknown."""
    dims = vi.type.tensor_type.shape.dim
    out = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    return None if any(d <= 0 for d in out) or not vi.type.tensor_type.HasField("shape") else out


def _bind_inputs(model: Any, dims: Mapping[str, int]) -> None:
    """Replace symbolic input dims by `dims[name]`; an unbound symbol is a user error."""
    for inp in model.graph.input:
        for d in inp.type.tensor_type.shape.dim:
            if d.HasField("dim_value"):
                continue
            if d.dim_param not in dims:
                raise ValueError(f"input {inp.name!r} has free dimension {d.dim_param!r}: give its size")
            d.dim_value = int(dims[d.dim_param])
    # Exporters store intermediate shapes with the same symbols; bind them too.
    for vi in [*model.graph.value_info, *model.graph.output]:
        for d in vi.type.tensor_type.shape.dim:
            if not d.HasField("dim_value") and d.dim_param in dims:
                d.dim_value = int(dims[d.dim_param])


def count_flops(
    model_or_path: Any,
    dims: Mapping[str, int] | None = None,
    known_shapes: Mapping[str, Sequence[int]] | None = None,
) -> FlopCount:
    """Count MatMul/Gemm/Conv/ConvTranspose FLOPs of an ONNX model at the given dim sizes.

    `known_shapes` (tensor name -> shape, e.g. observed by running the graph) fills in what
    static inference cannot resolve (shapes computed from data, such as a Reshape of a runtime size).
    """
    import onnx

    if isinstance(model_or_path, (str, Path)):
        model = onnx.load(str(model_or_path), load_external_data=False)
    else:
        model = onnx.ModelProto()
        model.CopyFrom(model_or_path)
    _bind_inputs(model, dims or {})
    model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    g = model.graph
    shapes: dict[str, list[int] | None] = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        shapes[vi.name] = _shape(vi)
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
    for name, shape in (known_shapes or {}).items():
        if shapes.get(name) is None:
            shapes[name] = [int(d) for d in shape]

    result = FlopCount()
    for node in g.node:
        op = node.op_type
        if op in _UNPRICED:
            result.uncounted[op] = result.uncounted.get(op, 0) + 1
            continue
        if op not in _COUNTED:
            continue
        ins = [shapes.get(n) for n in node.input]
        out = shapes.get(node.output[0])
        flops = _node_flops(node, ins, out)
        if flops is None:
            result.uncounted[op] = result.uncounted.get(op, 0) + 1
        else:
            result.by_op[op] = result.by_op.get(op, 0) + flops
    return result


def _node_flops(node: Any, ins: list[list[int] | None], out: list[int] | None) -> int | None:
    """2 x multiply-accumulates of one node, or None when a needed shape is unknown."""
    op = node.op_type
    if op == "MultiHeadAttention":
        # fused attention (medsam3_export.attention): the two matmuls it replaces,
        # Q.K^T and P.V over (B, S, N*D) queries and (B, L, N*D) keys/values
        q, k, v = (ins + [None, None, None])[:3]
        if q is None or k is None or v is None or len(q) != 3 or len(k) != 3:
            return None
        return 2 * q[0] * q[1] * k[1] * (q[2] + v[-1])
    if op == "MatMul":
        a = ins[0]
        if a is None or out is None:
            return None
        k = a[-1] if len(a) >= 2 else a[0]
        return 2 * math.prod(out) * k
    if op == "Gemm":
        a = ins[0]
        if a is None or out is None:
            return None
        trans_a = next((at.i for at in node.attribute if at.name == "transA"), 0)
        k = a[0] if trans_a else a[1]
        return 2 * math.prod(out) * k
    w = ins[1]
    if op == "Conv":
        if w is None or out is None:
            return None
        return 2 * math.prod(out) * math.prod(w[1:])  # per output: Cin/group x kernel MACs
    # ConvTranspose: every input element scatters into Cout/group x kernel outputs.
    x = ins[0]
    if w is None or x is None:
        return None
    return 2 * math.prod(x) * math.prod(w[1:])
