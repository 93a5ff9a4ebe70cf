"""The stand-ins (tests/fakes/) against the real packages' published surface, read without a GPU.

Real packages read (installed by `.ci/run` into `.ci/gpu-reference/` with `pip --target`, so
the CPU onnxruntime of the venv is untouched; another folder via MEDSAM3_GPU_REFERENCE):
- tensorrt_cu12_bindings: `__version__` format, the names the code calls, deprecation notes
  (its extension module needs libnvinfer, so it is read as bytes, not imported);
- cuda-bindings: imported in a subprocess (it loads without a driver): error codes, and that
  the current device is per host thread (cudaSetDevice's docstring);
- onnxruntime-gpu: the option keys its CUDA and TensorRT provider libraries parse.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import cudart_standin, ort_gpu_standin, tensorrt_standin

from medsam3_rt import engines as eng

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = Path(os.environ.get("MEDSAM3_GPU_REFERENCE", ROOT / ".ci" / "gpu-reference"))
INSTALL = (
    "python -m pip install --no-deps --target .ci/gpu-reference onnxruntime-gpu==1.22.0 "
    "tensorrt_cu12_bindings==10.13.3.9 'cuda-bindings==12.9.*' cuda-pathfinder"
)


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} is not in {REFERENCE} (CI installs it: {INSTALL})")
    return path


def _strings(blob: bytes, min_len: int = 6) -> set[str]:
    return {m.decode() for m in re.findall(rb"[\x20-\x7e]{%d,}" % min_len, blob)}


# -- TensorRT -----------------------------------------------------------------------------

CALLED = [  # every TensorRT Python name medsam3 calls (backends/tensorrt.py, export/tensorrt_build.py)
    "deserialize_cuda_engine", "create_execution_context", "set_input_shape", "set_tensor_address", "infer_shapes",
    "execute_async_v3", "get_tensor_profile_shape", "get_tensor_name", "get_tensor_mode", "get_tensor_dtype",
    "num_io_tensors", "build_serialized_network", "create_network", "create_builder_config", "parse_from_file",
    "create_optimization_profile", "set_shape", "add_optimization_profile", "set_memory_pool_limit",
    "create_timing_cache", "set_timing_cache", "builder_optimization_level", "hardware_compatibility_level",
    "engine_host_code_allowed", "int8_calibrator", "set_output_type", "get_output", "STRONGLY_TYPED",
    "OBEY_PRECISION_CONSTRAINTS", "VERSION_COMPATIBLE", "AMPERE_PLUS", "IInt8EntropyCalibrator2",
]  # fmt: skip


@pytest.fixture(scope="module")
def trt_real() -> tuple[str, set[str]]:
    pkg = _need(REFERENCE / "tensorrt_bindings", "tensorrt_cu12_bindings")
    version = re.search(r'__version__ = "([^"]+)"', (pkg / "__init__.py").read_text()).group(1)  # type: ignore[union-attr]
    so = next(pkg.glob("tensorrt*.so"))
    return version, _strings(so.read_bytes(), 4)


def test_tensorrt_version_format_and_names(trt_real) -> None:
    version, strings = trt_real
    assert len(eng.tensorrt_release(version)) >= 3, version
    assert len(eng.tensorrt_release(tensorrt_standin.__version__)) == len(eng.tensorrt_release(version))  # same format
    blob = "\n".join(strings)
    missing = [name for name in CALLED if name not in blob]
    assert not missing, f"TensorRT {version} has no {missing}"
    for name in CALLED:  # and the stand-in offers each (so the code paths run here)
        assert name in Path(tensorrt_standin.__file__).read_text(), name


def test_tensorrt_deprecations_match_the_real_docstrings(trt_real) -> None:
    version, strings = trt_real
    blob = "\n".join(strings)
    for name, (since, text) in tensorrt_standin.DEPRECATED.items():
        assert text in blob, (name, text)
        assert tensorrt_release_at_least(version, since)
    assert "cannot set output type" not in blob  # the stand-in's wording is its own, the rule is TensorRT's


def tensorrt_release_at_least(version: str, since: tuple[int, int]) -> bool:
    return eng.tensorrt_release(version)[:2] >= since


# -- CUDA runtime (cuda-bindings) -----------------------------------------------------------


def test_cudart_standin_matches_cuda_bindings() -> None:
    _need(REFERENCE / "cuda" / "bindings", "cuda-bindings")
    names = [
        "cudaGetDeviceCount", "cudaGetDeviceProperties", "cudaSetDevice", "cudaGetDevice", "cudaStreamCreateWithFlags",
        "cudaStreamSynchronize", "cudaStreamDestroy", "cudaMalloc", "cudaFree", "cudaMemcpyAsync", "cudaStreamBeginCapture",
        "cudaStreamEndCapture", "cudaGraphInstantiate", "cudaGraphLaunch", "cudaGraphExecDestroy", "cudaGraphDestroy",
        "cudaGetErrorName",
    ]  # fmt: skip
    codes = {e.name: int(e) for e in cudart_standin.cudaError_t}
    code = f"""
