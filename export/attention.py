"""Attention exported as one fused op (`com.microsoft::MultiHeadAttention`) instead of MatMul/Softmax/MatMul.

transformers' SAM3 modules call their attention through `ALL_ATTENTION_FUNCTIONS`, keyed by
`config._attn_implementation`. `fused_attention(model)` switches every sub-config to
`medsam3_fused`, whose function calls the custom op `medsam3::attention`: in PyTorch it is the
same math as transformers' eager attention (matmul, additive mask, softmax, matmul), and the
ONNX exporter translates it to ONNX Runtime's `MultiHeadAttention` contrib op, which ORT's CPU
EP runs tile by tile (flash attention) without materialising the (heads, S, L) score matrix
when there is no mask/bias. Projections, RoPE, masks and weights stay the original modules'.

Why this op and not ONNX `Attention` (opset 23): onnxruntime 1.32's CPU kernel for it builds the
full score matrix (same peak as the unfused graph, measured in benchmarks/fused_attention.py),
while MultiHeadAttention's flash path does not. OpenVINO 2026.4 reads MultiHeadAttention;
TensorRT's ONNX parser does not, so `medsam3-rt build` refuses fused graphs (see tensorrt_build).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import nn

FUSED = "fused"
UNFUSED = "unfused"
ATTENTION_CHOICES = (FUSED, UNFUSED)
# what a fused graph contains, recorded per graph in the manifest
FUSED_OP = "com.microsoft::MultiHeadAttention"
IMPLEMENTATION = "medsam3_fused"
# unfused until `medsam3-rt build` can expand fused graphs for TensorRT (docs/footprint.md)
DEFAULT_ATTENTION = UNFUSED


@torch.library.custom_op("medsam3::attention", mutates_args=())
def attention_op(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor | None, scale: float) -> torch.Tensor:
    """(B, N, S, D), (B, N, L, D), (B, N, L, Dv), additive bias (B|1, N|1, S, L) or None -> (B, S, N, Dv).

    The eager math of transformers' `eager_attention_forward`, so the PyTorch side of a fused
    export computes exactly what the unfused one does.
    """
    scores = torch.matmul(query, key.transpose(-1, -2)) * scale
    if bias is not None:
        scores = scores + bias
    weights = torch.softmax(scores, dim=-1)
    return torch.matmul(weights, value).transpose(1, 2).contiguous()


@attention_op.register_fake
def _attention_fake(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor | None, scale: float) -> torch.Tensor:
    b, n, s, _ = query.shape
    return query.new_empty((b, s, n, value.shape[-1]))


def fused_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """transformers attention-interface function (same signature as `eager_attention_forward`)."""
    scale = float(scaling) if scaling is not None else float(query.shape[-1]) ** -0.5
    bias = None
    if attention_mask is not None:
        bias = attention_mask
        if bias.dtype == torch.bool:
            bias = torch.where(bias, 0.0, torch.finfo(query.dtype).min).to(query.dtype)
        # MultiHeadAttention wants the bias' last two axes in full
        bias = bias.expand(-1, -1, query.shape[2], key.shape[2])
    return attention(query, key, value, bias, scale), None


def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bias: torch.Tensor | None, scale: float) -> torch.Tensor:
    """`attention_op`, with key/value heads broadcast to the query's (the op needs equal counts)."""
    heads = query.shape[1]
    return attention_op(query, key.expand(-1, heads, -1, -1), value.expand(-1, heads, -1, -1), bias, scale)


def _register() -> None:
    from transformers.masking_utils import AttentionMaskInterface, eager_mask
    from transformers.modeling_utils import AttentionInterface

    AttentionInterface.register(IMPLEMENTATION, fused_attention_forward)
    # masks are built as for eager attention: additive float, broadcastable over heads
    AttentionMaskInterface.register(IMPLEMENTATION, eager_mask)


_register()


