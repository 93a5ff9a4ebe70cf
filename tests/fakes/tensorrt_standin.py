"""STAND-IN for the `tensorrt` Python module (TensorRT 10 API subset). NOT TensorRT.

TensorRT cannot be installed on CI machines (PyPI's packages download from NVIDIA's index),
so the code that calls it (`medsam3_export.tensorrt_build`, `medsam3_rt.backends.tensorrt`)
is driven against this module in tests. It mirrors the calls and rules those modules rely
on: named I/O tensors, optimisation profiles that reject shapes outside min..max, strongly
typed networks that refuse precision flags, timing caches, an INT8 calibrator protocol,
engines that only deserialise under the same version, and `execute_async_v3` on a stream.

Its "engine" is the ONNX graph the network was parsed from, embedded in the serialised
bytes and executed with ONNX Runtime on the CPU over the host-memory "device" buffers of
`cudart_standin`. A fp16 build therefore really computes in fp16 (the mixed-precision graph
medsam3 wrote), but kernel selection, fusion and every GPU behaviour are not emulated.
Tests that need the real library are marked `trt` and skip here.
"""

from __future__ import annotations

import ctypes
import enum
import json
import struct
from typing import ClassVar

import numpy as np
import onnx
import onnxruntime

from . import cudart_standin

# A real trt.__version__ format (wheels from 10.8 on carry the build number; 10.0-10.7 report
# `10.3.0` or `10.7.0.post1`); tests that need another release set it with `set_version`.
__version__ = "10.8.0.43"


def _release(version: str) -> tuple[int, ...]:
    out = []
    for part in version.split(".")[:3]:
        digits = part[: len(part) - len(part.lstrip("0123456789"))]
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def set_version(version: str) -> None:
    global __version__
    __version__ = version


def _deprecated(what: str, since: tuple[int, int], instead: str) -> None:
    """As the real bindings do for APIs marked [DEPRECATED] in their docstrings (10.1: INT8
    calibrators, "Superseded by explicit quantization"; 10.12: weak-typing builder flags and
    per-layer precision, "Superseded by strong typing")."""
    if _release(__version__)[:2] >= since:
        import warnings

        warnings.warn(f"{what} is deprecated in TensorRT {since[0]}.{since[1]}. {instead}", DeprecationWarning, stacklevel=3)
        deprecations.append(what)


deprecations: list[str] = []
# What the stand-in warns about, since when, and the real bindings' docstring text that says so
# (tests/gpu/test_standin_surface.py finds each text in the real tensorrt_cu12_bindings module).
DEPRECATED = {
    "IBuilderConfig.int8_calibrator": ((10, 1), "Deprecated in TensorRT 10.1. Superseded by explicit quantization."),
    "BuilderFlag.FP16": ((10, 12), "Deprecated in TensorRT 10.12. Superseded by strong typing."),
    "BuilderFlag.BF16": ((10, 12), "Deprecated in TensorRT 10.12. Superseded by strong typing."),
    "BuilderFlag.INT8": ((10, 12), "Deprecated in TensorRT 10.12. Superseded by strong typing."),
    "BuilderFlag.OBEY_PRECISION_CONSTRAINTS": ((10, 12), "Deprecated in TensorRT 10.12. Superseded by strong typing."),
    "ILayer.precision": ((10, 12), "Deprecated in TensorRT 10.12. Superseded by strong typing."),
    "ILayer.set_output_type": ((10, 12), "Deprecated in TensorRT 10.12. Superseded by strong typing."),
}
MAGIC = b"TRTSTANDIN\0"


class ILogger:
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    def __init__(self) -> None:
        pass

    def log(self, severity: int, msg: str) -> None:  # pragma: no cover - overridden
        pass


class Logger(ILogger):
    def __init__(self, min_severity: int = ILogger.WARNING) -> None:
        super().__init__()
        self.min_severity = min_severity
        self.messages: list[str] = []

    def log(self, severity: int, msg: str) -> None:
        self.messages.append(msg)


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    BF16 = 7
    INT64 = 8


