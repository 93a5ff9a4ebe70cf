"""The PyTorch backend (export extra): discovery without importing torch, checkpoint identity, CPU parity."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import TEST_INIT_STD, phantom

import medsam3_rt
from medsam3_rt import graph_contract as gc
from medsam3_rt.backends import BackendOptions, as_numpy
from medsam3_rt.errors import CheckpointError, UsageError
from medsam3_rt.manifest import load_manifest

torch = pytest.importorskip("torch")
tbk = pytest.importorskip("medsam3_export.torch_backend")
parity = pytest.importorskip("medsam3_export.parity")


def test_runtime_discovers_the_plugin_without_importing_torch() -> None:
    code = """
import sys
import medsam3_rt.backends as b
status = b.available()
assert "torch" in b.plugin_backends() and "torch" in status and not status["torch"].ok, status.get("torch")
assert "not probed" in status["torch"].reason
assert "torch" not in sys.modules, "listing backends imported torch"
cls = b.backend_class("torch")
assert cls.name == "torch" and "torch" in sys.modules
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def torch_seg(tiny_export: Path, tiny_hf_dir: Path):
    # fp32 on whatever device torch picks (CUDA on a GPU machine): the parity tolerance is fp32's
    seg = medsam3_rt.load(tiny_export, "torch", options=BackendOptions(checkpoint=tiny_hf_dir, precision="fp32"))
    yield seg
    seg.close()


def test_each_graph_matches_ort_cpu_within_the_parity_tolerance(torch_seg, tiny_export: Path) -> None:
    """Graph for graph on the same inputs: the same tolerance the export's parity check uses."""
    want_device = "cuda" if torch.cuda.is_available() else "cpu"
    assert torch_seg.backend_name == "torch" and torch_seg.model.backend.device.type == want_device
    with medsam3_rt.load(tiny_export, "ort-cpu") as ort_seg:
        ids, attn = ort_seg.model.tokenizer.encode(["polyp", "left kidney, upper pole"])
        pixels = np.random.default_rng(0).normal(0, 0.5, (1, 3, 224, 224)).astype(np.float32)
        feeds = {
            gc.TEXT_ENCODER: {gc.INPUT_IDS: ids, gc.ATTENTION_MASK: attn},
            gc.IMAGE_BACKBONE: {gc.PIXEL_VALUES: pixels},
        }
        results = []
        for graph in (gc.TEXT_ENCODER, gc.IMAGE_BACKBONE):
            ref = ort_seg.model.run(graph, feeds[graph])
            # on CUDA the backbone's outputs stay on the GPU (TorchDeviceTensor) for the detector
            got = {k: as_numpy(v) for k, v in torch_seg.model.run(graph, feeds[graph]).items()}
            results += parity.compare(graph, ref, got, parity.Tolerance())
            if graph == gc.TEXT_ENCODER:
                text = ref[gc.TEXT_FEATURES]
            else:
                fpn = ref
        det_feeds = {**{k: fpn[k] for k in gc.DET_FPN}, gc.TEXT_FEATURES: text, gc.TEXT_MASK: attn.astype(bool)}
        results += parity.compare(
            gc.DETECTOR, ort_seg.model.run(gc.DETECTOR, det_feeds), torch_seg.model.run(gc.DETECTOR, det_feeds), parity.Tolerance()
        )
    assert len(results) == 1 + len(fpn) + 5
    failed = [r.describe() for r in results if not r.passed]
    assert not failed, failed


def test_segmentation_matches_ort_cpu(torch_seg, tiny_export: Path) -> None:
    img = phantom(120, 90)
    with medsam3_rt.load(tiny_export, "ort-cpu") as ort_seg:
        want = ort_seg.segment(img, ["polyp", "liver"])
    got = torch_seg.segment(img, ["polyp", "liver"])
    np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-4)
    for k in range(2):
        union = np.logical_or(got.masks[k], want.masks[k]).sum()
        assert union == 0 or np.logical_and(got.masks[k], want.masks[k]).sum() / union >= 0.999


