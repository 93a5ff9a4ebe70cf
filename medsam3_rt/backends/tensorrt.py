"""Native TensorRT backend: engines built by `medsam3-rt build`, run by tensor name.

Per graph the backend picks the manifest's engine entry that fits this GPU and TensorRT
(`medsam3_rt.engines.select_engine`), refuses a mismatch *before* deserialising
(`check_compatible`: TensorRT version, GPU model / compute capability, source-graph hash),
checks the SHA-256 of the exact bytes it deserialises, and checks the engine's declared
I/O names and dtypes against the manifest.

Execution (TensorRT >= 10 API): one execution context per graph, one CUDA stream for the
whole backend (so graphs hand buffers to each other in stream order without events),
device buffers allocated on first use and reused for every later frame (they only grow),
`set_input_shape` / `set_tensor_address` / `execute_async_v3` by tensor name with every
boolean result checked. Outputs the model asked to keep on the device (backbone features)
come back as `CudaTensor`s that the next graph binds directly: no host round trip between
backbone, detector and tracker. With `BackendOptions(cuda_graph=True)` each distinct set of
shapes and addresses is captured once into a CUDA graph and replayed.

Batches larger than the engine profile's max along P (prompts) or N (objects) run in
chunks, because those graphs are independent per batch row.

Status: UNVERIFIED on real hardware. No GPU or TensorRT was available when this was
written; the logic is exercised on CPU against named stand-ins of the `tensorrt` module and
the CUDA runtime (tests/fakes/), and the real-TensorRT tests skip with their reason.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .. import engines as eng
from ..errors import BackendUnavailableError, EngineIncompatibleError, InputError, InternalError, first_line
from ..manifest import GraphEntry, Manifest
from . import _cuda
from .base import Availability, Backend, BackendOptions, GraphRunner, Tensor, TensorrtOptions, as_numpy, run_chunked

log = logging.getLogger(__name__)

MIN_TENSORRT_MAJOR = 10
MAX_CUDA_GRAPHS = 8  # per runner: one per distinct (shapes, addresses); oldest dropped first
_NP_DTYPES = {"FLOAT": "float32", "HALF": "float16", "INT64": "int64", "INT32": "int32", "BOOL": "bool", "UINT8": "uint8", "INT8": "int8"}


def tensorrt_module() -> Any:
    """`import tensorrt`, or a BackendUnavailableError naming the extra to install."""
    try:
        import tensorrt
    except ImportError as e:
        raise BackendUnavailableError(
            "tensorrt", f"the 'tensorrt' package is not importable ({e.name or e}): pip install 'medsam3-rt[trt]' (needs NVIDIA's index)"
        ) from None
    major = _major(getattr(tensorrt, "__version__", "0"))
    if major < MIN_TENSORRT_MAJOR:
        raise BackendUnavailableError("tensorrt", f"TensorRT {tensorrt.__version__} is too old; medsam3-rt needs TensorRT >= 10")
    return tensorrt


def _major(version: str) -> int:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


def gpu_environment(device_id: int = 0) -> eng.GpuEnvironment:
    """TensorRT version and the GPU's name and compute capability (no device memory allocated)."""
    trt = tensorrt_module()
    name, cc = _cuda.device_properties(device_id)
    raw = str(trt.__version__)
    return eng.GpuEnvironment(eng.normalize_tensorrt_version(raw), name, cc, tensorrt_raw=raw)


def numpy_dtype(trt_dtype: Any) -> str:
    name = getattr(trt_dtype, "name", str(trt_dtype)).split(".")[-1]
    return _NP_DTYPES.get(name, name.lower())


