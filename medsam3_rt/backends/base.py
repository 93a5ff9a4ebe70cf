"""The contract every execution backend implements (ONNX Runtime, OpenVINO, TensorRT, ...).

A `Backend` opens one `GraphRunner` per exported graph. Runners take and return numpy
arrays named as in the manifest; the base class checks feeds against the graph contract
before a backend sees them, so every backend fails the same way on bad input.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..errors import ManifestError
from ..graph_contract import GraphSpec
from ..manifest import GraphEntry


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""


@dataclass(frozen=True)
class BackendOptions:
    """Knobs shared by backends; each backend documents which it honours."""

    device_id: int = 0
    intra_op_threads: int | None = None  # CPU threads per graph run; None = library default
    inter_op_threads: int | None = None
    cache_dir: Path | None = None  # ORT-TensorRT engine cache, OpenVINO model cache
    fp16: bool = False  # reduced precision where the backend supports it (GPU providers)
    gpu_mem_limit_bytes: int | None = None


class GraphRunner(ABC):
    """Runs one exported graph."""

    def __init__(self, entry: GraphEntry) -> None:
        self.entry = entry
        self.spec: GraphSpec = entry.spec

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.spec.check_feeds(feeds)
        return self._run(feeds)

    @abstractmethod
    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release backend resources; the default has none to release."""

    def check_declared_io(self, inputs: Mapping[str, str], outputs: Mapping[str, str], path: Path) -> None:
        """Compare the names and dtypes a graph file declares with the manifest's contract."""
        want_in = {t.name: t.dtype for t in self.spec.inputs}
        want_out = {t.name: t.dtype for t in self.spec.outputs}
        for kind, got, want in (("inputs", inputs, want_in), ("outputs", outputs, want_out)):
            if set(got) != set(want):
                raise ManifestError(
                    f"{path.name} declares {kind} {sorted(got)}, the manifest says {sorted(want)}; "
                    "the file does not belong to this manifest: re-run `medsam3-rt export`"
                )
            for name, dtype in want.items():
                if got[name] != dtype:
                    raise ManifestError(f"{path.name}: {kind[:-1]} '{name}' is {got[name]}, the manifest says {dtype}")


class Backend(ABC):
    name: ClassVar[str]
    description: ClassVar[str]

    @classmethod
    @abstractmethod
    def probe(cls) -> Availability:
        """Whether this backend can run here. Never raises, never allocates device memory."""

    def __init__(self, options: BackendOptions | None = None) -> None:
        self.options = options or BackendOptions()

    @abstractmethod
    def open(self, entry: GraphEntry, model_dir: Path) -> GraphRunner: ...
