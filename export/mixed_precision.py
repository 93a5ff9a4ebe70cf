"""fp32 ONNX graph -> fp16/bf16 graph with chosen nodes pinned to fp32, for strongly typed TensorRT.

TensorRT 11 removed the "weakly typed" precision flags (BuilderFlag.FP16/BF16, precision
constraints): a network computes in exactly the types its ONNX graph declares. TensorRT 10
supports the same strongly typed mode. So `medsam3-rt build` writes the precision into the
graph itself, here, and builds strongly typed on both: what runs in fp32 is decided by this
module and recorded in the engine entry, not left to the builder.

Rules:
- Graph inputs and outputs keep their fp32 types (the manifest's I/O contract is unchanged);
  Cast nodes convert at the boundary.
- Every node computes in the low type unless it is pinned (`fp32_pinned_nodes`: norms,
  attention softmax, the final mask-logit producers) or its op must stay fp32 (`_FP32_OPS`).
- Float inputs a node needs in the other type get one shared Cast per (tensor, type).
  Float initializers used only by low-precision nodes are stored in the low type.
- Some inputs must stay float32 whatever the node's type (Resize scales/roi).
- Non-float tensors (int64 shapes, bool masks) are never touched.
- bf16 graphs are upgraded to opset 22 first (earlier opsets do not type Conv etc. for bf16).

Checked in CI with onnx's full type checker on the exported graphs; whether TensorRT's ONNX
parser accepts every converted graph is UNVERIFIED (no TensorRT here).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, external_data_helper, helper, numpy_helper, version_converter

from .parity import MASK_LOGIT_OUTPUTS

LOW_TYPES = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}
BF16_OPSET = 22  # Conv, MatMul, ... accept bfloat16 from opset 22; bf16 graphs are upgraded to it
FLOAT = TensorProto.FLOAT

# Ops kept in fp32 entirely (index/range arithmetic, randomness, or nested graphs we do not rewrite).
_FP32_OPS = frozenset({"Range", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "If", "Loop", "Scan"})
# Inputs that the ONNX spec types as float32 regardless of the data type.
_FP32_INPUTS = {"Resize": {1, 2}, "Upsample": {1}}
# Ops that read only the shape of a float input: no cast needed.
_ANY_TYPE_OPS = frozenset({"Shape", "Size"})
_NORM_OPS = frozenset({"LayerNormalization", "GroupNormalization", "InstanceNormalization", "RMSNormalization"})
# A norm exported op by op: mean / variance / rsqrt chain.
_NORM_STAT_OPS = frozenset({"ReduceMean", "ReduceSumSquare", "Pow", "Sqrt", "Reciprocal"})
_HEAVY_OPS = frozenset({"MatMul", "Einsum", "Conv", "ConvTranspose", "Gemm"})
_LAYOUT_OPS = frozenset(
    {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Gather", "Expand", "Identity", "Cast", "Concat", "Split"}
)
_MASK_TAIL_DEPTH = 8  # how far back from a mask-logit output the tail is pinned


@dataclass(frozen=True)
class PinnedNode:
    name: str
    op: str
    reason: str

    def describe(self) -> str:
        return f"{self.name} ({self.op}: {self.reason})"


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def fp32_pinned_nodes(model: onnx.ModelProto, mask_outputs: Iterable[str] = MASK_LOGIT_OUTPUTS) -> list[PinnedNode]:
    """Nodes that must compute in fp32 for accuracy: norms, attention softmax, final mask logits.

    Norm layers see ViT activations of ~1e3 whose squares overflow fp16; softmax over 5k+
    keys loses the small probabilities; the mask logits decide every mask pixel's sign.
    """
    graph = model.graph
    pinned: dict[str, PinnedNode] = {}

    def pin(node: onnx.NodeProto, reason: str) -> None:
        if node.name and node.name not in pinned:
            pinned[node.name] = PinnedNode(node.name, node.op_type, reason)

    for node in graph.node:
        if node.op_type in _NORM_OPS:
            pin(node, "normalisation")
        elif node.op_type in _NORM_STAT_OPS:
            pin(node, "normalisation statistics")
        elif node.op_type == "Softmax":
            pin(node, "attention softmax")
    producers = _producers(graph)
    wanted = set(mask_outputs)
    for out in graph.output:
        if out.name not in wanted:
            continue
        frontier = [(out.name, 0)]
        seen: set[str] = set()
        while frontier:
            tensor, depth = frontier.pop()
            node = producers.get(tensor)
            if node is None or node.name in seen or depth > _MASK_TAIL_DEPTH:
                continue
            seen.add(node.name)
            pin(node, f"final mask logits ({out.name})")
            if node.op_type in _HEAVY_OPS:
                continue  # the projection that makes the logits is the last one pinned on this path
            frontier += [(i, depth + (0 if node.op_type in _LAYOUT_OPS else 1)) for i in node.input if i]
    return list(pinned.values())


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of every float32 tensor (inputs, initializers, node outputs) after shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    g = inferred.graph
    floats = {v.name for v in (*g.input, *g.value_info, *g.output) if v.type.tensor_type.elem_type == FLOAT}
    floats |= {t.name for t in g.initializer if t.data_type == FLOAT}
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.t.data_type == FLOAT:
                    floats.update(node.output)
    return floats


def _to_bf16(t: TensorProto) -> TensorProto:
    """Round-to-nearest-even fp32 -> bfloat16, stored as raw little-endian uint16."""
    arr = numpy_helper.to_array(t).astype(np.float32)
    bits = arr.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    rounded = np.where(np.isnan(arr), np.uint16(0x7FC0), rounded)
    out = TensorProto(name=t.name, data_type=TensorProto.BFLOAT16, dims=list(t.dims))
    out.raw_data = rounded.astype("<u2").tobytes()
    return out


def _convert_initializer(t: TensorProto, low: int) -> TensorProto:
    if low == TensorProto.BFLOAT16:
        return _to_bf16(t)
    arr = numpy_helper.to_array(t).astype(np.float32)
    return numpy_helper.from_array(np.clip(arr, -65504, 65504).astype(np.float16), t.name)


def convert_mixed_precision(
    model: onnx.ModelProto, precision: str, keep_fp32: Iterable[str] = (), *, floats: set[str] | None = None
) -> onnx.ModelProto:
    """A copy of `model` computing in `precision` (fp16|bf16) except the nodes named in `keep_fp32`.

    `floats` (the fp32 tensor names) can be precomputed on a copy without weights, for graphs
    whose weights exceed protobuf's 2 GB serialisation limit (`convert_file` does).
    """
    if precision not in LOW_TYPES:
        raise ValueError(f"precision must be one of {list(LOW_TYPES)}, got {precision}")
    low = LOW_TYPES[precision]
    src = onnx.ModelProto()
    src.CopyFrom(model)
    if precision == "bf16" and _opset(src) < BF16_OPSET:
        src = version_converter.convert_version(src, BF16_OPSET)
    floats = _float_tensors(src) if floats is None else floats
    graph = src.graph
    keep = set(keep_fp32)
    runs_low = {n.name: (n.op_type not in _FP32_OPS and n.name not in keep and any(o in floats for o in n.output)) for n in graph.node}
    producers = _producers(graph)
    init_names = {t.name for t in graph.initializer}
    graph_inputs = {i.name for i in graph.input}

    def produced_type(name: str) -> int | None:
        """Element type a float tensor has after conversion (None: not a float tensor)."""
        if name not in floats:
            return None
        if name in graph_inputs:
            return FLOAT
        if name in init_names:
            return low if low_initializers.get(name, False) else FLOAT
        node = producers.get(name)
        return low if node is not None and runs_low[node.name] else FLOAT

    # An initializer becomes low precision when every consumer wants it low.
    wants: dict[str, set[int]] = defaultdict(set)
    for n in graph.node:
        fp32_inputs = _FP32_INPUTS.get(n.op_type, set())
        for idx, name in enumerate(n.input):
            if name in floats and n.op_type not in _ANY_TYPE_OPS:
                wants[name].add(FLOAT if (not runs_low[n.name] or idx in fp32_inputs) else low)
    low_initializers = {name: wants.get(name) == {low} for name in init_names if name in floats}

    casts: dict[tuple[str, int], str] = {}
    new_nodes: list[onnx.NodeProto] = []

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            out = f"{name}__to_{'fp32' if to == FLOAT else precision}"
            new_nodes.append(helper.make_node("Cast", [name], [out], to=to, name=f"{out}__cast"))
            casts[key] = out
        return casts[key]

    for n in graph.node:
        fp32_inputs = _FP32_INPUTS.get(n.op_type, set())
        for idx, name in enumerate(n.input):
            have = produced_type(name) if name else None
            if have is None or n.op_type in _ANY_TYPE_OPS:
                continue
            want = FLOAT if (not runs_low[n.name] or idx in fp32_inputs) else low
            if have != want:
                n.input[idx] = cast(name, want)
        if n.op_type == "Cast" and runs_low[n.name]:
            for a in n.attribute:
                if a.name == "to" and a.i == FLOAT:
                    a.i = low  # a cast into float lands in the low type inside the low region
        if n.op_type == "ConstantOfShape" and runs_low[n.name]:
            values = [a for a in n.attribute if a.name == "value"]
            if not values:  # the default value is a float32 zero
                n.attribute.append(helper.make_attribute("value", numpy_helper.from_array(np.zeros(1, np.float32))))
                values = [n.attribute[-1]]
            for a in values:
                if a.t.data_type == FLOAT:
                    a.t.CopyFrom(_convert_initializer(a.t, low))
        if n.op_type == "Constant" and runs_low[n.name]:
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == FLOAT:
                    a.t.CopyFrom(_convert_initializer(a.t, low))
        new_nodes.append(n)

    # Graph outputs keep fp32: rename a low producer's output and cast back under the old name.
    out_names = {o.name for o in graph.output}
    renamed: dict[str, str] = {}
    for n in new_nodes:
        for i, o in enumerate(n.output):
            if o in out_names and o in floats and n.name in runs_low and runs_low[n.name]:
                renamed[o] = f"{o}__{precision}"
                n.output[i] = renamed[o]
    for n in new_nodes:
        for i, name in enumerate(n.input):
            if name in renamed:
                n.input[i] = renamed[name]
    for o, low_name in renamed.items():
        new_nodes.append(helper.make_node("Cast", [low_name], [o], to=FLOAT, name=f"{o}__cast_fp32"))

    inits = [_convert_initializer(t, low) if low_initializers.get(t.name) else t for t in graph.initializer]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    del graph.node[:]
    graph.node.extend(_toposort(new_nodes, {*graph_inputs, *init_names}))
    del graph.value_info[:]
    return src


def _toposort(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Order nodes so every input is produced first (inserted Casts go right after their source)."""
    ready = set(available) | {""}
    pending = list(nodes)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            missing = sorted({i for n in rest for i in n.input if i not in ready})[:5]
            raise ValueError(f"mixed-precision rewrite left inputs without producers: {missing}")
        pending = rest
    return ordered