float32 = DataType.FLOAT
float16 = DataType.HALF
bfloat16 = DataType.BF16
_ONNX_TO_DT = {
    onnx.TensorProto.FLOAT: DataType.FLOAT,
    onnx.TensorProto.FLOAT16: DataType.HALF,
    onnx.TensorProto.INT64: DataType.INT64,
    onnx.TensorProto.INT32: DataType.INT32,
    onnx.TensorProto.BOOL: DataType.BOOL,
    onnx.TensorProto.UINT8: DataType.UINT8,
}
_DT_TO_NP = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT64: np.int64, DataType.INT32: np.int32}
_DT_TO_NP |= {DataType.BOOL: np.bool_, DataType.UINT8: np.uint8, DataType.INT8: np.int8}


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class BuilderFlag(enum.IntEnum):
    FP16 = 0
    BF16 = 1
    INT8 = 2
    TF32 = 3
    OBEY_PRECISION_CONSTRAINTS = 4
    VERSION_COMPATIBLE = 5


class NetworkDefinitionCreationFlag(enum.IntEnum):
    STRONGLY_TYPED = 5


class MemoryPoolType(enum.Enum):
    WORKSPACE = 0


class HardwareCompatibilityLevel(enum.Enum):
    NONE = 0
    AMPERE_PLUS = 1


class LayerType(enum.Enum):
    CONVOLUTION = 0
    MATRIX_MULTIPLY = 1
    SOFTMAX = 2
    NORMALIZATION = 3
    ELEMENTWISE = 4
    SHAPE = 5
    OTHER = 99


_LAYER_TYPES = {
    "Softmax": LayerType.SOFTMAX,
    "LayerNormalization": LayerType.NORMALIZATION,
    "GroupNormalization": LayerType.NORMALIZATION,
    "Conv": LayerType.CONVOLUTION,
    "MatMul": LayerType.MATRIX_MULTIPLY,
    "Add": LayerType.ELEMENTWISE,
    "Mul": LayerType.ELEMENTWISE,
    "Shape": LayerType.SHAPE,
}


class IInt8EntropyCalibrator2:
    def __init__(self) -> None:
        pass


class ITensor:
    def __init__(self, name: str, dtype: DataType) -> None:
        self.name = name
        self.dtype = dtype


class ILayer:
    def __init__(self, node: onnx.NodeProto, dtypes: dict[str, DataType], logger: ILogger) -> None:
        self.name = node.name
        self.type = _LAYER_TYPES.get(node.op_type, LayerType.OTHER)
        self.num_outputs = len(node.output)
        self.outputs = [ITensor(o, dtypes.get(o, DataType.FLOAT)) for o in node.output]
        self.precision = DataType.FLOAT
        self.precision_is_set = False
        self.output_types: dict[int, DataType] = {}
        self._logger = logger

    def __setattr__(self, key: str, value: object) -> None:
        if key == "precision" and "precision" in self.__dict__:
            _deprecated("ILayer.precision", (10, 12), "Superseded by strong typing.")
            self.__dict__["precision_is_set"] = True
        super().__setattr__(key, value)

    def get_output(self, index: int) -> ITensor:
        return self.outputs[index]

    def set_output_type(self, index: int, dtype: DataType) -> None:
        _deprecated("ILayer.set_output_type", (10, 12), "Superseded by strong typing.")
        if self.type == LayerType.SHAPE or self.outputs[index].dtype not in (DataType.FLOAT, DataType.HALF, DataType.BF16):
            # TensorRT logs an error (shape tensors must stay INT32/INT64) that then becomes the
            # builder's last error message.
            self._logger.log(ILogger.ERROR, f"{self.name}: cannot set output type of a {self.outputs[index].dtype.name} shape tensor")
            return
        self.output_types[index] = dtype