class TensorrtBackend(Backend):
    name = "tensorrt"
    description = "TensorRT engines built by `medsam3-rt build` (pip install 'medsam3-rt[trt]'); unverified on hardware"
    options_type = TensorrtOptions

    @classmethod
    def probe(cls) -> Availability:
        if "tensorrt" not in sys.modules and importlib.util.find_spec("tensorrt") is None:
            return Availability(False, "the 'tensorrt' package is not installed (pip install 'medsam3-rt[trt]')")
        try:
            tensorrt_module()
            count = _cuda.device_count()
        except BackendUnavailableError as e:
            return Availability(False, e.reason)
        except Exception as e:  # a broken driver or library must not crash `info`
            return Availability(False, first_line(e))
        if count < 1:
            return Availability(False, "no CUDA device")
        return Availability(True)

    @classmethod
    def supports(cls, manifest: Manifest, options: BackendOptions | TensorrtOptions | None = None) -> Availability:
        """Auto-selection only takes this backend when every graph has an engine for the selected GPU."""
        try:
            env = gpu_environment(options.device_id if options is not None else 0)
        except BackendUnavailableError as e:
            return Availability(False, e.reason)
        missing = []
        for graph, entry in manifest.graphs.items():
            source = manifest.files.get(entry.file)
            found, reasons = eng.select_engine(manifest.engines, graph, env, None, source.sha256 if source else None)
            if found is None:
                missing.append(f"{graph} ({'; '.join(reasons) or 'none built'})")
        if missing:
            return Availability(
                False,
                f"no engine for {env.device_name} (sm {env.compute_capability}) with TensorRT {env.tensorrt} for: "
                f"{', '.join(missing)}; run `medsam3-rt build MODEL_DIR`",
            )
        return Availability(True)

    def __init__(
        self, options: BackendOptions | TensorrtOptions | None = None, *, engines: Mapping[str, eng.EngineEntry] | None = None
    ) -> None:
        """`engines` names the engine per graph explicitly (the builder's accuracy gate uses it)."""
        super().__init__(options)
        self._explicit = dict(engines or {})
        self.lock = threading.RLock()  # one stream, so runs are serialised
        self.stream: _cuda.Stream | None = None
        self._runtime: Any = None
        self._env: eng.GpuEnvironment | None = None
        self._open_runners = 0

    @property
    def device_id(self) -> int:
        return self.settings.device_id

    def environment(self) -> eng.GpuEnvironment:
        if self._env is None:
            self._env = gpu_environment(self.device_id)
        return self._env

    def _start(self) -> None:
        if self.stream is None:
            trt = tensorrt_module()
            _cuda.set_device(self.device_id)
            self.stream = _cuda.Stream()
            self._logger = trt.Logger(trt.Logger.WARNING)  # must outlive the runtime
            self._runtime = trt.Runtime(self._logger)

    def engine_for(self, entry: GraphEntry, model_dir: Path) -> eng.EngineEntry:
        if entry.name in self._explicit:
            return self._explicit[entry.name]
        env = self.environment()
        found, reasons = eng.select_engine(self.manifest_for(model_dir).engines, entry.name, env, self.settings.precision)
        if found is None:
            wanted = f" {self.settings.precision}" if self.settings.precision else ""
            raise EngineIncompatibleError(
                f"no{wanted} TensorRT engine for graph '{entry.name}' fits {env.device_name} (sm {env.compute_capability}) "
                f"with TensorRT {env.tensorrt} ({'; '.join(reasons) or 'none built'}); "
                f"build one with `medsam3-rt build {model_dir} --precision {self.settings.precision or 'fp16'}`"
            )
        return found

    def open(self, entry: GraphEntry, model_dir: Path) -> GraphRunner:
        engine_entry = self.engine_for(entry, model_dir)
        manifest = self.manifest_for(model_dir)
        source = manifest.files.get(entry.file)
        # Everything that can be decided from the manifest is decided before deserialising.
        eng.check_compatible(engine_entry, self.environment(), model_dir, source.sha256 if source else None)
        data = (model_dir / engine_entry.file).read_bytes()
        eng.verify_engine_bytes(engine_entry, data, model_dir)
        with self.lock:
            self._start()
            _cuda.set_device(self.device_id)  # graphs may be opened lazily, from another thread than the first
            if "version_compatible" in engine_entry.flags:
                self._runtime.engine_host_code_allowed = True  # such engines embed their lean runtime
            engine = self._runtime.deserialize_cuda_engine(data)
            if engine is None:
                raise EngineIncompatibleError(
                    f"TensorRT could not deserialise '{engine_entry.file}' (see its log above); {eng.rebuild_hint(model_dir, engine_entry)}"
                )
            runner = TensorrtRunner(entry, engine_entry, engine, self, model_dir / engine_entry.file)
            self._open_runners += 1
        log.info("tensorrt: %s <- %s (%s)", entry.name, engine_entry.file, engine_entry.label)
        return runner

    def synchronize(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()

    def _runner_closed(self) -> None:
        with self.lock:
            self._open_runners -= 1
            if self._open_runners <= 0 and self.stream is not None:
                self.stream.synchronize()
                self.stream.close()
                self.stream = None
                self._runtime = None


class TensorrtRunner(GraphRunner):
    accepts_device_tensors = True
    max_cuda_graphs: ClassVar[int] = MAX_CUDA_GRAPHS

    def __init__(self, entry: GraphEntry, engine_entry: eng.EngineEntry, engine: Any, backend: TensorrtBackend, path: Path) -> None:
        super().__init__(entry)
        trt = tensorrt_module()
        self.backend = backend
        self.engine_entry = engine_entry
        self.engine = engine
        self.path = path
        self.device_id = backend.device_id
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        modes = {n: engine.get_tensor_mode(n) for n in names}
        dtypes = {n: numpy_dtype(engine.get_tensor_dtype(n)) for n in names}
        self.check_declared_io(
            {n: dtypes[n] for n in names if modes[n] == trt.TensorIOMode.INPUT},
            {n: dtypes[n] for n in names if modes[n] == trt.TensorIOMode.OUTPUT},
            path,
        )
        self.dtypes = {n: np.dtype(d) for n, d in dtypes.items()}
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendUnavailableError("tensorrt", f"{path.name}: TensorRT could not create an execution context (GPU memory?)")
        # Profile 0 bounds every dynamic input: (min, opt, max) shapes.
        self.profile = {
            t.name: tuple(tuple(int(v) for v in s) for s in engine.get_tensor_profile_shape(t.name, 0)) for t in self.spec.inputs
        }
        self.batch_axis = eng.batch_axis(self.spec)
        self.buffers = {n: _cuda.DeviceBuffer() for n in names}
        # Outputs handed out as CudaTensors rotate through a small pool: a buffer still
        # leased by a live tensor is never overwritten (another thread's frame, a held frame).
        self.pools: dict[str, list[_cuda.DeviceBuffer]] = {t.name: [self.buffers[t.name]] for t in self.spec.outputs}
        self._graphs: OrderedDict[tuple, _cuda.CudaGraph] = OrderedDict()
        self._closed = False

    @property
    def stream(self) -> _cuda.Stream:
        if self.backend.stream is None:
            raise InternalError(f"{self.spec.name}: TensorRT runner used after close")
        return self.backend.stream

    # -- batching -------------------------------------------------------------------------
    def max_batch(self) -> int | None:
        """The profile's max along the batch axis (P or N), or None if the graph has none."""
        if self.batch_axis is None:
            return None
        limits = [self.profile[t.name][2][0] for t in self.spec.inputs if t.shape and t.shape[0] == self.batch_axis]
        return min(limits) if limits else None

    def _run(self, feeds: Mapping[str, Tensor]) -> dict[str, Tensor]:
        with self.backend.lock:
            # The current CUDA device is per host thread: a thread that never selected it runs on
            # device 0, where this engine's stream and buffers do not live. Cheap; every call.
            _cuda.set_device(self.device_id)
            chunked = run_chunked(self.spec, feeds, self.batch_axis, self.max_batch(), lambda f: self._run_once(f, allow_device=False))
            return chunked if chunked is not None else self._run_once(feeds, allow_device=True)

    # -- one engine execution ----------------------------------------------------------------
    def _run_once(self, feeds: Mapping[str, Tensor], *, allow_device: bool) -> dict[str, Tensor]:
        ctx, stream = self.context, self.stream
        addresses: dict[str, int] = {}
        for t in self.spec.inputs:
            value = feeds[t.name]
            shape = tuple(int(d) for d in value.shape)
            if not ctx.set_input_shape(t.name, shape):
                lo, _, hi = self.profile[t.name]
                raise InputError(
                    f"{self.spec.name}: input '{t.name}' has shape {list(shape)}, outside the engine's profile "
                    f"{list(lo)}..{list(hi)}; rebuild with a wider --axis (see `medsam3-rt build --help`)"
                )
            if isinstance(value, _cuda.CudaTensor) and getattr(value.owner, "backend", None) is self.backend:
                if value.dtype != self.dtypes[t.name]:
                    raise InternalError(
                        f"{self.spec.name}: device input '{t.name}' is {value.dtype}, the engine takes {self.dtypes[t.name]}"
                    )
                addresses[t.name] = value.ptr  # zero copy: same device, same stream
            else:
                host = np.ascontiguousarray(as_numpy(value), dtype=self.dtypes[t.name])
                buf = self.buffers[t.name]
                buf.reserve(host.nbytes)
                buf.upload(host, stream)
                addresses[t.name] = buf.ptr
        unresolved = ctx.infer_shapes()
        if unresolved:
            raise InternalError(f"{self.spec.name}: TensorRT cannot infer output shapes; unresolved {list(unresolved)}")
        shapes: dict[str, tuple[int, ...]] = {}
        targets: dict[str, _cuda.DeviceBuffer] = {}
        for t in self.spec.outputs:
            shape = tuple(int(d) for d in ctx.get_tensor_shape(t.name))
            if any(d < 0 for d in shape):
                raise InternalError(f"{self.spec.name}: output '{t.name}' has unresolved shape {list(shape)}")
            shapes[t.name] = shape
            buf = self._free_buffer(t.name)
            buf.reserve(max(int(np.prod(shape, dtype=np.int64)) * self.dtypes[t.name].itemsize, 1))
            targets[t.name] = buf
            addresses[t.name] = buf.ptr
        for name, ptr in addresses.items():
            if not ctx.set_tensor_address(name, ptr):
                raise InternalError(f"{self.spec.name}: TensorRT refused the address of '{name}'")
        self._execute(feeds, addresses)
        out: dict[str, Tensor] = {}
        for t in self.spec.outputs:
            if allow_device and t.name in self.device_outputs:
                out[t.name] = _cuda.CudaTensor(self, t.name, targets[t.name], shapes[t.name], self.dtypes[t.name])
            else:
                out[t.name] = _cuda.download(addresses[t.name], shapes[t.name], self.dtypes[t.name], self.stream)
        return out

    def _free_buffer(self, name: str) -> _cuda.DeviceBuffer:
        """An output buffer no live CudaTensor points into (a new one only when all are leased)."""
        pool = self.pools[name]
        for buf in pool:
            if buf.leases == 0:
                return buf
        buf = _cuda.DeviceBuffer()
        pool.append(buf)
        return buf

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.stream.handle):
            raise BackendUnavailableError("tensorrt", f"{self.spec.name}: execute_async_v3 failed (see the TensorRT log above)")

    def _execute(self, feeds: Mapping[str, Tensor], addresses: Mapping[str, int]) -> None:
        if not self.backend.settings.cuda_graph:
            self._enqueue()
            return
        key = (tuple((n, tuple(int(d) for d in feeds[n].shape)) for n in self.spec.input_names), tuple(sorted(addresses.items())))
        graph = self._graphs.get(key)
        if graph is not None:
            self._graphs.move_to_end(key)
            graph.launch(self.stream)
            return
        # First time for these shapes/addresses: a normal run (it also lets TensorRT apply the
        # shape change), then capture the same enqueue for the next runs.
        self._enqueue()
        self._graphs[key] = _cuda.CudaGraph(self.stream, self._enqueue)
        while len(self._graphs) > self.max_cuda_graphs:
            _, old = self._graphs.popitem(last=False)
            old.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self.backend.lock:
            if self.backend.stream is not None:
                _cuda.set_device(self.device_id)
                self.backend.stream.synchronize()
            for g in self._graphs.values():
                g.close()
            self._graphs.clear()
            for buf in {id(b): b for b in [*self.buffers.values(), *(b for p in self.pools.values() for b in p)]}.values():
                buf.free()
            self.context = None
            self.engine = None
        self.backend._runner_closed()
