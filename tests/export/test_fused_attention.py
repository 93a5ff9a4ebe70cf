"""Fused attention export (issue 21): `--attention fused` emits com.microsoft::MultiHeadAttention.

The export itself checks every graph against transformers (parity report); these tests add:
the custom op is transformers' eager math, the tracker's fused cross-attention branch equals
the unfused one, the fused graphs hold no Softmax left and agree with the unfused export on
ONNX Runtime and OpenVINO, the manifest records it, and TensorRT's build refuses it in one line.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import cli

from medsam3_rt import graph_contract as gc
from medsam3_rt.backends import OrtCpuBackend
from medsam3_rt.manifest import load_manifest


@pytest.fixture(scope="module")
def fused_video_export(tiny_video_hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same checkpoint and semantics as `tiny_video_export`, with fused attention."""
    out = tmp_path_factory.mktemp("fused") / "tiny-video-fused"
    args = ("--quiet", "--prompt-semantics", "transformers", "--tracker-semantics", "transformers", "--attention", "fused")
    cli("export", str(tiny_video_hf_dir), "-o", str(out), *args, check=True)
    return out


def _ops(path: Path) -> collections.Counter[str]:
    return collections.Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


def test_op_is_transformers_eager_attention() -> None:
    from medsam3_export.attention import fused_attention_forward
    from transformers.models.sam3.modeling_sam3 import eager_attention_forward

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, n, 8, generator=g) for n in (5, 7, 7))
    mask = torch.where(torch.rand(2, 1, 5, 7, generator=g) > 0.3, 0.0, torch.finfo(torch.float32).min)
    module = torch.nn.Module().eval()
    for m in (None, mask):
        want, _ = eager_attention_forward(module, q, k, v, m, scaling=0.3)
        got, _ = fused_attention_forward(module, q, k, v, m, scaling=0.3)
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_tracker_fused_branch_equals_unfused(tiny_video_hf_dir: Path) -> None:
    """The memory cross-attention written for the fused op (values through the op) is the same math."""
    from medsam3_export.attention import attention_mode
    from medsam3_export.checkpoint import load_checkpoint
    from medsam3_export.exporter import model_dims, parity_inputs
    from medsam3_export.graphs import build_graph_module

    ckpt = load_checkpoint(tiny_video_hf_dir)
    dims = model_dims(ckpt)
    step = build_graph_module(gc.TRACKER_STEP, ckpt, dims)
    backbone = build_graph_module(gc.IMAGE_BACKBONE, ckpt, dims)
    pixels = np.random.default_rng(0).standard_normal((1, 3, dims.image_size, dims.image_size)).astype(np.float32)
    with torch.no_grad():
        feats = backbone(torch.from_numpy(pixels))
        refs = {gc.IMAGE_BACKBONE: {t.name: f.numpy() for t, f in zip(gc.expected_specs(dims)[gc.IMAGE_BACKBONE].outputs, feats)}}
        inputs = parity_inputs(gc.TRACKER_STEP, dims, np.zeros(0), np.zeros(0), pixels, refs)
        outs = {}
        for mode in ("unfused", "fused"):
            with attention_mode(ckpt.video, mode, [step]):
                assert step.use_fused_attention is (mode == "fused")
                outs[mode] = step(*inputs.values())
    assert step.use_fused_attention is False  # restored
    for want, got in zip(outs["unfused"], outs["fused"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_fused_graphs_hold_no_softmax(fused_video_export: Path, tiny_video_export: Path) -> None:
    fused, unfused = load_manifest(fused_video_export), load_manifest(tiny_video_export)
    raw = json.loads((fused_video_export / "manifest.json").read_text())
    for name, entry in fused.graphs.items():
        ops, plain = _ops(fused_video_export / entry.file), _ops(tiny_video_export / unfused.graphs[name].file)
        assert ops["Softmax"] == 0, name
        # every attention of the unfused graph (one Softmax each) became one fused node
        assert ops["MultiHeadAttention"] == plain["Softmax"], name
        assert entry.attention == ("fused" if plain["Softmax"] else "unfused") == raw["graphs"][name]["attention"]
        assert unfused.graphs[name].attention == "unfused"
    assert fused.parity["passed"] is True


def _graph_outputs(backend: object, export: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every graph run on the same chained inputs (the exporter's parity inputs)."""
    from medsam3_export.exporter import PARITY_PROMPTS, parity_image, parity_inputs

    from medsam3_rt.preprocess import pixel_values
    from medsam3_rt.tokenizer import ClipTokenizer

    m = load_manifest(export)
    ids, attn = ClipTokenizer(export / m.tokenizer.file, m.tokenizer).encode(PARITY_PROMPTS)
    pixels = pixel_values(parity_image(m.dims.image_size), m.preprocess)
    outs: dict[str, dict[str, np.ndarray]] = {}
    for name in (gc.TEXT_ENCODER, gc.IMAGE_BACKBONE, gc.DETECTOR, *gc.TRACKER_GRAPHS):
        inputs = parity_inputs(name, m.dims, ids, attn, pixels, outs)
        runner = backend.open(m.graphs[name], export)  # type: ignore[attr-defined]
        outs[name] = dict(runner.run({k: v.numpy() for k, v in inputs.items()}))
        runner.close()
    return outs


def test_fused_export_agrees_with_unfused_on_ort(fused_video_export: Path, tiny_video_export: Path) -> None:
    want, got = _graph_outputs(OrtCpuBackend(), tiny_video_export), _graph_outputs(OrtCpuBackend(), fused_video_export)
    for name, outs in want.items():
        for out, ref in outs.items():
            scale = float(np.abs(ref).max()) if ref.size else 0.0
            np.testing.assert_allclose(got[name][out], ref, rtol=0, atol=1e-4 * scale + 1e-5, err_msg=f"{name}.{out}")


def test_fused_export_runs_on_openvino(fused_video_export: Path, tiny_video_export: Path) -> None:
    """OpenVINO reads MultiHeadAttention; compared with its own run of the unfused export, so
    what differs is the attention alone (OpenVINO's antialiased Resize differs from ORT's)."""
    pytest.importorskip("openvino")
    from medsam3_rt.backends.openvino import OpenVinoBackend

    want, got = _graph_outputs(OpenVinoBackend(), tiny_video_export), _graph_outputs(OpenVinoBackend(), fused_video_export)
    for name, outs in want.items():
        for out, ref in outs.items():
            scale = float(np.abs(ref).max()) if ref.size else 0.0
            np.testing.assert_allclose(got[name][out], ref, rtol=0, atol=1e-3 * scale + 1e-5, err_msg=f"{name}.{out}")


def test_tensorrt_build_refuses_fused_graphs_in_one_line(fused_video_export: Path) -> None:
    from medsam3_export import tensorrt_build as tb

    from medsam3_rt import engines as eng
    from medsam3_rt.errors import UsageError

    env = eng.GpuEnvironment("10.8.0", "NVIDIA H100 80GB HBM3", "9.0")
    with pytest.raises(UsageError, match="--attention unfused") as err:
        tb.plan_build(fused_video_export, load_manifest(fused_video_export), tb.BuildOptions(), env)
    assert "\n" not in str(err.value)


def test_cli_rejects_an_unknown_attention_mode(tiny_hf_dir: Path, tmp_path: Path) -> None:
    proc = cli("export", str(tiny_hf_dir), "-o", str(tmp_path / "x"), "--attention", "flash")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "--attention flash: choose one of fused, unfused" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_flops_price_fused_attention_as_its_two_matmuls(fused_video_export: Path, tiny_video_export: Path) -> None:
    from medsam3_export.flops import count_flops

    fused, unfused = load_manifest(fused_video_export), load_manifest(tiny_video_export)
    for name in (gc.TEXT_ENCODER, gc.IMAGE_BACKBONE, gc.DETECTOR, gc.TRACKER_INIT):
        model = onnx.load(str(tiny_video_export / unfused.graphs[name].file), load_external_data=False)
        dims = {d.dim_param: 2 for i in model.graph.input for d in i.type.tensor_type.shape.dim if d.dim_param}
        got = count_flops(fused_video_export / fused.graphs[name].file, dims)
        assert got.by_op.get("MultiHeadAttention", 0) > 0 and "MultiHeadAttention" not in got.uncounted, name
        assert got.total == count_flops(tiny_video_export / unfused.graphs[name].file, dims).total, name


def test_manifest_attention_field_is_checked_and_optional(fused_video_export: Path) -> None:
    from medsam3_rt.errors import ManifestError
    from medsam3_rt.manifest import parse_manifest

    data = json.loads((fused_video_export / "manifest.json").read_text())
    data["graphs"][gc.DETECTOR]["attention"] = "flash"
    with pytest.raises(ManifestError, match="'detector' 'attention' must be \"fused\" or \"unfused\""):
        parse_manifest(data)
    del data["graphs"][gc.DETECTOR]["attention"]  # manifests written before the field: unfused
    assert parse_manifest(data).graphs[gc.DETECTOR].attention == "unfused"
