"""ONNX Runtime backends: CPU, CUDA and TensorRT execution providers.

ONNX Runtime silently drops a GPU provider it cannot load (e.g. onnxruntime-gpu without
CUDA libraries) and runs on the CPU instead. We check `get_providers()` after creating
every session and refuse, so `backend="ort-cuda"` never means "slowly on the CPU".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import BackendUnavailableError, ModelError, first_line
from ..manifest import GraphEntry
from .base import Availability, Backend, GraphRunner

log = logging.getLogger(__name__)

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(bool)": "bool",
    "tensor(uint8)": "uint8",
}


def _ort():
    try:
        import onnxruntime
    except ImportError as e:  # pragma: no cover - a base dependency
        raise BackendUnavailableError("ort-cpu", f"onnxruntime is not importable ({e}); pip install onnxruntime") from e
    return onnxruntime


class OrtRunner(GraphRunner):
    def __init__(self, entry: GraphEntry, path: Path, session: Any) -> None:
        super().__init__(entry)
        self.session = session
        self.path = path
        self.check_declared_io(
            {i.name: _ORT_TYPES.get(i.type, i.type) for i in session.get_inputs()},
            {o.name: _ORT_TYPES.get(o.type, o.type) for o in session.get_outputs()},
            path,
        )
        self._outputs = list(self.spec.output_names)

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run(self._outputs, dict(feeds))
        return dict(zip(self._outputs, values))

    def close(self) -> None:
        self.session = None


class _OrtBackend(Backend):
    provider: ClassVar[str]

    @classmethod
    def probe(cls) -> Availability:
        try:
            ort = _ort()
        except BackendUnavailableError as e:
            return Availability(False, e.reason)
        available = ort.get_available_providers()
        if cls.provider not in available:
            return Availability(False, f"onnxruntime {ort.__version__} has no {cls.provider} (has: {', '.join(available)})")
        return Availability(True)

    def providers(self) -> list[Any]:
        return ["CPUExecutionProvider"]

    def session_options(self) -> Any:
        ort = _ort()
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.options.intra_op_threads:
            so.intra_op_num_threads = self.options.intra_op_threads
        if self.options.inter_op_threads:
            so.inter_op_num_threads = self.options.inter_op_threads
        so.log_severity_level = 3
        return so

    def open(self, entry: GraphEntry, model_dir: Path) -> GraphRunner:
        ort = _ort()
        path = model_dir / entry.file
        try:
            session = ort.InferenceSession(str(path), sess_options=self.session_options(), providers=self.providers())
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/... types
            raise ModelError(f"ONNX Runtime cannot load {path.name}: {first_line(e)}") from None
        active = session.get_providers()
        if active[0] != self.provider:
            raise BackendUnavailableError(
                self.name, f"ONNX Runtime fell back to {active[0]} for {path.name} (CUDA/TensorRT libraries missing?)"
            )
        log.debug("%s: %s on %s", self.name, path.name, active)
        return OrtRunner(entry, path, session)


class OrtCpuBackend(_OrtBackend):
    name = "ort-cpu"
    description = "ONNX Runtime, CPU execution provider"
    provider = "CPUExecutionProvider"


class OrtCudaBackend(_OrtBackend):
    name = "ort-cuda"
    description = "ONNX Runtime, CUDA execution provider (pip install 'medsam3-rt[gpu]')"
    provider = "CUDAExecutionProvider"

    def providers(self) -> list[Any]:
        cuda: dict[str, Any] = {"device_id": self.options.device_id}
        if self.options.gpu_mem_limit_bytes:
            cuda["gpu_mem_limit"] = self.options.gpu_mem_limit_bytes
        return [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]


class OrtTensorrtBackend(_OrtBackend):
    name = "ort-trt"
    description = "ONNX Runtime, TensorRT execution provider (builds engines on first run: minutes)"
    provider = "TensorrtExecutionProvider"

    def providers(self) -> list[Any]:
        trt: dict[str, Any] = {"device_id": self.options.device_id, "trt_fp16_enable": self.options.fp16}
        if self.options.cache_dir is not None:
            cache = str(self.options.cache_dir)
            trt.update(trt_engine_cache_enable=True, trt_engine_cache_path=cache, trt_timing_cache_enable=True, trt_timing_cache_path=cache)
        return [
            ("TensorrtExecutionProvider", trt),
            ("CUDAExecutionProvider", {"device_id": self.options.device_id}),
            "CPUExecutionProvider",
        ]
