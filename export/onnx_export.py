"""torch -> ONNX for one graph, with the dynamic axes named as in the graph contract."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import onnx
import torch

from medsam3_rt.errors import InternalError
from medsam3_rt.graph_contract import GraphSpec

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18  # antialiased Resize (memory encoder, mask prompts) needs opset >= 18
EXTERNAL_DATA_BYTES = 256 << 20  # weights above this go to `<graph>.onnx.data` (protobuf caps files at 2 GB)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The dynamo exporter prints progress and warnings on stdout; keep them out of the CLI."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        noisy = [logging.getLogger(name) for name in ("torch.onnx", "onnx_ir", "onnxscript")]
        previous = [lg.level for lg in noisy]
        for lg in noisy:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(noisy, previous):
                lg.setLevel(level)


def export_graph(
    module: torch.nn.Module,
    example_inputs: Mapping[str, torch.Tensor],
    spec: GraphSpec,
    path: Path,
    *,
    opset: int = DEFAULT_OPSET,
    max_axis: Mapping[str, int] | None = None,
    translation: Mapping[object, object] | None = None,
) -> list[str]:
    """Export `module` to `path`; returns the file names written (graph + external data).

    `translation`: extra torch op -> ONNX translations (export/attention.py's fused attention).
    """
    axes: dict[str, torch.export.Dim] = {}
    dynamic: dict[str, dict[int, torch.export.Dim] | None] = {}
    for t in spec.inputs:
        dims = {
            i: axes.setdefault(d, torch.export.Dim(d, min=1, max=(max_axis or {}).get(d, 4096)))
            for i, d in enumerate(t.shape)
            if isinstance(d, str)
        }
        dynamic[t.name] = dims or None
    args = tuple(example_inputs[name] for name in spec.input_names)
    param_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    external = param_bytes > EXTERNAL_DATA_BYTES
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            module,
            args,
            dynamo=True,
            opset_version=opset,
            input_names=list(spec.input_names),
            output_names=list(spec.output_names),
            dynamic_shapes=dynamic,
            optimize=True,
            external_data=external,
            custom_translation_table=dict(translation) if translation else None,
        )
        program.save(str(path), external_data=external)
    written = [path.name]
    data = path.with_name(path.name + ".data")
    if external and data.exists():
        written.append(data.name)
    _check_declared(path, spec)
    return written


def _check_declared(path: Path, spec: GraphSpec) -> None:
    """The file must declare exactly the contract's names, dtypes and (symbolic) shapes."""
    model = onnx.load(str(path), load_external_data=False)
    got = {
        "inputs": [_describe(v) for v in model.graph.input],
        "outputs": [_describe(v) for v in model.graph.output],
    }
    want = {
        "inputs": [(t.name, t.dtype, list(t.shape)) for t in spec.inputs],
        "outputs": [(t.name, t.dtype, list(t.shape)) for t in spec.outputs],
    }
    if got != want:
        raise InternalError(f"{path.name}: exported I/O {got} differs from the graph contract {want}")


_ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.BOOL: "bool",
    onnx.TensorProto.UINT8: "uint8",
}


def _describe(value: onnx.ValueInfoProto) -> tuple[str, str, list[int | str]]:
    t = value.type.tensor_type
    dims: Sequence[onnx.TensorShapeProto.Dimension] = t.shape.dim
    return value.name, _ONNX_DTYPES.get(t.elem_type, str(t.elem_type)), [d.dim_param or d.dim_value for d in dims]
