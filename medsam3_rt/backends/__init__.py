"""Backend registry and selection.

`resolve("auto")` takes the first available backend in `AUTO_ORDER` and logs why it skipped
the others; an explicit name never falls back: it raises `BackendUnavailableError` with the
reason, so nobody benchmarks the CPU while believing it is the GPU.
"""

from __future__ import annotations

import difflib
import logging

from ..errors import BackendUnavailableError, UsageError
from .base import Availability, Backend, BackendOptions, GraphRunner
from .ort import OrtCpuBackend, OrtCudaBackend, OrtTensorrtBackend

log = logging.getLogger(__name__)

BACKENDS: dict[str, type[Backend]] = {b.name: b for b in (OrtTensorrtBackend, OrtCudaBackend, OrtCpuBackend)}
AUTO_ORDER = ("ort-trt", "ort-cuda", "ort-cpu")

__all__ = ["AUTO_ORDER", "BACKENDS", "Availability", "Backend", "BackendOptions", "GraphRunner", "available", "resolve"]


def available() -> dict[str, Availability]:
    return {name: cls.probe() for name, cls in BACKENDS.items()}


def resolve(name: str, options: BackendOptions | None = None) -> Backend:
    if name == "auto":
        skipped = []
        for candidate in AUTO_ORDER:
            status = BACKENDS[candidate].probe()
            if status.ok:
                log.info("backend auto -> %s%s", candidate, f" (skipped: {'; '.join(skipped)})" if skipped else "")
                return BACKENDS[candidate](options)
            skipped.append(f"{candidate}: {status.reason}")
        raise BackendUnavailableError("auto", "; ".join(skipped))
    cls = BACKENDS.get(name)
    if cls is None:
        hint = difflib.get_close_matches(name, list(BACKENDS) + ["auto"], n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise UsageError(f"unknown backend '{name}'{suggestion}; choose auto or one of: {', '.join(BACKENDS)}")
    status = cls.probe()
    if not status.ok:
        raise BackendUnavailableError(name, status.reason)
    return cls(options)
