"""The contract every execution backend implements (ONNX Runtime, OpenVINO, TensorRT, ...).

A `Backend` opens one `GraphRunner` per exported graph. Runners take and return numpy
arrays named as in the manifest; the base class checks feeds against the graph contract
before a backend sees them, so every backend fails the same way on bad input.

Device handoff: a GPU runner may return some outputs as `DeviceTensor`s (memory that stays
on the accelerator) when the caller asked for them with `keep_outputs_on_device` (the model
does so for the backbone features, which only other graphs read). Any runner accepts a
`DeviceTensor` feed: runners of the same backend use the device memory directly, others
copy it to the host with `.numpy()`. `as_numpy` is the one explicit device-to-host copy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from ..errors import ManifestError, UsageError
from ..graph_contract import GraphSpec
from ..manifest import GraphEntry, Manifest


class DeviceTensor(ABC):
    """A graph output left in accelerator memory (a TensorRT buffer, an ORT OrtValue, a torch tensor).

    It has the numpy-like `shape`, `dtype` and `ndim` the graph contract checks, and
    `numpy()`, an explicit device-to-host copy. It stays valid while referenced: runners
    never write into memory a live DeviceTensor points to (TensorRT rotates a small pool of
    output buffers, reused once the tensors holding them are gone).
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    device: str = "cuda"

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @abstractmethod
    def numpy(self) -> np.ndarray: ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={list(self.shape)}, dtype={self.dtype}, device={self.device})"


Tensor = np.ndarray | DeviceTensor


def as_numpy(value: Tensor) -> np.ndarray:
    """The host array of a runner output (a copy for device tensors, the array itself otherwise)."""
    return value.numpy() if isinstance(value, DeviceTensor) else value


RunOnce = Callable[[Mapping[str, "Tensor"]], Mapping[str, "Tensor"]]


def run_chunked(
    spec: GraphSpec, feeds: Mapping[str, Tensor], axis: str | None, limit: int | None, run_once: RunOnce
) -> dict[str, Tensor] | None:
    """Run a batch larger than a GPU profile's `limit` along `axis` (P or N) in chunks; None if it fits.

    Only for graphs whose outputs all lead with `axis` (`engines.batch_axis`): each row is
    independent, so concatenating per-chunk outputs equals one big run. Results are host arrays.
    """
    if axis is None or limit is None:
        return None
    batched = {t.name for t in spec.inputs if t.shape and t.shape[0] == axis}
    rows = max((int(feeds[n].shape[0]) for n in batched), default=0)
    if rows <= limit:
        return None
    host = {n: (as_numpy(v) if n in batched else v) for n, v in feeds.items()}
    parts = [run_once({n: (v[i : i + limit] if n in batched else v) for n, v in host.items()}) for i in range(0, rows, limit)]
    return {name: np.concatenate([as_numpy(p[name]) for p in parts], axis=0) for name in spec.output_names}


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
    # GPU deployment (docs/gpu.md):
    precision: str | None = None  # tensorrt: which built engine to load (fp16|bf16|fp32|fp16+int8); torch: CUDA dtype
    keep_on_device: bool = True  # GPU backends hand backbone features to the next graph without a host copy
    cuda_graph: bool = False  # tensorrt: capture a CUDA graph per input shape; ort-trt: trt_cuda_graph_enable
    compile: bool = False  # torch: torch.compile each graph module (with cuda_graph: mode="reduce-overhead")
    checkpoint: Path | None = None  # torch: the checkpoint the export was made from (checked against the manifest)


# -- typed per-backend options ------------------------------------------------------------
# `BackendOptions` above is the shared form (CLI, `medsam3_rt.load`, any backend); each backend
# declares the typed options it honours (`Backend.options_type`) and reads only those
# (`backend.settings`). Passing another backend's typed options is refused; passing
# `BackendOptions` keeps working and is converted (its `fp16=True` means precision "fp16").

_T = TypeVar("_T")


def _precision(common: BackendOptions, default: str | None) -> str | None:
    if common.precision is not None and common.fp16 and common.precision != "fp16":
        raise UsageError(f"fp16=True and precision='{common.precision}' contradict each other; pass precision only")
    return common.precision or ("fp16" if common.fp16 else default)


@dataclass(frozen=True)
class OrtCpuOptions:
    """ort-cpu. lean=True trades some speed for memory (issue 21): no CPU arena, no memory
    patterns, and no weight pre-packing (pre-packed copies duplicate MatMul/Conv weights)."""

    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    lean: bool = False


@dataclass(frozen=True)
class OrtGpuOptions:
    """ort-cuda / ort-trt. precision: fp32 (ort-cuda only runs fp32) | fp16 | bf16 (ort-trt)."""

    device_id: int = 0
    precision: str = "fp32"
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    gpu_mem_limit_bytes: int | None = None
    cache_dir: Path | None = None  # ort-trt engine and timing caches
    cuda_graph: bool = False  # only applied to fixed-shape graphs
    keep_on_device: bool = True