def low_precision_fraction(model: onnx.ModelProto, precision: str) -> float:
    """Share of float initializer elements stored in the low type (a summary for the build log)."""
    low = LOW_TYPES[precision]
    sizes = {True: 0, False: 0}
    for t in model.graph.initializer:
        if t.data_type in (FLOAT, low):
            sizes[t.data_type == low] += int(np.prod(t.dims)) if t.dims else 1
    total = sizes[True] + sizes[False]
    return sizes[True] / total if total else 0.0


def _opset(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def convert_file(src: str | Path, dst: str | Path, precision: str, keep_fp32: Iterable[str] = ()) -> onnx.ModelProto:
    """Convert an exported graph file; the result is written with its weights in `<dst>.data`.

    Type inference and the opset upgrade run on the graph without its weights (the full
    SAM3 ViT is ~1.8 GB, near protobuf's 2 GB limit); the weights are loaded afterwards.
    """
    src, dst = Path(src), Path(dst)
    meta = onnx.load(str(src), load_external_data=False)
    if precision == "bf16" and _opset(meta) < BF16_OPSET:
        meta = version_converter.convert_version(meta, BF16_OPSET)
    floats = _float_tensors(meta)
    external_data_helper.load_external_data_for_model(meta, str(src.parent))
    converted = convert_mixed_precision(meta, precision, keep_fp32, floats=floats)
    dst.parent.mkdir(parents=True, exist_ok=True)
    data = dst.with_name(dst.name + ".data")
    data.unlink(missing_ok=True)
    onnx.save_model(converted, str(dst), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name, size_threshold=1024)
    return converted