import json
from cuda.bindings import runtime as rt
names = {names!r}
print(json.dumps({{
    "missing": [n for n in names if not hasattr(rt, n)],
    "codes": {{n: int(getattr(rt.cudaError_t, n)) for n in {list(codes)!r}}},
    "non_blocking": int(rt.cudaStreamNonBlocking),
    "set_device_doc": rt.cudaSetDevice.__doc__,
}}))
"""
    env = {**os.environ, "PYTHONPATH": str(REFERENCE)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/")
    assert proc.returncode == 0, proc.stderr[-2000:]
    real = json.loads(proc.stdout)
    assert real["missing"] == [] and all(hasattr(cudart_standin, n) for n in names)
    assert real["codes"] == codes
    assert real["non_blocking"] == cudart_standin.cudaStreamNonBlocking
    assert "current device for the calling host thread" in real["set_device_doc"]  # what the stand-in models


# -- onnxruntime-gpu ----------------------------------------------------------------------------


def test_ort_option_tables_match_the_installed_onnxruntime_gpu() -> None:
    capi = _need(REFERENCE / "onnxruntime" / "capi", "onnxruntime-gpu")
    dist = next(REFERENCE.glob("onnxruntime_gpu-*.dist-info"))
    version = dist.name.removesuffix(".dist-info").split("-")[1]
    assert version in ort_gpu_standin.OPTIONS, f"add onnxruntime-gpu {version}'s option lists to tests/fakes/data"
    for provider, lib in (("TensorrtExecutionProvider", "tensorrt"), ("CUDAExecutionProvider", "cuda")):
        strings = _strings((capi / f"libonnxruntime_providers_{lib}.so").read_bytes(), 4)
        keys = set()
        for s in strings:  # option names appear alone and in the provider's ", key: " option dump
            keys.update(k for k in re.findall(r"(?:^|, )([a-z][a-z0-9_]+)(?=: |$)", s))
        for key in ort_gpu_standin.OPTIONS[version][provider]:
            assert key in keys, (provider, key)
        for key in ("trt_bf16_enable", "use_tf32"):  # the two the table decides on
            want = key in ort_gpu_standin.OPTIONS[version][provider]
            assert (key in keys) is want, (provider, key, version)


def test_install_check_sees_both_real_onnxruntime_distributions() -> None:
    """The CPU wheel of this venv and the real onnxruntime-gpu wheel: the clash is found and named."""
    import onnxruntime

    from medsam3_rt.backends import ort_install

    _need(REFERENCE / "onnxruntime" / "capi", "onnxruntime-gpu")
    site = str(Path(onnxruntime.__file__).parents[1])
    found = ort_install.installed(path=[site, str(REFERENCE)])
    assert [d.name for d in found] == ["onnxruntime", "onnxruntime-gpu"] and all(d.live for d in found)
    msg = ort_install.conflict_message(found)
    assert msg is not None and "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu" in msg
