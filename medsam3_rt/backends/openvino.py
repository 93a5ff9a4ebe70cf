"""OpenVINO backend: Intel's runtime reads the exported ONNX graphs directly.

Runs on x86 and ARM CPUs (and, with `device="GPU"` / `"NPU"`, Intel GPUs and NPUs). The
`openvino` package is an optional extra (`pip install "medsam3-rt[openvino]"`) and is
imported only when this backend is probed or used.

Options honoured (`BackendOptions`): `intra_op_threads` -> INFERENCE_NUM_THREADS,
`cache_dir` -> CACHE_DIR (compiled-model cache), `fp16` -> INFERENCE_PRECISION_HINT f16
(refused where the device has no FP16 capability), `device_id` -> "GPU.<id>" for GPU/NPU.
Without `fp16` the precision hint is pinned to f32: OpenVINO's CPU plugin otherwise runs
bf16 on CPUs with AMX/AVX512-BF16, a silent precision drop that would break parity.

Threading: a compiled model is shared; each concurrent `run` takes its own infer request
from a small pool, so `Segmenter.segment` stays safe to call from several threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailableError, ModelError, UsageError, first_line
from ..manifest import GraphEntry
from .base import Availability, Backend, BackendOptions, GraphRunner, OpenVinoOptions

log = logging.getLogger(__name__)

NAME = "openvino"
_INSTALL_HINT = "pip install 'medsam3-rt[openvino]'"
_DEVICES = ("CPU", "GPU", "NPU")


def _ov() -> Any:
    try:
        import openvino
    except ImportError as e:
        raise BackendUnavailableError(NAME, f"the 'openvino' package is not installed ({e}); {_INSTALL_HINT}") from e
    return openvino


_CORE: Any = None
_CORE_LOCK = threading.Lock()


def _core() -> Any:
    """One `ov.Core` per process: creating it loads the plugin list (tens of ms)."""
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            _CORE = _ov().Core()
        return _CORE


def _dtype_name(port: Any) -> str:
    try:
        return str(np.dtype(port.get_element_type().to_dtype()))
    except (TypeError, RuntimeError):  # element types numpy has no name for
        return str(port.get_element_type())


def _port_name(port: Any, wanted: tuple[str, ...]) -> str:
    """The port's name from the contract: an ONNX output that feeds other nodes can carry
    several tensor names (e.g. 'conv2d_14' and 'trk_feat_s0'), and get_any_name() may pick either."""
    names = port.get_names()
    return next((n for n in wanted if n in names), port.get_any_name())


class OpenVinoRunner(GraphRunner):
    def __init__(self, entry: GraphEntry, path: Path, compiled: Any) -> None:
        super().__init__(entry)
        self.path = path
        self.compiled = compiled
        inputs = {_port_name(p, self.spec.input_names): _dtype_name(p) for p in compiled.inputs}
        outputs = {_port_name(p, self.spec.output_names): _dtype_name(p) for p in compiled.outputs}
        self.check_declared_io(inputs, outputs, path)
        self._outputs = [(name, compiled.output(name)) for name in self.spec.output_names]
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def _acquire(self) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self.compiled.create_infer_request()

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.compiled is None:
            raise UsageError(f"{self.path.name}: the OpenVINO runner was closed")
        request = self._acquire()
        try:
            request.infer({name: np.ascontiguousarray(a) for name, a in feeds.items()})
            # The request reuses its output buffers on the next call: copy them out.
            out = {name: np.array(request.get_tensor(port).data, copy=True) for name, port in self._outputs}
        finally:
            with self._lock:
                self._idle.append(request)
        return out

    def close(self) -> None:
        with self._lock:
            self._idle.clear()
        self.compiled = None


class OpenVinoBackend(Backend):
    name = NAME
    description = f"OpenVINO, reads the ONNX graphs (CPU; Intel GPU/NPU with device=...) ({_INSTALL_HINT})"
    options_type = OpenVinoOptions

    def __init__(self, options: BackendOptions | OpenVinoOptions | None = None, *, device: str = "CPU") -> None:
        super().__init__(options)
        if self.settings.precision not in ("fp32", "fp16"):
            raise UsageError(f"openvino precision '{self.settings.precision}' is not one of fp32, fp16")
        base = device.split(".")[0].upper()
        if base not in _DEVICES:
            raise UsageError(f"OpenVINO device '{device}' is not one of {', '.join(_DEVICES)} (optionally with .N, e.g. GPU.1)")
        if base != "CPU" and "." not in device and self.settings.device_id:
            device = f"{base}.{self.settings.device_id}"
        self.device = device.upper()

    @classmethod
    def probe(cls) -> Availability:
        try:
            core = _core()
        except BackendUnavailableError as e:
            return Availability(False, e.reason)
        except Exception as e:  # a broken install: report, never raise
            return Availability(False, f"OpenVINO cannot start: {first_line(e)}")
        devices = list(core.available_devices)
        if "CPU" not in devices:
            return Availability(False, f"OpenVINO {_ov().__version__} finds no CPU device (has: {', '.join(devices) or 'none'})")
        return Availability(True)

    def compile_config(self, core: Any) -> dict[str, Any]:
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if self.settings.precision == "fp16":
            caps = [str(c) for c in core.get_property(self.device, "OPTIMIZATION_CAPABILITIES")]
            if "FP16" not in caps:
                raise BackendUnavailableError(
                    NAME, f"fp16 requested but OpenVINO device {self.device} has no FP16 capability (has: {caps})"
                )
            config["INFERENCE_PRECISION_HINT"] = "f16"
        else:
            config["INFERENCE_PRECISION_HINT"] = "f32"
        if self.settings.intra_op_threads:
            config["INFERENCE_NUM_THREADS"] = int(self.settings.intra_op_threads)
        if self.settings.cache_dir is not None:
            config["CACHE_DIR"] = str(self.settings.cache_dir)
        return config

    def open(self, entry: GraphEntry, model_dir: Path) -> GraphRunner:
        core = _core()
        available = list(core.available_devices)
        if self.device.split(".")[0] not in {d.split(".")[0] for d in available}:
            raise BackendUnavailableError(NAME, f"OpenVINO device {self.device} is not available here (has: {', '.join(available)})")
        path = model_dir / entry.file
        try:
            model = core.read_model(str(path))
        except Exception as e:  # OpenVINO raises RuntimeError subclasses with multi-line text
            raise ModelError(f"OpenVINO cannot read {path.name}: {first_line(e)}") from None
        config = self.compile_config(core)
        try:
            compiled = core.compile_model(model, self.device, config)
        except Exception as e:
            raise ModelError(f"OpenVINO cannot compile {path.name} for {self.device}: {first_line(e)}") from None
        log.debug("%s: %s on %s %s", self.name, path.name, self.device, config)
        return OpenVinoRunner(entry, path, compiled)
