"""`medsam3-rt bench` importable from the repository: the same measuring code, as functions.

    from benchmarks.bench import BenchConfig, run_benchmark, to_markdown, write_plots
    result = run_benchmark(BenchConfig(model_dir=Path("model"), backends=("ort-cpu", "openvino"), frames=8))

or as a script with the CLI's options:

    python -m benchmarks.bench MODEL_DIR --backend ort-cpu --backend openvino --json out.json --plot out.png
"""

from __future__ import annotations

import sys

from medsam3_bench import (
    CURVE_LENGTHS,
    IMAGE_STAGES,
    SCHEMA_FILE,
    SCHEMA_ID,
    STREAM_STAGES,
    BenchConfig,
    Candidate,
    RuntimeCandidate,
    StreamPolicy,
    run_benchmark,
    synthetic_slice,
    to_markdown,
    validate,
    write_plots,
)

__all__ = [
    "CURVE_LENGTHS",
    "IMAGE_STAGES",
    "SCHEMA_FILE",
    "SCHEMA_ID",
    "STREAM_STAGES",
    "BenchConfig",
    "Candidate",
    "RuntimeCandidate",
    "StreamPolicy",
    "main",
    "run_benchmark",
    "synthetic_slice",
    "to_markdown",
    "validate",
    "write_plots",
]


def main(argv: list[str] | None = None) -> None:
    """Run `medsam3-rt bench` with these arguments (same options, same exit codes)."""
    from medsam3_rt.cli.main import run

    run(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
