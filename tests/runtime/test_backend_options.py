"""Typed per-backend options: each backend reads only the settings it honours; BackendOptions still works."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import medsam3_rt
from medsam3_rt.backends import (
    BackendOptions,
    OpenVinoOptions,
    OrtCpuOptions,
    OrtGpuOptions,
    TensorrtOptions,
    TorchOptions,
)
from medsam3_rt.backends.openvino import OpenVinoBackend
from medsam3_rt.backends.ort import OrtCpuBackend, OrtCudaBackend, OrtTensorrtBackend
from medsam3_rt.backends.tensorrt import TensorrtBackend
from medsam3_rt.errors import UsageError


def test_each_backend_declares_its_options() -> None:
    assert OrtCpuBackend.options_type is OrtCpuOptions
    assert OrtCudaBackend.options_type is OrtTensorrtBackend.options_type is OrtGpuOptions
    assert TensorrtBackend.options_type is TensorrtOptions and OpenVinoBackend.options_type is OpenVinoOptions
    assert not hasattr(OrtCpuOptions(), "checkpoint") and not hasattr(TensorrtOptions(), "fp16")  # no union of everything


def test_shared_options_convert_fp16_to_precision() -> None:
    assert OrtTensorrtBackend(BackendOptions(fp16=True, device_id=2)).settings == OrtGpuOptions(device_id=2, precision="fp16")
    assert OrtTensorrtBackend().settings.precision == "fp32" and TensorrtBackend().settings.precision is None
    assert OpenVinoBackend(BackendOptions(fp16=True)).settings.precision == "fp16"
    with pytest.raises(UsageError, match="contradict"):
        OrtTensorrtBackend(BackendOptions(fp16=True, precision="bf16"))


def test_typed_options_are_honoured_and_checked() -> None:
    trt = OrtTensorrtBackend(OrtGpuOptions(precision="bf16", device_id=1))
    assert trt.options.precision == "bf16" and trt.options.device_id == 1  # the shared view for Model and older code
    assert trt.trt_options()["device_id"] == 1
    with pytest.raises(UsageError, match="ort-cuda runs the exported fp32 graphs"):
        OrtCudaBackend(OrtGpuOptions(precision="fp16")).cuda_options()
    with pytest.raises(UsageError, match="takes OrtCpuOptions or BackendOptions, not TorchOptions"):
        OrtCpuBackend(TorchOptions())
    with pytest.raises(UsageError, match="openvino precision 'bf16'"):
        OpenVinoBackend(OpenVinoOptions(precision="bf16"))


def test_load_with_typed_options(tiny_export: Path) -> None:
    with medsam3_rt.load(tiny_export, "ort-cpu", options=OrtCpuOptions(intra_op_threads=1), verify="none") as seg:
        assert seg.model.backend.settings.intra_op_threads == 1
        out = seg.model.encode_image(np.zeros((1, 3, 224, 224), np.float32))
        assert all(isinstance(v, np.ndarray) for v in out.values())
