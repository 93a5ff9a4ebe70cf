"""STAND-IN for onnxruntime-gpu's Python surface, over the CPU onnxruntime. NOT CUDA.

What it takes from the real package (tests/fakes/data/ort_gpu_provider_options.json, read
from the onnxruntime-gpu 1.17.1 / 1.18.0 / 1.22.0 / 1.23.0 wheels' provider libraries):
which provider option keys each release's CUDA and TensorRT providers parse. Like the real
`InferenceSession`, a provider given a key it does not know fails to initialise and the
session falls back to the remaining providers (onnxruntime logs "EP Error ... Falling back"),
so `get_providers()` no longer starts with the provider asked for.

"cuda" memory (OrtValues, I/O binding) is host memory; graphs run on the CPU provider.
Device placements asked for are recorded so tests can check fixed addresses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import onnxruntime as _real

OPTIONS = json.loads((Path(__file__).parent / "data" / "ort_gpu_provider_options.json").read_text())["releases"]
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def _cpu(device_type: str) -> str:
    return "cpu" if str(device_type).lower() in ("cuda", "cpu") else device_type


class OrtValue:
    allocations = 0

    @staticmethod
    def ortvalue_from_shape_and_type(shape: Any, element_type: Any, device_type: str = "cpu", device_id: int = 0) -> Any:
        OrtValue.allocations += 1
        return _real.OrtValue.ortvalue_from_shape_and_type(shape, element_type, _cpu(device_type), 0)

    @staticmethod
    def ortvalue_from_numpy(array: Any, device_type: str = "cpu", device_id: int = 0) -> Any:
        return _real.OrtValue.ortvalue_from_numpy(array, _cpu(device_type), 0)


class _Binding:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.bound_outputs: list[tuple[str, int]] = []

    def bind_cpu_input(self, name: str, array: Any) -> None:
        self.inner.bind_cpu_input(name, array)

    def bind_ortvalue_input(self, name: str, value: Any) -> None:
        self.inner.bind_ortvalue_input(name, value)

    def bind_ortvalue_output(self, name: str, value: Any) -> None:
        self.bound_outputs.append((name, value.data_ptr()))
        self.inner.bind_ortvalue_output(name, value)

    def bind_output(self, name: str, device_type: str = "cpu", device_id: int = 0, *args: Any) -> None:
        self.inner.bind_output(name, _cpu(device_type), 0, *args)

    def get_outputs(self) -> Any:
        return self.inner.get_outputs()


class Module:
    """Use as `_ort()`: `Module("1.17.1")`, the onnxruntime-gpu of that release on this CPU."""

    def __init__(self, version: str, providers: tuple[str, ...] = GPU_PROVIDERS) -> None:
        if version not in OPTIONS:
            raise ValueError(f"no option table for onnxruntime-gpu {version}; have {sorted(OPTIONS)}")
        self.__version__ = version
        self._providers = providers
        self.SessionOptions = _real.SessionOptions
        self.GraphOptimizationLevel = _real.GraphOptimizationLevel
        self.OrtValue = OrtValue
        self.sessions: list[Session] = []
        self.errors: list[str] = []

    def get_available_providers(self) -> list[str]:
        return [*self._providers, "CPUExecutionProvider"]

    def InferenceSession(self, path: str, sess_options: Any = None, providers: Any = None, **kwargs: Any) -> Session:
        # keyword arguments as the real one takes them (e.g. disabled_optimizers), passed to the CPU session
        session = Session(self, path, sess_options, list(providers or ["CPUExecutionProvider"]), **kwargs)
        self.sessions.append(session)
        return session


class Session:
    def __init__(self, module: Module, path: str, sess_options: Any, providers: list[Any], **kwargs: Any) -> None:
        self.requested = providers
        active = []
        for p in providers:
            name, opts = p if isinstance(p, tuple) else (p, {})
            if name in GPU_PROVIDERS:
                unknown = sorted(set(opts) - set(OPTIONS[module.__version__][name]))
                if unknown:  # the real provider throws while parsing; InferenceSession retries without it
                    module.errors.append(f"EP Error: [{name}] unknown option(s) {unknown}; falling back")
                    continue
            active.append(name)
        self.active = active or ["CPUExecutionProvider"]
        self.options = {(p[0] if isinstance(p, tuple) else p): (p[1] if isinstance(p, tuple) else {}) for p in providers}
        self.inner = _real.InferenceSession(path, sess_options=sess_options, providers=["CPUExecutionProvider"], **kwargs)
        self.bindings: list[_Binding] = []

    def get_providers(self) -> list[str]:
        return list(self.active)

    def get_inputs(self) -> Any:
        return self.inner.get_inputs()

    def get_outputs(self) -> Any:
        return self.inner.get_outputs()

    def run(self, *args: Any, **kw: Any) -> Any:
        return self.inner.run(*args, **kw)

    def io_binding(self) -> _Binding:
        b = _Binding(self.inner.io_binding())
        self.bindings.append(b)
        return b

    def run_with_iobinding(self, binding: _Binding) -> None:
        self.inner.run_with_iobinding(binding.inner)
