"""Backend registry and selection.

`resolve("auto")` takes the first available backend in `AUTO_ORDER` and logs why it skipped
the others; an explicit name never falls back: it raises `BackendUnavailableError` with the
reason, so nobody benchmarks the CPU while believing it is the GPU.

Backends from other distributions register under the entry-point group `medsam3_rt.backends`
(the PyTorch backend of the `export` extra does). They are listed from package metadata
only and imported when selected by name, so the runtime never imports torch unless asked.
"""

from __future__ import annotations

import difflib
import logging
from importlib import metadata

from ..errors import BackendUnavailableError, UsageError
from ..manifest import Manifest
from . import ort_install
from .base import (
    Availability,
    Backend,
    BackendOptions,
    DeviceTensor,
    GraphRunner,
    OpenVinoOptions,
    OrtCpuOptions,
    OrtGpuOptions,
    TensorrtOptions,
    TorchOptions,
    as_numpy,
)
from .openvino import OpenVinoBackend
from .ort import OrtCpuBackend, OrtCudaBackend, OrtTensorrtBackend
from .tensorrt import TensorrtBackend

log = logging.getLogger(__name__)
ort_install.warn_if_conflicting()  # onnxruntime and onnxruntime-gpu both installed: say so with the fix

BACKENDS: dict[str, type[Backend]] = {
    b.name: b for b in (TensorrtBackend, OrtTensorrtBackend, OrtCudaBackend, OrtCpuBackend, OpenVinoBackend)
}
AUTO_ORDER = ("tensorrt", "ort-trt", "ort-cuda", "ort-cpu", "openvino")  # tensorrt only where engines fit this GPU
# openvino after ort-cpu: on a 2-core x86 CPU the two measured within noise of each other (cpp_bindings/
# README.md, "OpenVINO and TensorRT"), and ONNX Runtime is the base dependency the export's parity is checked with.
PLUGIN_GROUP = "medsam3_rt.backends"

__all__ = [
    "AUTO_ORDER",
    "BACKENDS",
    "PLUGIN_GROUP",
    "Availability",
    "Backend",
    "BackendOptions",
    "DeviceTensor",
    "GraphRunner",
    "OpenVinoOptions",
    "OrtCpuOptions",
    "OrtGpuOptions",
    "TensorrtOptions",
    "TorchOptions",
    "as_numpy",
    "available",
    "backend_class",
    "plugin_backends",
    "resolve",
]


def plugin_backends() -> dict[str, metadata.EntryPoint]:
    """Backends other packages register (entry points), by name, without importing them."""
    found = {ep.name: ep for ep in metadata.entry_points(group=PLUGIN_GROUP)}
    return {name: ep for name, ep in found.items() if name not in BACKENDS}


def backend_class(name: str) -> type[Backend] | None:
    """A built-in backend, or a plugin imported now (None if no backend has that name)."""
    if name in BACKENDS:
        return BACKENDS[name]
    ep = plugin_backends().get(name)
    if ep is None:
        return None
    try:
        cls = ep.load()
    except ImportError as e:
        hint = "for 'torch': pip install 'medsam3-rt[export]'"
        raise BackendUnavailableError(name, f"its package cannot be imported ({e.name or e}); {hint}") from None
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise BackendUnavailableError(name, f"entry point {ep.value} is not a medsam3_rt Backend")
    return cls


def available() -> dict[str, Availability]:
    """Every backend and whether it runs here; plugins are reported without importing them."""
    status = {name: cls.probe() for name, cls in BACKENDS.items()}
    for name, ep in plugin_backends().items():
        status[name] = Availability(False, f"plugin {ep.value}: not probed (importing it loads its dependencies); select it by name")
    return status


def resolve(name: str, options: BackendOptions | None = None, *, manifest: Manifest | None = None) -> Backend:
    """A backend instance. With `manifest`, "auto" also skips backends lacking this export's artifacts."""
    if name == "auto":
        skipped = []
        for candidate in AUTO_ORDER:
            status = BACKENDS[candidate].probe()
            if status.ok and manifest is not None:
                status = BACKENDS[candidate].supports(manifest, options)
            if status.ok:
                log.info("backend auto -> %s%s", candidate, f" (skipped: {'; '.join(skipped)})" if skipped else "")
                return BACKENDS[candidate](options)
            skipped.append(f"{candidate}: {status.reason}")
        raise BackendUnavailableError("auto", "; ".join(skipped))
    cls = backend_class(name)
    if cls is None:
        names = [*BACKENDS, *plugin_backends()]
        hint = difflib.get_close_matches(name, [*names, "auto"], n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise UsageError(f"unknown backend '{name}'{suggestion}; choose auto or one of: {', '.join(names)}")
    status = cls.probe()
    if not status.ok:
        raise BackendUnavailableError(name, status.reason)
    return cls(options)
