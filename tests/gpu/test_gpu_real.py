"""Real-library twins of the GPU tests: TensorRT, onnxruntime-gpu and PyTorch on CUDA.

These need an NVIDIA GPU (and TensorRT / onnxruntime-gpu where named) and skip with the
reason otherwise. The code paths they cover run in CI against named stand-ins
(tests/gpu/test_tensorrt_standins.py) or on the CPU (tests/gpu/test_ort_gpu_providers.py, test_torch_backend.py).
None of them had run on a GPU when they were written: no GPU machine was available.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, phantom

import medsam3_rt
from medsam3_rt import graph_contract as gc
from medsam3_rt.backends import BackendOptions, as_numpy
from medsam3_rt.backends.tensorrt import TensorrtBackend

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def _cuda_devices() -> int:
    try:
        from medsam3_rt.backends import _cuda

        return _cuda.device_count()
    except Exception:
        return 0


def _ort_has(provider: str) -> bool:
    import onnxruntime

    return provider in onnxruntime.get_available_providers()


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


needs_trt = pytest.mark.skipif(not (HAS_TRT and _cuda_devices() > 0), reason="needs TensorRT >= 10, cuda-python and an NVIDIA GPU")
needs_ort_cuda = pytest.mark.skipif(not _ort_has("CUDAExecutionProvider"), reason="needs onnxruntime-gpu with CUDA libraries and a GPU")
needs_ort_trt = pytest.mark.skipif(not _ort_has("TensorrtExecutionProvider"), reason="needs onnxruntime-gpu with TensorRT and a GPU")
needs_torch_cuda = pytest.mark.skipif(not _torch_cuda(), reason="needs PyTorch with CUDA and a GPU")


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    from medsam3_rt.metrics import dice

    return dice(a, b)


# -- what runs here: the environment is reported honestly ------------------------------------


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here; this checks the message for machines without it")
def test_without_tensorrt_the_backend_and_build_say_what_to_install(tiny_export: Path) -> None:
    status = TensorrtBackend.probe()
    assert not status.ok and "pip install 'medsam3-rt[trt]'" in status.reason
    proc = cli("build", str(tiny_export))
    assert proc.returncode == 5 and "medsam3-rt[trt]" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


# -- real GPU twins ---------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.trt
@needs_trt
def test_real_tensorrt_build_and_segment(tiny_export: Path, tmp_path: Path) -> None:
    root = tmp_path / "export"
    shutil.copytree(tiny_export, root)
    tb = pytest.importorskip("medsam3_export.tensorrt_build")
    result = tb.build_engines(root, tb.BuildOptions(precision="fp16"))
    assert result.report.passed and len(result.entries) == 3
    img = phantom(120, 100)
    with medsam3_rt.load(root, "auto") as seg, medsam3_rt.load(root, "ort-cpu") as ref:
        assert seg.backend_name == "tensorrt"
        got, want = seg.segment(img, ["polyp", "liver"]), ref.segment(img, ["polyp", "liver"])
        feats = seg.model.encode_image(np.zeros((1, 3, 224, 224), np.float32))
        assert type(feats[gc.DET_FPN[0]]).__name__ == "CudaTensor"
    for k in range(2):
        assert _dice(got.masks[k], want.masks[k]) >= 0.99


@pytest.mark.gpu
@needs_ort_cuda
def test_real_ort_cuda_keeps_features_on_the_device(tiny_export: Path) -> None:
    img = phantom(100, 100)
    with medsam3_rt.load(tiny_export, "ort-cuda") as seg, medsam3_rt.load(tiny_export, "ort-cpu") as ref:
        feats = seg.model.encode_image(np.zeros((1, 3, 224, 224), np.float32))
        assert feats[gc.DET_FPN[0]].device.startswith("cuda")
        got, want = seg.segment(img, ["polyp"]), ref.segment(img, ["polyp"])
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-4)
    assert _dice(got.masks[0], want.masks[0]) >= 0.999


@pytest.mark.gpu
@pytest.mark.trt
@needs_ort_trt
def test_real_ort_tensorrt_fp16(tiny_export: Path, tmp_path: Path) -> None:
    img = phantom(100, 100)
    opts = BackendOptions(fp16=True, cache_dir=tmp_path / "trt-cache")
    with medsam3_rt.load(tiny_export, "ort-trt", options=opts) as seg, medsam3_rt.load(tiny_export, "ort-cpu") as ref:
        got, want = seg.segment(img, ["polyp"]), ref.segment(img, ["polyp"])
    assert _dice(got.masks[0], want.masks[0]) >= 0.99
    assert any((tmp_path / "trt-cache").iterdir())  # engines cached for the next process


@pytest.mark.gpu
@needs_torch_cuda
@pytest.mark.parametrize("compile_", [False, True])
def test_real_torch_cuda_bf16(tiny_export: Path, tiny_hf_dir: Path, compile_: bool) -> None:
    opts = BackendOptions(checkpoint=tiny_hf_dir, precision="bf16", compile=compile_, cuda_graph=compile_)
    img = phantom(100, 100)
    with medsam3_rt.load(tiny_export, "torch", options=opts) as seg, medsam3_rt.load(tiny_export, "ort-cpu") as ref:
        feats = seg.model.encode_image(np.zeros((1, 3, 224, 224), np.float32))
        assert type(feats[gc.DET_FPN[0]]).__name__ == "TorchDeviceTensor" and as_numpy(feats[gc.DET_FPN[0]]).dtype == np.float32
        results = [seg.segment(img, ["polyp", "liver"]) for _ in range(3)]
        want = ref.segment(img, ["polyp", "liver"])
    for got in results:
        for k in range(2):
            assert _dice(got.masks[k], want.masks[k]) >= 0.99


@pytest.mark.gpu
@needs_torch_cuda
def test_real_torch_cuda_stream(tiny_video_export: Path, tiny_video_hf_dir: Path) -> None:
    """Streaming on `torch` + CUDA (fp32) follows ort-cpu frame by frame: the tracker graphs run on the GPU too."""
    from medsam3_rt.tracker.settings import StreamOptions

    opts = StreamOptions(detection_threshold=0.19, new_object_threshold=0.19, max_objects=2)
    frames = [phantom(100, 100, seed=i) for i in range(4)]
    with (
        medsam3_rt.load(tiny_video_export, "torch", options=BackendOptions(checkpoint=tiny_video_hf_dir, precision="fp32")) as seg,
        medsam3_rt.load(tiny_video_export, "ort-cpu") as ref,
    ):
        assert seg.model.backend.device.type == "cuda"
        ours, theirs = seg.stream(["polyp", "liver"], options=opts), ref.stream(["polyp", "liver"], options=opts)
        for frame in frames:
            got, want = ours.push(frame), theirs.push(frame)
            assert ours.num_objects == theirs.num_objects
            assert _dice(got.label_map > 0, want.label_map > 0) >= 0.99 or not (want.label_map > 0).any()
