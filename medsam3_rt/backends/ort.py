"""ONNX Runtime backends: CPU, CUDA and TensorRT execution providers.

ONNX Runtime silently drops a GPU provider it cannot load (e.g. onnxruntime-gpu without
CUDA libraries) and runs on the CPU instead. We check `get_providers()` after creating
every session and refuse, so `backend="ort-cuda"` never means "slowly on the CPU".

On the GPU providers, runs go through I/O binding: outputs the model keeps on the device
(backbone features) are bound to CUDA memory and returned as `OrtDeviceTensor`s (OrtValues)
that the next graph binds as inputs without a host copy; everything else is bound to host
memory. ort-trt takes its optimisation profiles from the same axis ranges as
`medsam3-rt build` (medsam3_rt.engines). The CUDA and TensorRT provider paths are
UNVERIFIED on hardware (no GPU with onnxruntime-gpu was available); the I/O-binding code
itself runs in CI on the CPU device.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .. import engines as eng
from ..errors import BackendUnavailableError, ModelError, UsageError, first_line
from ..manifest import GraphEntry
from . import ort_options
from .base import Availability, Backend, DeviceTensor, GraphRunner, OrtCpuOptions, OrtGpuOptions, Tensor, as_numpy, run_chunked

log = logging.getLogger(__name__)

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(bool)": "bool",
    "tensor(uint8)": "uint8",
}


# ONNX Runtime graph optimizers that fold Cast(fp16 initializer) into an fp32 initializer.
FP16_WEIGHT_FOLDING = ("ConstantFolding", "FuseFp16InitializerToFp32NodeTransformer")


def _ort():
    try:
        import onnxruntime
    except ImportError as e:  # pragma: no cover - a base dependency
        raise BackendUnavailableError("ort-cpu", f"onnxruntime is not importable ({e}); pip install onnxruntime") from e
    return onnxruntime


class OrtDeviceTensor(DeviceTensor):
    """An ONNX Runtime OrtValue left where the provider put it (CUDA memory on ort-cuda/ort-trt)."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.shape = tuple(int(d) for d in value.shape())
        self.dtype = np.dtype(_ORT_TYPES.get(value.data_type(), "float32"))
        self.device = str(value.device_name()).lower()

    def numpy(self) -> np.ndarray:
        return self.value.numpy()


def is_static(entry: GraphEntry) -> bool:
    """Whether every input of the graph has fixed dims (no P/N/M/K axis)."""
    return all(isinstance(d, int) for t in entry.spec.inputs for d in t.shape)


