"""`medsam3-rt triton-repo`: an export directory -> a model repository for NVIDIA Triton.

Layout (Triton's model repository convention, one folder per model, version 1):

    <name>_text_encoder/, <name>_image_backbone/, <name>_detector/ (and tracker graphs if exported)
        config.pbtxt  platform onnxruntime_onnx, tensors and shapes from the manifest (-1: dynamic)
        1/model.onnx  the graph (hard link to the export's file where possible)
    <name>_segment/   Python backend: image + prompts -> label map, scores, boxes (host-side steps)
        1/model.py, 1/export/ (the export directory it loads)
    <name>_stream/    Python backend with sequence batching: START/END/CORRID control inputs,
        one tracker stream per correlation id

The graph models serve clients that run the host steps themselves; the Python models run the whole
pipeline through medsam3_rt inside Triton (the runtime must be installed in Triton's Python environment).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from ..errors import OutputExistsError, UsageError
from ..manifest import load_manifest

DTYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
}

SEGMENT_PY = '''"""Triton Python backend: medsam3-rt segment (written by `medsam3-rt triton-repo`)."""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from medsam3_rt.errors import Medsam3Error
from medsam3_rt.scale.triton_models import SegmentHandler


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        backend = params.get("BACKEND", {}).get("string_value", "auto")
        self.handler = SegmentHandler(Path(__file__).parent / "export", backend)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                out = self.handler(
                    pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy(),
                    pb_utils.get_input_tensor_by_name(request, "PROMPTS").as_numpy(),
                )
                tensors = [pb_utils.Tensor(k, v) for k, v in out.items()]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Medsam3Error as e:  # one bad request does not affect the others
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(e.message)))
        return responses
'''

STREAM_PY = '''"""Triton Python backend: medsam3-rt streams, one per sequence correlation id (written by `medsam3-rt triton-repo`)."""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from medsam3_rt.errors import Medsam3Error
from medsam3_rt.scale.triton_models import StreamHandler


def _scalar(request, name):
    return pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)[0]


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})
        backend = params.get("BACKEND", {}).get("string_value", "auto")
        self.handler = StreamHandler(Path(__file__).parent / "export", backend)

    def execute(self, requests):
        responses = []
        for request in requests:
            corrid = int(_scalar(request, "CORRID"))
            try:
                out = self.handler(
                    corrid,
                    bool(_scalar(request, "START")),
                    bool(_scalar(request, "END")),
                    pb_utils.get_input_tensor_by_name(request, "FRAME").as_numpy(),
                    pb_utils.get_input_tensor_by_name(request, "PROMPTS").as_numpy(),
                )
                tensors = [pb_utils.Tensor(k, v) for k, v in out.items()]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Medsam3Error as e:
                self.handler.drop(corrid)
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(e.message)))
        return responses
'''


def _dims(shape: list) -> str:
    return "[ " + ", ".join(str(d) if isinstance(d, int) else "-1" for d in shape) + " ]"


def _tensor(name: str, dtype: str, dims: str) -> str:
    return f'  {{\n    name: "{name}"\n    data_type: {dtype}\n    dims: {dims}\n  }}'


def _io(kind: str, tensors: list[str]) -> str:
    return f"{kind} [\n" + ",\n".join(tensors) + "\n]\n"


def graph_config(model: str, graph: dict) -> str:
    """config.pbtxt of one ONNX graph: explicit shapes (max_batch_size 0), symbolic dims as -1."""
    ins = [_tensor(t["name"], DTYPES[t["dtype"]], _dims(t["shape"])) for t in graph["inputs"]]
    outs = [_tensor(t["name"], DTYPES[t["dtype"]], _dims(t["shape"])) for t in graph["outputs"]]
    return (
        f'name: "{model}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 0\n'
        + _io("input", ins)
        + _io("output", outs)
        + "instance_group [\n  {\n    kind: KIND_AUTO\n    count: 1\n  }\n]\n"
    )


def _python_config(model: str, inputs: list[str], outputs: list[str], extra: str = "") -> str:
    return (
        f'name: "{model}"\nbackend: "python"\nmax_batch_size: 0\n'
        + _io("input", inputs)
        + _io("output", outputs)
        + extra
        + 'parameters {\n  key: "BACKEND"\n  value: { string_value: "auto" }\n}\n'
        + "instance_group [\n  {\n    kind: KIND_CPU\n    count: 1\n  }\n]\n"
    )


def segment_config(model: str) -> str:
    return _python_config(
        model,
        [_tensor("IMAGE", "TYPE_UINT8", "[ -1, -1, -1 ]"), _tensor("PROMPTS", "TYPE_STRING", "[ -1 ]")],
        [
            _tensor("LABEL_MAP", "TYPE_UINT8", "[ -1, -1 ]"),
            _tensor("SCORES", "TYPE_FP32", "[ -1 ]"),
            _tensor("BOXES", "TYPE_FP32", "[ -1, 4 ]"),
        ],
    )


def stream_config(model: str, idle_seconds: int = 60) -> str:
    controls = "\n".join(
        f'    {{\n      name: "{name}"\n      control [\n        {{\n          kind: {kind}\n'
        + ("          int32_false_true: [ 0, 1 ]\n" if kind != "CONTROL_SEQUENCE_CORRID" else "          data_type: TYPE_UINT64\n")
        + "        }\n      ]\n    }"
        + ("," if name != "CORRID" else "")
        for name, kind in (("START", "CONTROL_SEQUENCE_START"), ("END", "CONTROL_SEQUENCE_END"), ("CORRID", "CONTROL_SEQUENCE_CORRID"))
    )
    batching = (
        f"sequence_batching {{\n  max_sequence_idle_microseconds: {idle_seconds * 1_000_000}\n"
        f"  control_input [\n{controls}\n  ]\n  direct {{ }}\n}}\n"
    )
    return _python_config(
        model,
        [_tensor("FRAME", "TYPE_UINT8", "[ -1, -1, -1 ]"), _tensor("PROMPTS", "TYPE_STRING", "[ -1 ]")],
        [
            _tensor("LABEL_MAP", "TYPE_UINT8", "[ -1, -1 ]"),
            _tensor("OBJECT_IDS", "TYPE_INT64", "[ -1 ]"),
            _tensor("SCORES", "TYPE_FP32", "[ -1 ]"),
        ],
        batching,
    )


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_repository(
    model_dir: str | os.PathLike[str], output: str | os.PathLike[str], *, name: str | None = None, force: bool = False
) -> list[str]:
    """Write the model repository; returns the model names. Built in a temporary sibling, then renamed."""
    src = Path(model_dir)
    manifest = load_manifest(src)  # a checked export (files and hashes), or a one-line ModelError
    graphs: dict = json.loads((src / "manifest.json").read_text())["graphs"]
    prefix = name or re.sub(r"[^A-Za-z0-9_]+", "_", str(manifest.model.get("name") or "medsam3")).strip("_").lower() or "medsam3"
    out = Path(output)
    if out.exists() and any(out.iterdir()) and not force:
        raise OutputExistsError(f"{out} exists and is not empty; pass --force to replace it")
    if not re.fullmatch(r"[A-Za-z0-9_]+", prefix):
        raise UsageError(f"--name '{prefix}': use letters, digits and underscores")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    models: list[str] = []
    for graph_name, graph in graphs.items():
        model = f"{prefix}_{graph_name}"
        (tmp / model / "1").mkdir(parents=True)
        _link_or_copy(src / graph["file"], tmp / model / "1" / "model.onnx")
        for extra in graph.get("external_data") or []:
            _link_or_copy(src / extra, tmp / model / "1" / Path(extra).name)
        (tmp / model / "config.pbtxt").write_text(graph_config(model, graph))
        models.append(model)
    for kind, code, config in (("segment", SEGMENT_PY, segment_config), ("stream", STREAM_PY, stream_config)):
        model = f"{prefix}_{kind}"
        (tmp / model / "1").mkdir(parents=True)
        (tmp / model / "1" / "model.py").write_text(code)
        for f in sorted(src.rglob("*")):
            if f.is_file():
                _link_or_copy(f, tmp / model / "1" / "export" / f.relative_to(src))
        (tmp / model / "config.pbtxt").write_text(config(model))
        models.append(model)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return models
