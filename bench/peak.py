"""This machine's measured compute peak (issue 17 item 5): what a speed figure is compared with.

A timed square fp32 GEMM through numpy's BLAS is the best dense rate plain software reaches
here; achieved GFLOP/s of a graph (FLOPs from `medsam3_export.flops`) divided by it says how far
a latency is from the hardware. Best of several runs, so load from other processes lowers it less.

The int8 peak is ONNX Runtime's own u8 x s8 -> s32 GEMM (`MatMulInteger`, the kernel behind
the QDQ graphs `medsam3-rt quantize` writes), timed the same way. The bench package may not
import `onnx`, so the one-node model is written as protobuf bytes here (tests/export/test_flops.py
checks them against `onnx.helper`).
"""

from __future__ import annotations

import math
import time

import numpy as np

__all__ = ["int8_gemm_model", "measure_gemm_peak", "measure_int8_gemm_peak"]


def measure_gemm_peak(n: int = 1024, repeats: int = 5) -> float:
    """Best fp32 GEMM rate of this machine in GFLOP/s (numpy's BLAS, n x n x n, best of `repeats`)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up: thread pool and caches
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        byte, v = v & 0x7F, v >> 7
        out.append(byte | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _field(num: int, value: int | bytes | str) -> bytes:
    """One protobuf field: a varint (int) or a length-delimited payload (bytes, str)."""
    if isinstance(value, int):
        return _varint(num << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(num << 3 | 2) + _varint(len(data)) + data


def _tensor_value(name: str, elem_type: int, shape: tuple[int, ...]) -> bytes:
    dims = b"".join(_field(1, _field(1, d)) for d in shape)  # TensorShapeProto.dim{dim_value}
    tensor_type = _field(1, elem_type) + _field(2, dims)  # TypeProto.Tensor
    return _field(1, name) + _field(2, _field(1, tensor_type))  # ValueInfoProto{name, type{tensor_type}}


def int8_gemm_model(n: int) -> bytes:
    """ONNX model bytes: Y (int32) = MatMulInteger(A uint8 n x n, B int8 n x n), opset 13."""
    uint8, int8, int32 = 2, 3, 6  # onnx.TensorProto element types
    node = _field(1, "A") + _field(1, "B") + _field(2, "Y") + _field(3, "gemm") + _field(4, "MatMulInteger")
    graph = _field(1, node) + _field(2, "int8_gemm")
    graph += _field(11, _tensor_value("A", uint8, (n, n))) + _field(11, _tensor_value("B", int8, (n, n)))
    graph += _field(12, _tensor_value("Y", int32, (n, n)))
    opset = _field(1, "") + _field(2, 13)
    return _field(1, 8) + _field(7, graph) + _field(8, opset)  # ir_version 8, graph, opset_import


def measure_int8_gemm_peak(n: int = 1024, repeats: int = 5, threads: int | None = None) -> float:
    """Best int8 GEMM rate in GOP/s (2 ops per multiply-add): ONNX Runtime's MatMulInteger, n x n x n."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    sess = ort.InferenceSession(int8_gemm_model(n), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"A": rng.integers(0, 256, (n, n), dtype=np.uint8), "B": rng.integers(-128, 128, (n, n), dtype=np.int8)}
    sess.run(None, feeds)  # warm-up
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9
