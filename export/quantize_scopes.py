"""Mixed precision of `medsam3-rt quantize`: which layers of a graph stay fp32.

Only MatMul/Conv/Gemm are ever quantised, so LayerNorm, Softmax, GELU, the sine position
encodings and the box arithmetic stay fp32 in every recipe. On top of that, the detector's
small heads whose outputs are read directly as scores or coordinates stay fp32 by default:
the presence head and the query-text dot-product scoring (a shifted logit moves a detection
across the score threshold: a mask appears or vanishes), the box head, the reference-point head
and the box relative-position MLPs (boxes feed the next decoder layer's attention bias). They
are a few small GEMMs, so keeping them costs little time.

Layers are found by the torch module path the exporter records on every ONNX node
(`pkg.torch.onnx.name_scopes` metadata, e.g. `detector.detr_decoder.presence_head.layer1`).
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path

from medsam3_rt import graph_contract as gc

QUANTISED_OPS = ("MatMul", "Conv", "Gemm")  # LayerNorm, Softmax, GELU... stay fp32 in every recipe
SCOPE_KEY = "pkg.torch.onnx.name_scopes"

# graph -> module-path fragments whose MatMul/Conv/Gemm stay fp32 by default
DEFAULT_KEEP_FP32: dict[str, tuple[str, ...]] = {
    gc.IMAGE_BACKBONE: (),
    gc.DETECTOR: ("presence_head", "dot_product_scoring", "box_head", "ref_point_head", "box_rpb_embed"),
}


def node_scope(node: object) -> str:
    """Innermost module path of an ONNX node ('' when the exporter recorded none)."""
    for prop in getattr(node, "metadata_props", ()):
        if prop.key == SCOPE_KEY:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return ""
            paths = [s for s in scopes if "." in s or s == "detector"]
            return paths[-1] if paths else ""
    return ""


def nodes_to_keep_fp32(model_path: Path, fragments: Sequence[str]) -> list[str]:
    """Names of the quantisable nodes of `model_path` whose module path contains any fragment."""
    import onnx

    if not fragments:
        return []
    model = onnx.load(str(model_path), load_external_data=False)
    return [n.name for n in model.graph.node if n.op_type in QUANTISED_OPS and any(f in node_scope(n) for f in fragments)]


def quantisable_nodes(model_path: Path) -> int:
    """How many MatMul/Conv/Gemm nodes a graph has (the report's denominator)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    return sum(n.op_type in QUANTISED_OPS for n in model.graph.node)


def activation_matmuls(model_path: Path) -> list[str]:
    """MatMuls whose two inputs are both activations (attention scores and their weighted sum).

    They have no weight to pre-pack, so int8 buys little there, while both operands pay a
    quantise/dequantise pair and the softmax output's range (0..1) is crushed into 256 steps.
    """
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    consts = {i.name for i in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and not (set(n.input) & consts)]
