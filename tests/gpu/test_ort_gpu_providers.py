"""ONNX Runtime GPU providers: options, the fallback refusal, I/O binding and device handoff (CPU-testable parts)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import phantom

import medsam3_rt
from medsam3_rt import graph_contract as gc
from medsam3_rt.backends import BackendOptions, resolve
from medsam3_rt.backends.ort import OrtCpuBackend, OrtCudaBackend, OrtDeviceTensor, OrtRunner, OrtTensorrtBackend
from medsam3_rt.errors import BackendUnavailableError, UsageError
from medsam3_rt.manifest import load_manifest
from medsam3_rt.model import Model
from medsam3_rt.segmenter import Segmenter


def test_cuda_provider_options() -> None:
    opts = OrtCudaBackend(BackendOptions(device_id=1, gpu_mem_limit_bytes=2 << 30)).cuda_options()
    assert opts["device_id"] == 1 and opts["gpu_mem_limit"] == 2 << 30
    assert opts["use_tf32"] is False and opts["arena_extend_strategy"] == "kSameAsRequested"
    providers = OrtCudaBackend().providers()
    assert providers[0][0] == "CUDAExecutionProvider" and providers[-1] == "CPUExecutionProvider"
    for asked in (BackendOptions(fp16=True), BackendOptions(precision="bf16")):
        with pytest.raises(UsageError, match="ort-trt"):
            OrtCudaBackend(asked).cuda_options()  # never a silent fp32 run when fp16 was asked for


def test_tensorrt_provider_options(tiny_export: Path, tmp_path: Path) -> None:
    m = load_manifest(tiny_export)
    backend = OrtTensorrtBackend(BackendOptions(fp16=True, cache_dir=tmp_path, cuda_graph=True, gpu_mem_limit_bytes=1 << 30))
    text = backend.trt_options(m.graphs[gc.TEXT_ENCODER])
    assert text["trt_fp16_enable"] and not text["trt_bf16_enable"] and text["trt_layer_norm_fp32_fallback"]
    assert text["trt_engine_cache_enable"] and text["trt_engine_cache_path"] == str(tmp_path) == text["trt_timing_cache_path"]
    assert not text["trt_cuda_graph_enable"] and text["trt_max_workspace_size"] == 1 << 30  # P varies: no CUDA graph
    assert text["trt_profile_min_shapes"] == "input_ids:1x32,attention_mask:1x32"
    assert text["trt_profile_max_shapes"] == "input_ids:16x32,attention_mask:16x32"
    det = backend.trt_options(m.graphs[gc.DETECTOR])
    assert f"text_features:16x32x{m.dims.fpn_channels}" in det["trt_profile_max_shapes"]
    backbone = backend.trt_options(m.graphs[gc.IMAGE_BACKBONE])
    assert "trt_profile_min_shapes" not in backbone  # static graph: no profile needed
    assert backbone["trt_cuda_graph_enable"]  # fixed shapes: captured
    bf16 = OrtTensorrtBackend(BackendOptions(precision="bf16")).trt_options()
    assert bf16["trt_bf16_enable"] and not bf16["trt_fp16_enable"] and "trt_engine_cache_enable" not in bf16
    fp32 = OrtTensorrtBackend().trt_options()
    assert not fp32["trt_layer_norm_fp32_fallback"]
    with pytest.raises(UsageError):
        OrtTensorrtBackend(BackendOptions(precision="int8")).trt_options()
    providers = OrtTensorrtBackend().providers(m.graphs[gc.TEXT_ENCODER])
    assert [p[0] if isinstance(p, tuple) else p for p in providers] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]


def test_gpu_providers_unavailable_here_are_refused_with_the_reason(tiny_export: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the refusal is for machines without it")
    for name in ("ort-cuda", "ort-trt"):
        with pytest.raises(BackendUnavailableError, match="has no"):
            resolve(name)
    # ONNX Runtime itself only warns and runs on the CPU when asked for CUDA without it:
    # opening the graph anyway shows the providers check catching that.
    m = load_manifest(tiny_export)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(BackendUnavailableError, match="fell back to CPUExecutionProvider"):
            OrtCudaBackend().open(m.graphs[gc.TEXT_ENCODER], tiny_export)


class _BoundCpuBackend(OrtCpuBackend):
    """ort-cpu through the I/O-binding path with "cpu" as the device: the code ort-cuda runs, minus CUDA."""

    io_device = "cpu"


def test_io_binding_handoff_matches_plain_runs(tiny_export: Path) -> None:
    img = phantom(96, 80)
    with Segmenter(Model(tiny_export, _BoundCpuBackend(), verify="none")) as bound, medsam3_rt.load(tiny_export, "ort-cpu") as plain:
        features = bound.model.encode_image(np.zeros((1, 3, 224, 224), np.float32))
        assert all(isinstance(features[k], OrtDeviceTensor) for k in gc.DET_FPN)  # handed over as OrtValues
        assert features[gc.DET_FPN[0]].dtype == np.float32 and features[gc.DET_FPN[0]].ndim == 4
        got, want = bound.segment(img, ["polyp", "liver"]), plain.segment(img, ["polyp", "liver"])
    np.testing.assert_array_equal(got.masks, want.masks)
    np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=0)


def test_plain_cpu_runner_keeps_numpy(tiny_export: Path) -> None:
    with medsam3_rt.load(tiny_export, "ort-cpu") as seg:
        runner = seg.model.runner(gc.IMAGE_BACKBONE)
        assert runner.device_outputs == frozenset()  # nothing to keep on a host-only session
        out = seg.model.encode_image(np.zeros((1, 3, 224, 224), np.float32))
        assert all(isinstance(v, np.ndarray) for v in out.values())


def test_batches_above_the_profile_run_in_chunks(tiny_export: Path) -> None:
    m = load_manifest(tiny_export)
    backend = OrtCpuBackend()
    runner = backend.open(m.graphs[gc.TEXT_ENCODER], tiny_export)
    assert isinstance(runner, OrtRunner) and runner.batch_axis == "P"
    with medsam3_rt.load(tiny_export, "ort-cpu") as seg:
        ids, attn = seg.model.tokenizer.encode(["polyp", "liver", "left kidney", "spleen", "fetal head"])
    feeds = {gc.INPUT_IDS: ids, gc.ATTENTION_MASK: attn}
    whole = runner.run(feeds)[gc.TEXT_FEATURES]
    calls = []
    direct = runner._run_direct
    runner._run_direct = lambda f: calls.append(len(f[gc.INPUT_IDS])) or direct(f)  # type: ignore[method-assign]
    runner.max_batch = 2  # as ort-trt sets it from the profile
    chunked = runner.run(feeds)[gc.TEXT_FEATURES]
    assert calls == [2, 2, 1]
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-6)