def test_compiled_modules_segment_like_ort_cpu(tiny_export: Path, tiny_hf_dir: Path) -> None:
    """TorchOptions(compile=True) on the CPU: torch.compile must trace every graph module.

    Found on the first GPU run (H200): the detector graph set and deleted an attribute of the
    DETR decoder inside forward, which dynamo cannot follow; only the GPU test compiled before.
    """
    opts = BackendOptions(checkpoint=tiny_hf_dir, precision="fp32", compile=True)
    img = phantom(120, 90)
    with medsam3_rt.load(tiny_export, "torch", options=opts) as seg, medsam3_rt.load(tiny_export, "ort-cpu") as ref:
        got, want = seg.segment(img, ["polyp", "liver"]), ref.segment(img, ["polyp", "liver"])
    np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-3)
    for k in range(2):
        union = np.logical_or(got.masks[k], want.masks[k]).sum()
        assert union == 0 or np.logical_and(got.masks[k], want.masks[k]).sum() / union >= 0.99


def test_the_checkpoint_must_be_the_exported_one(tiny_export: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--checkpoint"):
        medsam3_rt.load(tiny_export, "torch")
    from medsam3_export import random_checkpoint

    other = tmp_path / "other"
    random_checkpoint("tiny", video=False, seed=1, init_std=TEST_INIT_STD).detector.save_pretrained(other)
    with pytest.raises(CheckpointError, match="not the one this export was made from"):
        medsam3_rt.load(tiny_export, "torch", options=BackendOptions(checkpoint=other))
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="only on CUDA"):
            tbk.TorchBackend(BackendOptions(precision="fp16"))  # no silent fp32 when fp16 was asked for


def test_random_exports_are_rebuilt_from_preset_and_seed(tiny_export: Path) -> None:
    m = load_manifest(tiny_export)
    random_source = {"format": "random", "preset": "tiny", "seed": 0, "class": "Sam3Model"}
    ckpt = tbk.checkpoint_for(replace(m, model={**m.model, "source": random_source}), None)
    assert ckpt.detector.config.vision_config.backbone_config.image_size == m.dims.image_size
    wrong = replace(m, dims=replace(m.dims, num_queries=m.dims.num_queries + 1))
    with pytest.raises(CheckpointError, match="num_queries"):
        tbk.checkpoint_for(replace(wrong, model={**m.model, "source": random_source}), None)


def test_cli_segment_with_the_torch_backend(tiny_export: Path, tiny_hf_dir: Path, tmp_path: Path) -> None:
    import cv2
    from conftest import cli

    cv2.imwrite(str(tmp_path / "scan.png"), phantom(60, 70))
    proc = cli("segment", str(tiny_export), str(tmp_path / "scan.png"), "-p", "polyp", "-o", str(tmp_path / "out"), "-b", "torch")
    assert proc.returncode == 2 and "--checkpoint" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    proc = cli(
        "segment",
        str(tiny_export),
        str(tmp_path / "scan.png"),
        "-p",
        "polyp",
        "-o",
        str(tmp_path / "out"),
        "-b",
        "torch",
        "--checkpoint",
        str(tiny_hf_dir),
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "scan.json").is_file() and '"backend": "torch"' in (tmp_path / "out" / "scan.json").read_text()


