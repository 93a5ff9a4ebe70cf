"""medsam3_bench: `medsam3-rt bench` as a library (candidates, runner, result schema, report).

    from medsam3_bench import BenchConfig, run_benchmark, to_markdown
    result = run_benchmark(BenchConfig(model_dir=Path("model"), backends=("ort-cpu",), baseline="off"))

Modules: `schema` (the result document and its JSON Schema), `candidates` (what is measured
and the `medsam3_bench.candidates` registry), `runner` (the interleaved measuring), `report`
(markdown and plots), `commands` (the CLI command). Torch-free; baselines that need torch come
from other packages through the registry. Attributes load lazily so listing CLI commands is cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "SCHEMA_FILE": "schema",
    "SCHEMA_ID": "schema",
    "IMAGE_STAGES": "schema",
    "STREAM_STAGES": "schema",
    "TEXT_MISS_STAGES": "schema",
    "CURVE_LENGTHS": "schema",
    "validate": "schema",
    "Candidate": "candidates",
    "ImageOutput": "candidates",
    "RuntimeCandidate": "candidates",
    "StreamHandle": "candidates",
    "StreamOutput": "candidates",
    "StreamPolicy": "candidates",
    "expand_backends": "candidates",
    "BenchConfig": "runner",
    "run_benchmark": "runner",
    "synthetic_slice": "runner",
    "to_markdown": "report",
    "write_plots": "report",
}

__all__ = [
    "CURVE_LENGTHS",
    "IMAGE_STAGES",
    "SCHEMA_FILE",
    "SCHEMA_ID",
    "STREAM_STAGES",
    "TEXT_MISS_STAGES",
    "BenchConfig",
    "Candidate",
    "ImageOutput",
    "RuntimeCandidate",
    "StreamHandle",
    "StreamOutput",
    "StreamPolicy",
    "expand_backends",
    "run_benchmark",
    "synthetic_slice",
    "to_markdown",
    "validate",
    "write_plots",
]

if TYPE_CHECKING:
    from .candidates import Candidate, ImageOutput, RuntimeCandidate, StreamHandle, StreamOutput, StreamPolicy, expand_backends
    from .report import to_markdown, write_plots
    from .runner import BenchConfig, run_benchmark, synthetic_slice
    from .schema import CURVE_LENGTHS, IMAGE_STAGES, SCHEMA_FILE, SCHEMA_ID, STREAM_STAGES, TEXT_MISS_STAGES, validate


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