def _set_implementation(model: nn.Module, impl: str) -> None:
    import transformers

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        model.set_attn_implementation(impl)
    finally:
        transformers.logging.set_verbosity(verbosity)


@contextlib.contextmanager
def attention_mode(model: nn.Module, mode: str, graphs: Iterable[nn.Module] = ()) -> Iterator[None]:
    """Within: `model`'s attention runs as `mode` ("fused": medsam3::attention, "unfused": eager).

    Eager in both cases on the PyTorch side (the dynamo exporter cannot decompose SDPA with
    dynamic batch axes); the tracker's hand-written memory cross-attention follows the flag
    `use_fused_attention` of the modules that carry it (in `model` or `graphs`).
    """
    if mode not in ATTENTION_CHOICES:
        raise ValueError(f"attention mode '{mode}': choose one of {', '.join(ATTENTION_CHOICES)}")
    previous = model.config._attn_implementation
    flagged = [m for root in (model, *graphs) for m in root.modules() if hasattr(m, "use_fused_attention")]
    _set_implementation(model, IMPLEMENTATION if mode == FUSED else "eager")
    for m in flagged:
        m.use_fused_attention = mode == FUSED
    try:
        yield
    finally:
        _set_implementation(model, previous)
        for m in flagged:
            m.use_fused_attention = False


def _register_mha_schema() -> None:
    """The `onnx` package has no schemas for ONNX Runtime's contrib ops and onnxscript needs one to
    emit a node: declare the inputs/attributes of MultiHeadAttention used here (ORT's own schema
    is the authority at run time)."""
    import onnx

    if onnx.defs.has("MultiHeadAttention", "com.microsoft"):
        return
    schema = onnx.defs.OpSchema
    optional, single = schema.FormalParameterOption.Optional, schema.FormalParameterOption.Single
    names = ("query", "key", "value", "bias", "key_padding_mask", "attention_bias")
    inputs = [
        schema.FormalParameter(n, "M" if n == "key_padding_mask" else "T", n, param_option=optional if i else single)
        for i, n in enumerate(names)
    ]
    onnx.defs.register_schema(
        schema(
            "MultiHeadAttention",
            "com.microsoft",
            1,
            "ONNX Runtime contrib op (onnxruntime/core/graph/contrib_ops/bert_defs.cc)",
            inputs=inputs,
            outputs=[schema.FormalParameter("output", "T", "output")],
            type_constraints=[("T", ["tensor(float)", "tensor(float16)"], ""), ("M", ["tensor(int32)"], "")],
            attributes=[
                schema.Attribute("num_heads", schema.AttrType.INT, "heads", required=True),
                schema.Attribute("scale", schema.AttrType.FLOAT, "score scale", required=False),
            ],
        )
    )


def onnx_translation() -> dict[object, object]:
    """`custom_translation_table` for torch.onnx.export: medsam3::attention -> MultiHeadAttention."""
    import onnxscript
    from onnxscript import opset18 as op

    _register_mha_schema()
    mha = onnxscript.values.Opset("com.microsoft", 1).MultiHeadAttention

    def translate(query, key, value, bias=None, scale: float = 1.0):  # type: ignore[no-untyped-def]
        heads = query.shape[1]
        flat = op.Constant(value_ints=[0, 0, -1])

        def bsh(x):  # type: ignore[no-untyped-def]
            return op.Reshape(op.Transpose(x, perm=[0, 2, 1, 3]), flat)

        out = mha(bsh(query), bsh(key), bsh(value), None, None, bias, num_heads=heads, scale=scale)
        return op.Reshape(out, op.Constant(value_ints=[0, 0, heads, -1]))

    return {torch.ops.medsam3.attention.default: translate}


def graph_attention(path: Path) -> str:
    """What the manifest records for an exported graph: "fused" when it holds MultiHeadAttention nodes."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    fused = any(n.op_type == "MultiHeadAttention" and n.domain == "com.microsoft" for n in model.graph.node)
    return FUSED if fused else UNFUSED