def test_bf16_is_autocast_with_fp32_weights_and_norms(tiny_export: Path, tiny_hf_dir: Path) -> None:
    """Reduced precision never casts a whole module: weights stay fp32, norms compute in fp32,
    matmuls in bf16 (autocast on the CPU supports bf16, so this runs here)."""
    backend = tbk.TorchBackend(BackendOptions(checkpoint=tiny_hf_dir, precision="bf16"))
    m = load_manifest(tiny_export, verify="none")
    runner = backend.open(m.graphs[gc.IMAGE_BACKBONE], tiny_export)
    params = {p.dtype for p in runner.module.parameters()}
    assert params == {torch.float32}
    seen: dict[str, set] = {"norm": set(), "linear": set()}

    def hook(kind: str):
        return lambda mod, args, out: seen[kind].add(out.dtype)

    handles = []
    for mod in runner.module.modules():
        if isinstance(mod, tbk.NORM_TYPES):
            handles.append(mod.register_forward_hook(hook("norm")))
        elif isinstance(mod, torch.nn.Linear):
            handles.append(mod.register_forward_hook(hook("linear")))
    pixels = np.random.default_rng(0).normal(0, 0.5, (1, 3, 224, 224)).astype(np.float32)
    got = runner.run({gc.PIXEL_VALUES: pixels})
    for h in handles:
        h.remove()
    assert seen["norm"] == {torch.float32} and seen["linear"] == {torch.bfloat16}
    with medsam3_rt.load(tiny_export, "ort-cpu") as ref:
        want = ref.model.run(gc.IMAGE_BACKBONE, {gc.PIXEL_VALUES: pixels})
    for name, value in want.items():
        assert got[name].dtype == np.float32
        scale = float(np.abs(value).max()) or 1.0
        assert float(np.abs(got[name] - value).max()) / scale < 0.1, name  # bf16 keeps ~3 significant digits


def test_cuda_graph_outputs_are_cloned_before_they_are_held(tiny_export: Path, tiny_hf_dir: Path) -> None:
    """reduce-overhead replays write into the same output memory: held outputs must be copies."""
    backend = tbk.TorchBackend(BackendOptions(checkpoint=tiny_hf_dir))
    m = load_manifest(tiny_export, verify="none")
    runner = backend.open(m.graphs[gc.IMAGE_BACKBONE], tiny_export)
    shared = {}

    class Replay(torch.nn.Module):  # what a CUDA-graph replay does: the same output storage each call
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor):
            outs = self.inner(x)
            if not shared:
                shared.update({i: o.clone() for i, o in enumerate(outs)})
            for i, o in enumerate(outs):
                shared[i].copy_(o)
            return tuple(shared[i] for i in range(len(outs)))

    runner.module = Replay(runner.module)
    runner.cudagraphs = True
    runner.device_outputs = frozenset(gc.DET_FPN)  # as on CUDA: handed out as device tensors
    if not hasattr(torch.compiler, "cudagraph_mark_step_begin"):
        pytest.skip("this torch has no torch.compiler.cudagraph_mark_step_begin")
    rng = np.random.default_rng(1)
    a = runner.run({gc.PIXEL_VALUES: rng.normal(0, 0.5, (1, 3, 224, 224)).astype(np.float32)})
    held = a[gc.DET_FPN[0]].numpy().copy()
    runner.run({gc.PIXEL_VALUES: rng.normal(0, 0.5, (1, 3, 224, 224)).astype(np.float32)})
    np.testing.assert_array_equal(a[gc.DET_FPN[0]].numpy(), held)  # the first frame's features did not change


def test_graph_modules_build_on_a_model_that_lives_off_the_cpu() -> None:
    """The torch backend moves the checkpoint to CUDA before it builds the graph modules.

    Found on the first GPU run (H200): the tracker graphs built their RoPE table from a CPU
    tensor and the tracker's CUDA position ids ("Expected all tensors to be on the same
    device"), so streaming on `torch` + CUDA failed. The `meta` device stands in for the GPU
    here: a CPU tensor meeting a meta one fails the same way.
    """
    from medsam3_export import random_checkpoint
    from medsam3_export.exporter import model_dims
    from medsam3_export.graphs import build_graph_module

    ckpt = random_checkpoint("tiny", video=True, seed=0, init_std=TEST_INIT_STD)
    dims = model_dims(ckpt)
    ckpt.detector.to("meta")
    ckpt.video.to("meta")
    for name in (*gc.DETECTOR_GRAPHS, *gc.TRACKER_GRAPHS):
        module = build_graph_module(name, ckpt, dims)
        assert any(p.device.type == "meta" for p in module.parameters()), name