class INetworkDefinition:
    def __init__(self, flags: int) -> None:
        self.strongly_typed = bool(flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)))
        self.model: onnx.ModelProto | None = None
        self.layers: list[ILayer] = []

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def get_layer(self, i: int) -> ILayer:
        return self.layers[i]


class OnnxParser:
    def __init__(self, network: INetworkDefinition, logger: ILogger) -> None:
        self.network = network
        self.logger = logger
        self.errors: list[str] = []

    def parse_from_file(self, path: str) -> bool:
        """Like TensorRT's parser, reject a graph that is not a valid model (checked, shapes inferred), not just unreadable bytes."""
        try:
            model = onnx.load(path)
            onnx.checker.check_model(path, full_check=True)
            inferred = onnx.shape_inference.infer_shapes(model)
        except Exception as e:
            self.errors.append(f"ModelImporter: {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            return False
        dtypes = {}
        for v in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input):
            dtypes[v.name] = _ONNX_TO_DT.get(v.type.tensor_type.elem_type, DataType.FLOAT)
        self.network.model = model
        self.network.layers = [ILayer(n, dtypes, self.logger) for n in model.graph.node]
        return True

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, i: int) -> str:
        return self.errors[i]


class IOptimizationProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[list[int], list[int], list[int]]] = {}

    def set_shape(self, name: str, min: tuple, opt: tuple, max: tuple) -> None:
        self.shapes[name] = (list(min), list(opt), list(max))


def _current_gpu() -> dict:
    name, cc = cudart_standin.device_props(cudart_standin.current_device())
    return {"device": name, "cc": list(cc), "version": __version__}


class ITimingCache:
    """Tactic timings are only valid for the GPU model (and TensorRT) that measured them: the blob
    records the device; `set_timing_cache(cache, ignore_mismatch=False)` refuses another one's."""

    def __init__(self, blob: bytes) -> None:
        data = json.loads(blob.decode()) if blob else {**_current_gpu(), "entries": []}
        self.device = {k: data[k] for k in ("device", "cc", "version")}
        self.entries: set[str] = set(data["entries"])
        self.loaded = set(self.entries)

    def serialize(self) -> bytes:
        return json.dumps({**self.device, "entries": sorted(self.entries)}).encode()


class IBuilderConfig:
    def __init__(self, logger: ILogger | None = None) -> None:
        self.logger = logger or Logger()
        self._calibrator: IInt8EntropyCalibrator2 | None = None
        self.flags: set[BuilderFlag] = {BuilderFlag.TF32}  # TF32 is on by default, as in TensorRT
        self.pool_limits: dict[MemoryPoolType, int] = {}
        self.builder_optimization_level = 3
        self.hardware_compatibility_level = HardwareCompatibilityLevel.NONE
        self.profiles: list[IOptimizationProfile] = []
        self.timing_cache: ITimingCache | None = None

    def set_flag(self, flag: BuilderFlag) -> None:
        if flag in (BuilderFlag.FP16, BuilderFlag.BF16, BuilderFlag.INT8, BuilderFlag.OBEY_PRECISION_CONSTRAINTS):
            _deprecated(f"BuilderFlag.{flag.name}", (10, 12), "Superseded by strong typing.")
        self.flags.add(flag)

    def clear_flag(self, flag: BuilderFlag) -> None:
        self.flags.discard(flag)

    def get_flag(self, flag: BuilderFlag) -> bool:
        return flag in self.flags

    def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
        self.pool_limits[pool] = size

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, blob: bytes) -> ITimingCache:
        return ITimingCache(bytes(blob))

    def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
        here = _current_gpu()
        if not ignore_mismatch and (cache.device["device"], cache.device["cc"]) != (here["device"], here["cc"]):
            self.logger.log(ILogger.ERROR, f"timing cache was created on {cache.device['device']}, this is {here['device']}")
            return False
        self.timing_cache = cache
        return True

    @property
    def int8_calibrator(self) -> IInt8EntropyCalibrator2 | None:
        return self._calibrator

    @int8_calibrator.setter
    def int8_calibrator(self, value: IInt8EntropyCalibrator2 | None) -> None:
        _deprecated("IBuilderConfig.int8_calibrator", (10, 1), "Superseded by explicit quantization.")
        self._calibrator = value