class OrtRunner(GraphRunner):
    accepts_device_tensors = True

    def __init__(
        self, entry: GraphEntry, path: Path, session: Any, io_device: tuple[str, int] | None = None, *, fixed_io: bool = False
    ) -> None:
        super().__init__(entry)
        self.session = session
        self.path = path
        self.io_device = io_device  # ("cuda", device_id): bind device outputs there
        # CUDA graphs replay the captured kernels on the captured addresses: with `fixed_io`
        # every input and output lives in one device OrtValue allocated once and updated in
        # place, bound once; outputs come back as host copies (the next replay overwrites them).
        self.fixed_io = fixed_io and io_device is not None
        self._fixed: tuple[Any, dict[str, Any], dict[str, Any]] | None = None
        self._dtypes = {t.name: np.dtype(t.dtype) for t in self.spec.inputs}
        self.batch_axis = eng.batch_axis(entry.spec)
        self.max_batch: int | None = None  # ort-trt: the profile's max along the batch axis; larger batches are chunked
        self.check_declared_io(
            {i.name: _ORT_TYPES.get(i.type, i.type) for i in session.get_inputs()},
            {o.name: _ORT_TYPES.get(o.type, o.type) for o in session.get_outputs()},
            path,
        )
        self._outputs = list(self.spec.output_names)

    def keep_outputs_on_device(self, names: Any) -> None:
        if self.io_device is not None:  # host-only sessions have no device memory to keep
            super().keep_outputs_on_device(names)

    def _run(self, feeds: Mapping[str, Tensor]) -> dict[str, Tensor]:
        chunked = run_chunked(self.spec, feeds, self.batch_axis, self.max_batch, self._run_direct)
        return chunked if chunked is not None else self._run_direct(feeds)

    def _run_direct(self, feeds: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if self.fixed_io:
            return self._run_fixed(feeds)
        if self.io_device is None or not (self.device_outputs or any(isinstance(v, OrtDeviceTensor) for v in feeds.values())):
            values = self.session.run(self._outputs, {k: as_numpy(v) for k, v in feeds.items()})
            return dict(zip(self._outputs, values))
        return self._run_bound(feeds)

    def _run_bound(self, feeds: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """I/O binding: device tensors in and out without host copies, the rest via host memory."""
        assert self.io_device is not None
        device_type, device_id = self.io_device
        binding = self.session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, OrtDeviceTensor):
                binding.bind_ortvalue_input(name, value.value)
            else:
                binding.bind_cpu_input(name, np.ascontiguousarray(as_numpy(value)))
        for name in self._outputs:
            if name in self.device_outputs:
                binding.bind_output(name, device_type, device_id)
            else:
                binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        out: dict[str, Tensor] = {}
        for name, value in zip(self._outputs, binding.get_outputs()):
            out[name] = OrtDeviceTensor(value) if name in self.device_outputs else value.numpy()
        return out

    def _run_fixed(self, feeds: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Same device addresses every run (what a captured CUDA graph needs); inputs updated in place."""
        assert self.io_device is not None
        ort = _ort()
        device_type, device_id = self.io_device
        if self._fixed is None:
            binding = self.session.io_binding()
            inputs, outputs = {}, {}
            for t in self.spec.inputs:
                value = ort.OrtValue.ortvalue_from_shape_and_type(list(t.shape), np.dtype(t.dtype).type, device_type, device_id)
                binding.bind_ortvalue_input(t.name, value)
                inputs[t.name] = value
            for t in self.spec.outputs:
                value = ort.OrtValue.ortvalue_from_shape_and_type(list(t.shape), np.dtype(t.dtype).type, device_type, device_id)
                binding.bind_ortvalue_output(t.name, value)
                outputs[t.name] = value
            self._fixed = (binding, inputs, outputs)
        binding, inputs, outputs = self._fixed
        for name, value in feeds.items():
            inputs[name].update_inplace(np.ascontiguousarray(as_numpy(value), dtype=self._dtypes[name]))
        self.session.run_with_iobinding(binding)
        return {name: np.array(outputs[name].numpy(), copy=True) for name in self._outputs}  # never a view of the replayed buffer

    def close(self) -> None:
        self._fixed = None
        self.session = None


class _OrtBackend(Backend):
    provider: ClassVar[str]
    io_device: ClassVar[str | None] = None  # device type for I/O binding ("cuda"); None = plain host runs
    dropped_options: tuple[str, ...] = ()  # provider option keys the installed onnxruntime does not know

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

    def providers(self, entry: GraphEntry | None = None) -> list[Any]:
        return ["CPUExecutionProvider"]

    def _accepted(self, provider: str, options: dict[str, Any]) -> dict[str, Any]:
        """Only the keys this onnxruntime's provider parses (it rejects unknown ones); log the rest."""
        version = str(_ort().__version__)
        result = ort_options.filter_options(provider, options, version)
        if result.dropped:
            self.dropped_options = tuple(dict.fromkeys((*getattr(self, "dropped_options", ()), *result.dropped)))
            log.warning("%s: onnxruntime %s's %s does not know %s; not passed", self.name, version, provider, ", ".join(result.dropped))
            if "use_tf32" in result.dropped:
                log.warning("%s: without use_tf32 set NVIDIA_TF32_OVERRIDE=0 to keep fp32 matmuls exact", self.name)
        return result.options

    def cuda_graph_for(self, entry: GraphEntry | None) -> bool:
        """CUDA graphs only where they are valid: asked for, and every input shape of the graph is fixed.

        A captured graph replays fixed kernels on fixed addresses; graphs with symbolic axes
        (P prompts, N objects, M memories) change shape between runs, so they run uncaptured.
        """
        return bool(getattr(self.settings, "cuda_graph", False)) and entry is not None and self.io_device is not None and is_static(entry)

    def session_options(self) -> Any:
        ort = _ort()
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.settings.intra_op_threads:
            so.intra_op_num_threads = self.settings.intra_op_threads
        if self.settings.inter_op_threads:
            so.inter_op_num_threads = self.settings.inter_op_threads
        so.log_severity_level = 3
        if getattr(self.settings, "lean", False):
            # Peak memory over speed: freed buffers go back to the OS instead of an arena, and
            # weights are not copied into pre-packed layouts next to the originals.
            so.enable_cpu_mem_arena = False
            so.enable_mem_pattern = False
            so.add_session_config_entry("session.disable_prepacking", "1")
        return so

    @staticmethod
    def disabled_optimizers(entry: GraphEntry) -> list[str]:
        """Optimizers that would turn fp16-stored weights back into fp32 initializers at load (measured)."""
        return list(FP16_WEIGHT_FOLDING) if entry.weights == "fp16" else []

    def open(self, entry: GraphEntry, model_dir: Path) -> GraphRunner:
        ort = _ort()
        path = model_dir / entry.file
        try:
            session = ort.InferenceSession(
                str(path),
                sess_options=self.session_options(),
                providers=self.providers(entry),
                disabled_optimizers=self.disabled_optimizers(entry) or None,
            )
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/... types
            raise ModelError(f"ONNX Runtime cannot load {path.name}: {first_line(e)}") from None
        active = session.get_providers()
        if active[0] != self.provider:
            raise BackendUnavailableError(
                self.name, f"ONNX Runtime fell back to {active[0]} for {path.name} (CUDA/TensorRT libraries missing?)"
            )
        log.debug("%s: %s on %s", self.name, path.name, active)
        io = (self.io_device, getattr(self.settings, "device_id", 0)) if self.io_device else None
        return OrtRunner(entry, path, session, io, fixed_io=self.cuda_graph_for(entry))


class OrtCpuBackend(_OrtBackend):
    name = "ort-cpu"
    description = "ONNX Runtime, CPU execution provider"
    provider = "CPUExecutionProvider"
    options_type = OrtCpuOptions


class OrtCudaBackend(_OrtBackend):
    name = "ort-cuda"
    description = "ONNX Runtime, CUDA execution provider (pip install 'medsam3-rt[gpu]')"
    provider = "CUDAExecutionProvider"
    io_device = "cuda"
    options_type = OrtGpuOptions

    def cuda_options(self) -> dict[str, Any]:
        """CUDA provider options: fp32 kept exact (no TF32), memory grown only as requested."""
        if self.settings.precision != "fp32":
            raise UsageError(
                "ort-cuda runs the exported fp32 graphs as they are; for fp16/bf16 use backend 'ort-trt' "
                "(fp16=True) or TensorRT engines (`medsam3-rt build --precision fp16`, backend 'tensorrt')"
            )
        cuda: dict[str, Any] = {
            "device_id": self.settings.device_id,
            "arena_extend_strategy": "kSameAsRequested",  # do not reserve 2x the largest request
            "cudnn_conv_algo_search": "EXHAUSTIVE",  # best convolution kernels; first run is slower
            "do_copy_in_default_stream": True,
            "use_tf32": False,  # TF32 matmuls would silently change fp32 results (~1e-3 relative)
        }
        if self.settings.gpu_mem_limit_bytes:
            cuda["gpu_mem_limit"] = self.settings.gpu_mem_limit_bytes
        return cuda

    def providers(self, entry: GraphEntry | None = None) -> list[Any]:
        cuda = self.cuda_options()
        if self.cuda_graph_for(entry):
            cuda["enable_cuda_graph"] = True
        return [("CUDAExecutionProvider", self._accepted(ort_options.CUDA, cuda)), "CPUExecutionProvider"]


class OrtTensorrtBackend(_OrtBackend):
    name = "ort-trt"
    description = "ONNX Runtime, TensorRT execution provider (builds engines on first run: minutes)"
    provider = "TensorrtExecutionProvider"
    io_device = "cuda"
    options_type = OrtGpuOptions

    def trt_options(self, entry: GraphEntry | None = None) -> dict[str, Any]:
        """TensorRT provider options: precision, caches, and the same profiles as `medsam3-rt build`.

        Without `cache_dir` every new process rebuilds the engines (minutes for SAM3); with it,
        engines and the timing cache are kept in that folder, keyed by ONNX Runtime.
        """
        precision = self.settings.precision
        if precision not in ("fp32", "fp16", "bf16"):
            raise UsageError(f"ort-trt precision '{precision}' is not one of fp32, fp16, bf16")
        trt: dict[str, Any] = {
            "device_id": self.settings.device_id,
            "trt_fp16_enable": precision == "fp16",
            "trt_bf16_enable": precision == "bf16",
            # Norm layers overflow in fp16 (ViT activations reach ~1e3): keep them fp32, like the builder.
            "trt_layer_norm_fp32_fallback": precision != "fp32",
            "trt_builder_optimization_level": 3,
            "trt_cuda_graph_enable": self.cuda_graph_for(entry),
        }
        if self.settings.gpu_mem_limit_bytes:
            trt["trt_max_workspace_size"] = self.settings.gpu_mem_limit_bytes
        if self.settings.cache_dir is not None:
            cache = str(self.settings.cache_dir)
            trt.update(trt_engine_cache_enable=True, trt_engine_cache_path=cache, trt_timing_cache_enable=True, trt_timing_cache_path=cache)
        if entry is not None and any(isinstance(d, str) for t in entry.spec.inputs for d in t.shape):
            lo, opt, hi = eng.profile_shape_strings(eng.derive_profile(entry.spec, eng.axis_ranges()))
            trt.update(trt_profile_min_shapes=lo, trt_profile_opt_shapes=opt, trt_profile_max_shapes=hi)
        return trt

    def open(self, entry: GraphEntry, model_dir: Path) -> GraphRunner:
        runner = super().open(entry, model_dir)
        assert isinstance(runner, OrtRunner)
        if runner.batch_axis is not None:
            runner.max_batch = eng.axis_ranges()[runner.batch_axis].max
        return runner

    def providers(self, entry: GraphEntry | None = None) -> list[Any]:
        trt = self.trt_options(entry)
        version = str(_ort().__version__)
        if trt["trt_bf16_enable"] and not ort_options.known(ort_options.TENSORRT, "trt_bf16_enable", version):
            raise UsageError(
                f"ort-trt bf16 needs trt_bf16_enable, which onnxruntime-gpu {version} does not have (1.23 does); "
                "use precision fp16, TensorRT engines (`medsam3-rt build --precision bf16`), or a newer onnxruntime-gpu"
            )
        return [
            ("TensorrtExecutionProvider", self._accepted(ort_options.TENSORRT, trt)),
            ("CUDAExecutionProvider", self._accepted(ort_options.CUDA, {"device_id": self.settings.device_id, "use_tf32": False})),
            "CPUExecutionProvider",
        ]
