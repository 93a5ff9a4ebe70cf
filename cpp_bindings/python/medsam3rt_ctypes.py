"""ctypes declarations of libmedsam3rt's C API (include/medsam3rt.h): the one copy for tests and benchmarks.

Not a supported Python binding (use `medsam3_rt` from Python); it exists so that the tests
(tests/cpp/test_cpp_bindings.py) and benchmarks/bench_cpp_vs_python.py call the C library through
the same struct layouts. Keep it in step with medsam3rt.h: each struct mirrors one C struct,
field by field, and `struct_size` fields take `ctypes.sizeof(...)`.

    import sys; sys.path.insert(0, "cpp_bindings/python")
    from medsam3rt_ctypes import Image, load
"""

from __future__ import annotations

import ctypes
from pathlib import Path

# medsam3rt_status
OK, ERROR_INTERNAL, ERROR_USAGE, ERROR_INPUT, ERROR_MODEL, ERROR_BACKEND = 0, 1, 2, 3, 4, 5
# medsam3rt_pixel_format
GRAY, RGB, BGR, RGBA, BGRA = 1, 2, 3, 4, 5
# medsam3rt_pixel_type
UINT8, UINT16 = 1, 2
# medsam3rt_verify
VERIFY_HASH, VERIFY_SIZE, VERIFY_NONE = 0, 1, 2
# medsam3rt_stream_mode
STREAM_TRACK, STREAM_DETECT, STREAM_AUTO = 0, 1, 2


class ModelOptions(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("backend", ctypes.c_char_p),
        ("device", ctypes.c_char_p),
        ("num_threads", ctypes.c_int32),
        ("verify", ctypes.c_int32),
        ("cache_dir", ctypes.c_char_p),
    ]


class Image(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("width", ctypes.c_int32),
        ("height", ctypes.c_int32),
        ("stride_bytes", ctypes.c_int64),
        ("format", ctypes.c_int32),
        ("type", ctypes.c_int32),
    ]


class SegmentOptions(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("min_score", ctypes.c_float),
        ("use_window", ctypes.c_int32),
        ("window_low", ctypes.c_double),
        ("window_high", ctypes.c_double),
    ]


class StreamOptions(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("mode", ctypes.c_int32),
        ("nms", ctypes.c_int32),
        ("fill_holes", ctypes.c_int32),
        ("max_objects", ctypes.c_int32),
        ("max_cond_frames", ctypes.c_int32),
        ("forget_after", ctypes.c_int32),
        ("detection_threshold", ctypes.c_double),
        ("new_object_threshold", ctypes.c_double),
        ("use_window", ctypes.c_int32),
        ("window_low", ctypes.c_double),
        ("window_high", ctypes.c_double),
        ("policy", ctypes.c_int32),
    ]


class Object(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("object_id", ctypes.c_int64),
        ("prompt_index", ctypes.c_int32),
        ("score", ctypes.c_float),
        ("tracker_score", ctypes.c_float),
        ("box", ctypes.c_float * 4),
        ("area", ctypes.c_int64),
        ("mask", ctypes.POINTER(ctypes.c_uint8)),
    ]


def load(path: str | Path) -> ctypes.CDLL:
    """Open libmedsam3rt.so with the return types that are not `int` declared."""
    lib = ctypes.CDLL(str(path))
    lib.medsam3rt_last_error.restype = ctypes.c_char_p
    return lib


def last_error(lib: ctypes.CDLL) -> str:
    return (lib.medsam3rt_last_error() or b"").decode()