class Builder:
    built: ClassVar[list[dict]] = []  # every build's header, for tests

    def __init__(self, logger: ILogger) -> None:
        self.logger = logger

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        return INetworkDefinition(flags)

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig(self.logger)

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def _fail(self, msg: str) -> None:
        self.logger.log(ILogger.ERROR, msg)

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> bytes | None:
        model = network.model
        if model is None:
            self._fail("network is empty")
            return None
        typed_flags = {BuilderFlag.FP16, BuilderFlag.BF16, BuilderFlag.INT8} & config.flags
        if network.strongly_typed and typed_flags:
            self._fail(f"strongly typed networks take no precision flags, got {sorted(f.name for f in typed_flags)}")
            return None
        init = {t.name for t in model.graph.initializer}
        io = []
        profile = config.profiles[0].shapes if config.profiles else {}
        for v in model.graph.input:
            if v.name in init:
                continue
            dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            if any(isinstance(d, str) for d in dims) and v.name not in profile:
                self._fail(f"input {v.name} has dynamic dims {dims} but no optimisation profile")
                return None
            io.append({"name": v.name, "mode": "INPUT", "dtype": _ONNX_TO_DT[v.type.tensor_type.elem_type].name, "shape": dims})
        for v in model.graph.output:
            dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            io.append({"name": v.name, "mode": "OUTPUT", "dtype": _ONNX_TO_DT[v.type.tensor_type.elem_type].name, "shape": dims})
        if BuilderFlag.INT8 in config.flags:
            if config.int8_calibrator is None:
                self._fail("INT8 without a calibrator")
                return None
            batches = 0
            while config.int8_calibrator.get_batch([io[0]["name"]]) is not None:
                batches += 1
            config.int8_calibrator.write_calibration_cache(f"standin-calibration:{batches}".encode())
        graph_key = f"{model.graph.name}:{len(model.graph.node)}"
        cache_hit = config.timing_cache is not None and graph_key in config.timing_cache.loaded
        if config.timing_cache is not None:
            config.timing_cache.entries.add(graph_key)
        header = {
            "version": __version__,
            "device": _current_gpu()["device"],  # a plan is specific to the GPU model current while building
            "io": io,
            "profile": profile,
            "strongly_typed": network.strongly_typed,
            "flags": sorted(f.name for f in config.flags),
            "fp32_layers": sorted(layer.name for layer in network.layers if layer.precision_is_set and layer.precision == DataType.FLOAT),
            "workspace": config.pool_limits.get(MemoryPoolType.WORKSPACE),
            "timing_cache_hit": cache_hit,
        }
        Builder.built.append(header)
        head = json.dumps(header).encode()
        return MAGIC + struct.pack("<I", len(head)) + head + model.SerializeToString()


class Runtime:
    deserialized: ClassVar[list[dict]] = []  # headers of every engine deserialised, for tests

    def __init__(self, logger: ILogger) -> None:
        self.logger = logger
        self.engine_host_code_allowed = False  # version-compatible engines need it (lean runtime inside)

    def deserialize_cuda_engine(self, data: bytes) -> ICudaEngine | None:
        if not data.startswith(MAGIC):
            self.logger.log(ILogger.ERROR, "not a serialized engine")
            return None
        (n,) = struct.unpack("<I", data[len(MAGIC) : len(MAGIC) + 4])
        header = json.loads(data[len(MAGIC) + 4 : len(MAGIC) + 4 + n])
        if header.get("device") != _current_gpu()["device"]:
            self.logger.log(
                ILogger.ERROR, f"engine plan was built for {header.get('device')}, the current device is {_current_gpu()['device']}"
            )
            return None
        if _release(header["version"]) != _release(__version__):  # plain engines: same release only
            self.logger.log(ILogger.ERROR, f"engine built with TensorRT {header['version']}")
            return None
        Runtime.deserialized.append(header)
        return ICudaEngine(header, data[len(MAGIC) + 4 + n :])