@dataclass(frozen=True)
class TensorrtOptions:
    """tensorrt. precision picks the built engine (fp16|bf16|fp32|fp16+int8|fp32+int8); None = best fitting."""

    device_id: int = 0
    precision: str | None = None
    cuda_graph: bool = False
    keep_on_device: bool = True


@dataclass(frozen=True)
class OpenVinoOptions:
    device_id: int = 0  # with device "GPU"/"NPU": which one
    precision: str = "fp32"  # fp32 | fp16 (INFERENCE_PRECISION_HINT)
    intra_op_threads: int | None = None
    cache_dir: Path | None = None


@dataclass(frozen=True)
class TorchOptions:
    device_id: int = 0
    precision: str | None = None  # fp32 | bf16 | fp16 (autocast); None = bf16 on CUDA, fp32 on CPU
    compile: bool = False
    cuda_graph: bool = False  # with compile: mode "reduce-overhead"
    checkpoint: Path | None = None
    keep_on_device: bool = True


def typed_options(options_type: type[_T], common: BackendOptions) -> _T:
    """The fields of `common` that `options_type` has (precision resolved from fp16)."""
    names = {f.name for f in fields(options_type)}  # type: ignore[arg-type]
    values: dict[str, Any] = {f.name: getattr(common, f.name) for f in fields(common) if f.name in names and f.name != "precision"}
    if "precision" in names:
        default = next(f.default for f in fields(options_type) if f.name == "precision")  # type: ignore[arg-type]
        values["precision"] = _precision(common, default)  # type: ignore[arg-type]
    return options_type(**values)


def common_options(typed: Any) -> BackendOptions:
    """The shared `BackendOptions` of typed options (what `Model` and older code read)."""
    names = {f.name for f in fields(BackendOptions)}
    return BackendOptions(**{f.name: getattr(typed, f.name) for f in fields(typed) if f.name in names})


class GraphRunner(ABC):
    """Runs one exported graph."""

    # Whether `_run` takes DeviceTensor feeds itself; if not, `run` copies them to the host first.
    accepts_device_tensors: ClassVar[bool] = False

    def __init__(self, entry: GraphEntry) -> None:
        self.entry = entry
        self.spec: GraphSpec = entry.spec
        self.device_outputs: frozenset[str] = frozenset()

    def keep_outputs_on_device(self, names: Iterable[str]) -> None:
        """Ask for these outputs as DeviceTensors; backends without device memory ignore it."""
        if self.accepts_device_tensors:
            self.device_outputs = frozenset(names) & frozenset(self.spec.output_names)

    def run(self, feeds: Mapping[str, Tensor]) -> dict[str, Tensor]:
        self.spec.check_feeds(feeds)  # type: ignore[arg-type]  # DeviceTensors have shape/dtype/ndim
        if not self.accepts_device_tensors:
            feeds = {name: as_numpy(value) for name, value in feeds.items()}
        return self._run(feeds)

    @abstractmethod
    def _run(self, feeds: Mapping[str, Tensor]) -> dict[str, Tensor]: ...

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
    options_type: ClassVar[type] = BackendOptions  # the typed options this backend honours

    @classmethod
    @abstractmethod
    def probe(cls) -> Availability:
        """Whether this backend can run here. Never raises, never allocates device memory."""

    def __init__(self, options: Any = None) -> None:
        """`options`: this backend's typed options (`options_type`), or the shared `BackendOptions`."""
        if options is None or isinstance(options, BackendOptions):
            self.options = options or BackendOptions()
            self.settings: Any = typed_options(self.options_type, self.options) if self.options_type is not BackendOptions else self.options
        elif isinstance(options, self.options_type):
            self.settings = options
            self.options = common_options(options)
        else:
            raise UsageError(f"backend '{self.name}' takes {self.options_type.__name__} or BackendOptions, not {type(options).__name__}")
        self._models: dict[Path, Manifest] = {}

    def attach(self, manifest: Manifest, model_dir: Path) -> None:
        """The model context: `Model` hands over the manifest it validated before opening graphs.

        Backends that need more than a graph entry (TensorRT: the engine entries; torch: the
        checkpoint's source) read it with `manifest_for` instead of re-reading manifest.json.
        """
        self._models[Path(model_dir).resolve()] = manifest

    def manifest_for(self, model_dir: Path) -> Manifest:
        """The attached manifest of `model_dir`, or (a backend used without `Model`) the one on disk."""
        key = Path(model_dir).resolve()
        if key not in self._models:
            from ..manifest import load_manifest

            self._models[key] = load_manifest(model_dir, verify="none")  # graph files are verified by Model
        return self._models[key]

    @classmethod
    def supports(cls, manifest: Manifest, options: BackendOptions | None = None) -> Availability:
        """Whether this backend has what it needs for this export (e.g. engines built for the selected GPU)."""
        return Availability(True)

    @abstractmethod
    def open(self, entry: GraphEntry, model_dir: Path) -> GraphRunner: ...
