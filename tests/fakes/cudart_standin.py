"""STAND-IN for cuda-python's runtime module (`cuda.bindings.runtime`), backed by host memory.

Not CUDA. It implements the calls `medsam3_rt.backends._cuda` makes, with cuda-python's
calling convention (every call returns a tuple starting with a cudaError_t), so the
TensorRT backend's buffer, stream and CUDA-graph logic runs on a CPU-only machine.
"Device" memory is ctypes host memory, copies are memmove, streams execute immediately,
and stream capture records the work enqueued by the TensorRT stand-in instead of running it,
as real capture does. Counters let tests check allocation reuse.
"""

from __future__ import annotations

import ctypes
import enum
import threading
from dataclasses import dataclass


class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2
    cudaErrorInvalidValue = 1
    cudaErrorInvalidDevice = 101
    cudaErrorInvalidResourceHandle = 400
    cudaErrorStreamCaptureUnsupported = 900


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3


class cudaStreamCaptureMode(enum.IntEnum):
    cudaStreamCaptureModeGlobal = 0
    cudaStreamCaptureModeThreadLocal = 1


cudaStreamNonBlocking = 1
DEVICE_NAME = "Stand-in GPU (host memory, not CUDA)"
COMPUTE_CAPABILITY = (9, 0)
# Further devices are another model, so per-device mistakes show (GPU N's properties, GPU 0's work).
OTHER_DEVICE_NAME = "Stand-in GPU B (host memory, not CUDA)"
OTHER_COMPUTE_CAPABILITY = (8, 6)


def device_props(device: int) -> tuple[str, tuple[int, int]]:
    return (DEVICE_NAME, COMPUTE_CAPABILITY) if device == 0 else (OTHER_DEVICE_NAME, OTHER_COMPUTE_CAPABILITY)


@dataclass
class _Props:
    name: bytes
    major: int
    minor: int


class State:
    """Everything the stand-in remembers; `reset()` between tests."""

    def __init__(self) -> None:
        self.allocations: dict[int, ctypes.Array] = {}
        self.malloc_calls = 0
        self.memcpy_calls = 0
        self.memory_limit: int | None = None
        self.capturing: dict[int, list] = {}
        self.graph_launches = 0
        self.next_stream = 1
        self.device_count = 1
        # As in CUDA, the current device is per host thread (cudaSetDevice affects the caller only),
        # starting at 0 in every new thread; streams and allocations belong to the device current
        # when they were created, and work enqueued on a stream of another device fails.
        self.current = threading.local()
        self.stream_device: dict[int, int] = {}
        self.allocation_device: dict[int, int] = {}


def current_device() -> int:
    return getattr(state.current, "device", 0)


state = State()


def reset() -> None:
    global state
    state = State()


def _ok(*values):
    return (cudaError_t.cudaSuccess, *values)


def cudaGetErrorName(err):
    return _ok(cudaError_t(int(err)).name.encode())


def cudaGetDeviceCount():
    return _ok(state.device_count)


def cudaGetDeviceProperties(device):
    if not 0 <= device < state.device_count:
        return (cudaError_t.cudaErrorInvalidDevice, None)
    name, cc = device_props(device)
    return _ok(_Props(name.encode() + b"\0\0", *cc))


def cudaSetDevice(device):
    if not 0 <= device < state.device_count:
        return (cudaError_t.cudaErrorInvalidDevice,)
    state.current.device = int(device)
    return _ok()


def cudaGetDevice():
    return _ok(current_device())


def cudaStreamCreateWithFlags(flags):
    handle = state.next_stream
    state.next_stream += 1
    state.stream_device[handle] = current_device()
    return _ok(handle)


def cudaStreamSynchronize(stream):
    return _ok()


def cudaStreamDestroy(stream):
    return _ok()


def cudaMalloc(nbytes):
    used = sum(len(b) for b in state.allocations.values())
    if state.memory_limit is not None and used + nbytes > state.memory_limit:
        return (cudaError_t.cudaErrorMemoryAllocation, 0)
    buf = ctypes.create_string_buffer(int(nbytes))
    ptr = ctypes.addressof(buf)
    state.allocations[ptr] = buf
    state.allocation_device[ptr] = current_device()
    state.malloc_calls += 1
    return _ok(ptr)


def cudaFree(ptr):
    if int(ptr) not in state.allocations:
        return (cudaError_t.cudaErrorInvalidValue,)
    del state.allocations[int(ptr)]
    return _ok()


def cudaMemcpyAsync(dst, src, count, kind, stream):
    state.memcpy_calls += 1
    ctypes.memmove(int(dst), int(src), int(count))
    return _ok()


def check_launch(stream: int, pointers) -> str | None:
    """Why a kernel launch on `stream` touching `pointers` fails from this thread, or None."""
    here = current_device()
    owner = state.stream_device.get(int(stream), 0)
    if owner != here:
        return f"stream of device {owner} used while device {here} is current on this thread (cudaErrorInvalidResourceHandle)"
    for p in pointers:
        for base, buf in state.allocations.items():
            if base <= int(p) < base + len(buf) and state.allocation_device.get(base, 0) != here:
                return f"memory of device {state.allocation_device[base]} used from device {here}"
    return None


def enqueue(stream: int, work) -> None:
    """Called by the TensorRT stand-in: run now, or record while the stream is being captured."""
    if int(stream) in state.capturing:
        state.capturing[int(stream)].append(work)
    else:
        work()


def cudaStreamBeginCapture(stream, mode):
    state.capturing[int(stream)] = []
    return _ok()


def cudaStreamEndCapture(stream):
    return _ok(("graph", state.capturing.pop(int(stream))))


def cudaGraphInstantiate(graph, flags):
    return _ok(("exec", graph[1]))


def cudaGraphLaunch(graph_exec, stream):
    state.graph_launches += 1
    for work in graph_exec[1]:
        work()
    return _ok()


def cudaGraphExecDestroy(graph_exec):
    return _ok()


def cudaGraphDestroy(graph):
    return _ok()
