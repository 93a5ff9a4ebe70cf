"""ORT GPU providers against the onnxruntime-gpu stand-in: option keys per release, CUDA graphs, install clash.

The stand-in (tests/fakes/ort_gpu_standin.py) rejects provider option keys a release does not
parse, as the real providers do, with the per-release key lists read from the real wheels.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from fakes import ort_gpu_standin

from medsam3_rt import graph_contract as gc
from medsam3_rt.backends import BackendOptions, ort_install, ort_options
from medsam3_rt.backends import ort as ort_backend
from medsam3_rt.backends.ort import OrtCudaBackend, OrtRunner, OrtTensorrtBackend
from medsam3_rt.errors import UsageError
from medsam3_rt.manifest import load_manifest


@pytest.fixture
def ort_gpu(monkeypatch: pytest.MonkeyPatch):
    def use(version: str) -> ort_gpu_standin.Module:
        module = ort_gpu_standin.Module(version)
        monkeypatch.setattr(ort_backend, "_ort", lambda: module)
        return module

    return use


def test_option_table_matches_the_wheels_lists() -> None:
    for provider, keys in ort_options.OPTION_SINCE.items():
        for key, since in keys.items():
            for release, table in ort_gpu_standin.OPTIONS.items():
                has = key in table[provider]
                assert has is (ort_options.ort_version_tuple(release) >= since), (provider, key, release)


@pytest.mark.parametrize("version", sorted(ort_gpu_standin.OPTIONS))
def test_cuda_and_tensorrt_sessions_open_on_every_release(ort_gpu, tiny_export: Path, version: str, caplog) -> None:
    module = ort_gpu(version)
    m = load_manifest(tiny_export, verify="none")
    for backend in (OrtCudaBackend(), OrtTensorrtBackend(BackendOptions(fp16=True))):
        with caplog.at_level(logging.WARNING):
            runner = backend.open(m.graphs[gc.TEXT_ENCODER], tiny_export)
        assert module.sessions[-1].get_providers()[0] == backend.provider, module.errors
        runner.close()
    assert module.errors == []
    if version == "1.17.1":
        assert OrtCudaBackend.dropped_options == () and "use_tf32" in caplog.text  # said, and why it matters


def test_dropped_keys_are_named(ort_gpu, tiny_export: Path) -> None:
    ort_gpu("1.17.1")
    backend = OrtCudaBackend()
    backend.providers()
    assert backend.dropped_options == ("use_tf32",)
    ort_gpu("1.22.0")
    assert OrtCudaBackend().dropped_options == ()


def test_bf16_on_a_release_without_trt_bf16_enable_is_refused(ort_gpu, tiny_export: Path) -> None:
    ort_gpu("1.22.0")
    with pytest.raises(UsageError, match=r"trt_bf16_enable.*1\.22\.0"):
        OrtTensorrtBackend(BackendOptions(precision="bf16")).providers()
    ort_gpu("1.23.0")
    trt = OrtTensorrtBackend(BackendOptions(precision="bf16")).providers()[0][1]
    assert trt["trt_bf16_enable"] is True


def test_cuda_graphs_only_for_fixed_shape_graphs(ort_gpu, tiny_export: Path) -> None:
    ort_gpu("1.22.0")
    m = load_manifest(tiny_export, verify="none")
    trt = OrtTensorrtBackend(BackendOptions(fp16=True, cuda_graph=True))
    assert trt.trt_options(m.graphs[gc.IMAGE_BACKBONE])["trt_cuda_graph_enable"] is True  # 1x3xSxS
    assert trt.trt_options(m.graphs[gc.TEXT_ENCODER])["trt_cuda_graph_enable"] is False  # P varies
    assert trt.trt_options(m.graphs[gc.DETECTOR])["trt_cuda_graph_enable"] is False
    cuda = OrtCudaBackend(BackendOptions(cuda_graph=True))
    assert cuda.providers(m.graphs[gc.IMAGE_BACKBONE])[0][1]["enable_cuda_graph"] is True
    assert "enable_cuda_graph" not in cuda.providers(m.graphs[gc.DETECTOR])[0][1]
    assert "enable_cuda_graph" not in OrtCudaBackend().providers(m.graphs[gc.IMAGE_BACKBONE])[0][1]


def test_cuda_graph_runner_binds_fixed_addresses_updated_in_place(ort_gpu, tiny_export: Path) -> None:
    module = ort_gpu("1.22.0")
    m = load_manifest(tiny_export, verify="none")
    backend = OrtCudaBackend(BackendOptions(cuda_graph=True))
    runner = backend.open(m.graphs[gc.IMAGE_BACKBONE], tiny_export)
    assert isinstance(runner, OrtRunner) and runner.fixed_io
    runner.keep_outputs_on_device(gc.DET_FPN)
    size = m.dims.image_size
    rng = np.random.default_rng(0)
    frames = [rng.standard_normal((1, 3, size, size)).astype(np.float32) for _ in range(3)]
    outs = [runner.run({gc.PIXEL_VALUES: f}) for f in frames]
    session = module.sessions[-1]
    assert len(session.bindings) == 1  # bound once; every run replays the same addresses
    assert all(isinstance(v, np.ndarray) for o in outs for v in o.values())  # host copies: the next replay overwrites
    plain = ort_backend.OrtCpuBackend().open(m.graphs[gc.IMAGE_BACKBONE], tiny_export)
    for frame, out in zip(frames, outs):
        want = plain.run({gc.PIXEL_VALUES: frame})
        for name in out:
            np.testing.assert_allclose(out[name], want[name], rtol=0, atol=1e-5)


def test_install_clash_is_reported_with_the_fix() -> None:
    both = [ort_install.OrtDistribution("onnxruntime", "1.22.0", False), ort_install.OrtDistribution("onnxruntime-gpu", "1.22.0", True)]
    msg = ort_install.conflict_message(both)
    assert msg is not None and "onnxruntime-gpu's" in msg
    assert "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu" in msg
    assert ort_install.conflict_message(both[:1]) is None
    here = ort_install.installed()
    assert [d.name for d in here] == ["onnxruntime"] and here[0].live  # this venv: the CPU wheel, its own files
    assert "CPUExecutionProvider" in ort_install.describe()


def test_info_shows_the_live_onnxruntime(tiny_export: Path) -> None:
    from conftest import cli

    out = cli("info", str(tiny_export), "--verify", "none", check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("onnxruntime: "))
    assert "onnxruntime " in line and "providers: " in line and "CPUExecutionProvider" in line
