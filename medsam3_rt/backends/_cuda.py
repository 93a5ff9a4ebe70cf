"""The few CUDA runtime calls the TensorRT backend needs: device query, buffers, one stream, graphs.

Built on **cuda-python** (`cuda.bindings.runtime`, NVIDIA's own thin binding of the CUDA
runtime API), not pycuda, because:

- it is the binding NVIDIA's TensorRT Python samples use, so it shares the runtime API's
  primary context with TensorRT (and with onnxruntime-gpu / torch in the same process),
  whereas pycuda's usual `pycuda.autoinit` creates a separate driver context;
- it ships as prebuilt wheels with no compiler or CUDA toolkit headers at install time
  (pycuda often builds from source against a local toolkit);
- every call returns its `cudaError_t` explicitly, which `_check` turns into a one-line
  error: nothing fails silently;
- it covers CUDA graphs (stream capture) without extra code.

Nothing here is imported unless the `tensorrt` backend is used; without cuda-python the
error names the extra to install. Verified only against a host-memory stand-in of this API
(tests/fakes/cudart_standin.py): no GPU was available to the project when this was written.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from ..errors import BackendUnavailableError, InternalError
from .base import DeviceTensor

_lock = threading.Lock()
_module: Any = None


def cudart() -> Any:
    """The cuda-python runtime module (`cuda.bindings.runtime`, or `cuda.cudart` before 12.6)."""
    global _module
    with _lock:
        if _module is None:
            try:
                from cuda.bindings import runtime as rt
            except ImportError:
                try:
                    from cuda import cudart as rt  # cuda-python < 12.6
                except ImportError as e:
                    raise BackendUnavailableError(
                        "tensorrt", f"cuda-python is not installed ({e.name or e}): pip install 'medsam3-rt[trt]'"
                    ) from None
            _module = rt
        return _module


def _use(module: Any) -> None:
    """Swap the runtime module (tests use a host-memory stand-in)."""
    global _module
    with _lock:
        _module = module


def _error_name(rt: Any, err: Any) -> str:
    try:
        _, name = rt.cudaGetErrorName(err)
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # the error reporting itself must not hide the error
        return f"cudaError {int(err)}"


def _check(result: Any, call: str) -> Any:
    """cuda-python returns (err, *values): raise on err != cudaSuccess, return the values."""
    rt = cudart()
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendUnavailableError("tensorrt", f"CUDA {call} failed: {_error_name(rt, err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def device_count() -> int:
    return int(_check(cudart().cudaGetDeviceCount(), "cudaGetDeviceCount"))


def device_properties(device_id: int) -> tuple[str, str]:
    """(device name, compute capability "major.minor") without allocating device memory."""
    prop = _check(cudart().cudaGetDeviceProperties(device_id), "cudaGetDeviceProperties")
    name = prop.name
    name = name.split(b"\0", 1)[0].decode() if isinstance(name, (bytes, bytearray)) else str(name)
    return name.strip(), f"{int(prop.major)}.{int(prop.minor)}"


def set_device(device_id: int) -> None:
    _check(cudart().cudaSetDevice(device_id), "cudaSetDevice")


class Stream:
    """One non-blocking CUDA stream; `handle` is the integer TensorRT's execute_async_v3 takes."""

    def __init__(self) -> None:
        rt = cudart()
        flags = getattr(rt, "cudaStreamNonBlocking", 1)
        self._stream = _check(rt.cudaStreamCreateWithFlags(flags), "cudaStreamCreateWithFlags")

    @property
    def raw(self) -> Any:
        return self._stream

    @property
    def handle(self) -> int:
        return int(self._stream)

    def synchronize(self) -> None:
        _check(cudart().cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def close(self) -> None:
        if self._stream is not None:
            _check(cudart().cudaStreamDestroy(self._stream), "cudaStreamDestroy")
            self._stream = None


class DeviceBuffer:
    """Device memory that grows to the largest size asked for and is reused (never shrinks).

    `leases` counts the live `CudaTensor`s that point into it; a runner never writes a new
    result into a leased buffer, so a handed-out device tensor stays valid while referenced.
    """

    def __init__(self, nbytes: int = 0) -> None:
        self.ptr = 0
        self.capacity = 0
        self.leases = 0
        if nbytes:
            self.reserve(nbytes)

    def reserve(self, nbytes: int) -> bool:
        """Make room for `nbytes`; returns True when it had to reallocate (the address changed)."""
        if nbytes <= self.capacity:
            return False
        self.free()
        rt = cudart()
        self.ptr = int(_check(rt.cudaMalloc(max(nbytes, 1)), f"cudaMalloc({nbytes} bytes)"))
        self.capacity = nbytes
        return True

    def upload(self, array: np.ndarray, stream: Stream) -> None:
        if array.nbytes > self.capacity:
            raise InternalError(f"upload of {array.nbytes} bytes into a {self.capacity}-byte buffer")
        rt = cudart()
        src = np.ascontiguousarray(array)
        _check(
            rt.cudaMemcpyAsync(self.ptr, src.ctypes.data, src.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.raw),
            "cudaMemcpyAsync(host to device)",
        )
        # Pageable host memory: the copy is staged before cudaMemcpyAsync returns, so `src` may go.

    def copy_from(self, src_ptr: int, nbytes: int, stream: Stream) -> None:
        rt = cudart()
        _check(
            rt.cudaMemcpyAsync(self.ptr, src_ptr, nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream.raw),
            "cudaMemcpyAsync(device to device)",
        )

    def free(self) -> None:
        if self.ptr:
            _check(cudart().cudaFree(self.ptr), "cudaFree")
        self.ptr = 0
        self.capacity = 0


def download(ptr: int, shape: tuple[int, ...], dtype: np.dtype, stream: Stream) -> np.ndarray:
    """Copy device memory to a new host array and wait for it."""
    out = np.empty(shape, dtype)
    if out.nbytes:
        rt = cudart()
        _check(
            rt.cudaMemcpyAsync(out.ctypes.data, ptr, out.nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.raw),
            "cudaMemcpyAsync(device to host)",
        )
    stream.synchronize()
    return out


class CudaGraph:
    """A captured sequence of work on one stream, replayed with one launch."""

    def __init__(self, stream: Stream, enqueue: Any) -> None:
        rt = cudart()
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        _check(rt.cudaStreamBeginCapture(stream.raw, mode), "cudaStreamBeginCapture")
        try:
            enqueue()
        finally:
            graph = _check(rt.cudaStreamEndCapture(stream.raw), "cudaStreamEndCapture")
        self._graph = graph
        self._exec = _check(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")

    def launch(self, stream: Stream) -> None:
        _check(cudart().cudaGraphLaunch(self._exec, stream.raw), "cudaGraphLaunch")

    def close(self) -> None:
        rt = cudart()
        if self._exec is not None:
            _check(rt.cudaGraphExecDestroy(self._exec), "cudaGraphExecDestroy")
            self._exec = None
        if self._graph is not None:
            _check(rt.cudaGraphDestroy(self._graph), "cudaGraphDestroy")
            self._graph = None


class CudaTensor(DeviceTensor):
    """A runner's output buffer handed to the next graph without a host copy.

    It leases its buffer: the runner writes later results elsewhere while this object is
    alive (CPython frees it, and the lease, as soon as the last reference goes), so holding
    a device tensor across runs is safe and steady-state frames still allocate nothing.
    """

    def __init__(self, owner: Any, name: str, buffer: DeviceBuffer, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.owner = owner
        self.name = name
        self.buffer = buffer
        self.ptr = buffer.ptr
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.device = f"cuda:{getattr(owner, 'device_id', 0)}"
        buffer.leases += 1
        self._released = False

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def numpy(self) -> np.ndarray:
        if self.buffer.ptr != self.ptr:
            raise InternalError(f"device tensor '{self.name}' lost its buffer (runner closed?)")
        return download(self.ptr, self.shape, self.dtype, self.owner.stream)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.buffer.leases -= 1

    def __del__(self) -> None:
        self.release()