class ICudaEngine:
    def __init__(self, header: dict, model_bytes: bytes) -> None:
        self.header = header
        self.io = {t["name"]: t for t in header["io"]}
        self.names = [t["name"] for t in header["io"]]
        self.session = onnxruntime.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    @property
    def num_optimization_profiles(self) -> int:
        return 1

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode[self.io[name]["mode"]] if name in self.io else TensorIOMode.NONE

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType[self.io[name]["dtype"]]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(-1 if isinstance(d, str) else d for d in self.io[name]["shape"])

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[list[int]]:
        if name in self.header["profile"]:
            return [list(s) for s in self.header["profile"][name]]
        static = list(self.get_tensor_shape(name))
        return [static, static, static]

    def create_execution_context(self) -> IExecutionContext:
        return IExecutionContext(self)


class IExecutionContext:
    executions = 0  # across all contexts, for tests

    def __init__(self, engine: ICudaEngine) -> None:
        self.engine = engine
        self.input_shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        io = self.engine.io.get(name)
        if io is None or io["mode"] != "INPUT" or len(shape) != len(io["shape"]):
            return False
        lo, _, hi = self.engine.get_tensor_profile_shape(name, 0)
        if any(not a <= s <= b for a, s, b in zip(lo, shape, hi)):
            return False
        self.input_shapes[name] = tuple(int(s) for s in shape)
        return True

    def infer_shapes(self) -> list[str]:
        return [n for n, t in self.engine.io.items() if t["mode"] == "INPUT" and n not in self.input_shapes]

    def _symbols(self) -> dict[str, int]:
        sym: dict[str, int] = {}
        for name, shape in self.input_shapes.items():
            for d, s in zip(self.engine.io[name]["shape"], shape):
                if isinstance(d, str):
                    sym[d] = s
        return sym

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if name in self.input_shapes:
            return self.input_shapes[name]
        sym = self._symbols()
        return tuple(sym.get(d, -1) if isinstance(d, str) else d for d in self.engine.io[name]["shape"])

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        if name not in self.engine.io or not ptr:
            return False
        self.addresses[name] = int(ptr)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        if set(self.addresses) != set(self.engine.io) or self.infer_shapes():
            return False
        plan = {n: (self.addresses[n], self.get_tensor_shape(n), _DT_TO_NP[self.engine.get_tensor_dtype(n)]) for n in self.engine.io}

        def work() -> None:
            IExecutionContext.executions += 1
            feeds = {}
            for n, (ptr, shape, dtype) in plan.items():
                if self.engine.io[n]["mode"] == "INPUT":
                    count = int(np.prod(shape, dtype=np.int64))
                    raw = (ctypes.c_char * (count * np.dtype(dtype).itemsize)).from_address(ptr)
                    feeds[n] = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
            outs = self.engine.session.run(None, feeds)
            for o, value in zip(self.engine.session.get_outputs(), outs):
                ptr, shape, dtype = plan[o.name]
                value = np.ascontiguousarray(value, dtype=dtype)
                if value.shape != tuple(shape):
                    raise RuntimeError(f"stand-in: {o.name} is {value.shape}, context said {shape}")
                ctypes.memmove(ptr, value.ctypes.data, value.nbytes)

        why = cudart_standin.check_launch(stream_handle, self.addresses.values())
        if why is not None:
            print(f"tensorrt stand-in: enqueue failed: {why}")
            return False
        try:
            cudart_standin.enqueue(stream_handle, work)
        except Exception as e:
            print(f"tensorrt stand-in: execution failed: {e}")
            return False
        return True


def reset() -> None:
    set_version("10.8.0.43")
    deprecations.clear()
    Builder.built.clear()
    Runtime.deserialized.clear()
    IExecutionContext.executions = 0
