"""Per-graph latency and GPU memory of the PyTorch graph modules on CUDA, any preset up to `full`.

    python benchmarks/gpu_torch_graphs.py --preset small --preset full [--prompts 1] [--runs 20]
        [--compile] [--output benchmarks/results/NAME.json]

Why this exists beside `medsam3-rt bench`: `bench` runs an export directory, and exporting the
full-size geometry to ONNX takes 12+ minutes of CPU, more than a short GPU lease allows. The
`torch` backend does not need the ONNX files: it runs the same `nn.Module` per graph that the
exporter exports (`medsam3_export.graphs.build_graph_module`). So this script builds the random
preset's checkpoint, takes those modules, and times each graph on the GPU:

- `eager fp32`: the graph module as is (the transformers code path, fp32);
- `bf16 autocast`: what the `torch` backend runs on CUDA by default (norms pinned to fp32);
- `bf16 + compile` (with --compile): `torch.compile` of the same, as TorchOptions(compile=True).

and, as the user's baseline, transformers' own `Sam3Model` eager fp32 (`get_vision_features`
then the detector forward on cached text features), the way `medsam3-rt bench`'s baseline runs.
Each number is the median of `--runs` timed calls after warm-up, with `torch.cuda.synchronize()`
before the clock stops; ratios are against the baseline in the same process. Peak GPU memory
is `torch.cuda.max_memory_allocated` per variant (reset before each). Random weights: the
timings are the geometry's, not a trained model's (no data-dependent work is skipped).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from medsam3_export.checkpoint import random_checkpoint
from medsam3_export.exporter import model_dims, parity_image, parity_inputs
from medsam3_export.graphs import build_graph_module
from medsam3_export.torch_backend import fp32_norms

from medsam3_rt import graph_contract as gc
from medsam3_rt.manifest import Preprocess
from medsam3_rt.preprocess import pixel_values


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _time(fn: Callable[[], Any], runs: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    _sync()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        _sync()
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def _peak(fn: Callable[[], Any]) -> int | None:
    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated())


def _inputs(dims: gc.ModelDims, prompts: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token ids (`prompts` short prompts), their attention mask and the exporter's test card as pixels."""
    ids = np.zeros((prompts, dims.text_context), np.int64)
    ids[:, 0], ids[:, 4] = 49406, 49407
    ids[:, 1:4] = 320 + np.arange(prompts)[:, None]
    attn = (np.arange(dims.text_context)[None] < 5).repeat(prompts, 0).astype(np.int64)
    return ids, attn, pixel_values(parity_image(dims.image_size), Preprocess(image_size=dims.image_size))


def bench_preset(preset: str, prompts: int, runs: int, warmup: int, compile_: bool, device: torch.device) -> dict[str, Any]:
    t0 = time.perf_counter()
    ckpt = random_checkpoint(preset, video=True, seed=0)
    build_s = time.perf_counter() - t0
    dims = model_dims(ckpt)
    # The video model holds the detector: count each parameter once.
    unique = {id(p): p for m in (ckpt.detector, ckpt.video) if m is not None for p in m.parameters()}
    params = sum(p.numel() for p in unique.values())
    for m in (ckpt.detector, ckpt.video):
        if m is not None:
            m.to(device).eval()
    specs = gc.expected_specs(dims)
    ids, attn, pixels = _inputs(dims, prompts)
    refs: dict[str, dict[str, np.ndarray]] = {}
    graphs: dict[str, dict[str, Any]] = {}
    order = [gc.TEXT_ENCODER, gc.IMAGE_BACKBONE, gc.DETECTOR, gc.TRACKER_INIT, gc.MEMORY_ENCODER, gc.TRACKER_STEP]
    for name in order:
        module = build_graph_module(name, ckpt, dims).to(device).eval()
        feeds = parity_inputs(name, dims, ids, attn, pixels, refs)
        args = [feeds[t.name].to(device) for t in specs[name].inputs]

        def call(m: torch.nn.Module = module, a: list[torch.Tensor] = args, dtype: torch.dtype | None = None) -> Any:
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                return m(*a)

        with torch.inference_mode():
            outs = module(*args)
        outs = outs if isinstance(outs, tuple) else (outs,)
        refs[name] = {
            t.name: o.float().cpu().numpy() if o.is_floating_point() else o.cpu().numpy() for t, o in zip(specs[name].outputs, outs)
        }
        row: dict[str, Any] = {}
        row["eager_fp32_ms"] = _time(call, runs, warmup)
        row["eager_fp32_peak_bytes"] = _peak(call)
        bf16 = build_graph_module(name, ckpt, dims).to(device).eval()
        fp32_norms(bf16, device.type)
        row["bf16_ms"] = _time(partial(call, bf16, args, torch.bfloat16), runs, warmup)
        row["bf16_peak_bytes"] = _peak(partial(call, bf16, args, torch.bfloat16))
        if compile_:
            compiled = torch.compile(bf16)
            t1 = time.perf_counter()
            try:
                call(compiled, args, torch.bfloat16)
                _sync()
                row["compile_s"] = time.perf_counter() - t1
                row["bf16_compiled_ms"] = _time(partial(call, compiled, args, torch.bfloat16), runs, warmup)
            except Exception as e:  # recorded, not hidden: TorchOptions(compile=True) would fail the same way
                row["compile_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                torch._dynamo.reset()
        row["bf16_speedup"] = row["eager_fp32_ms"] / row["bf16_ms"]
        graphs[name] = row
        print(f"  {preset} {name}: " + ", ".join(f"{k}={v:.3g}" for k, v in row.items() if isinstance(v, float | int)), flush=True)
        del module, bf16

    # The user's baseline: transformers Sam3Model eager fp32, vision features then the detector.
    from transformers.modeling_outputs import BaseModelOutputWithPooling
    from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

    det = ckpt.detector
    pix = torch.from_numpy(pixels).to(device)
    ids_t, attn_t = torch.from_numpy(ids).to(device), torch.from_numpy(attn).to(device)
    with torch.inference_mode():
        text = det.get_text_features(input_ids=ids_t, attention_mask=attn_t, return_dict=True).pooler_output

    def baseline() -> Any:
        with torch.inference_mode():
            vision = det.get_vision_features(pixel_values=pix)
            batched = Sam3VisionEncoderOutput(
                fpn_hidden_states=tuple(f.expand(prompts, -1, -1, -1) for f in vision.fpn_hidden_states),
                fpn_position_encoding=tuple(p.expand(prompts, -1, -1, -1) for p in vision.fpn_position_encoding),
            )
            return det(vision_embeds=batched, text_embeds=BaseModelOutputWithPooling(pooler_output=text), attention_mask=attn_t)

    base_ms = _time(baseline, runs, warmup)
    base_peak = _peak(baseline)
    ours = {k: graphs[gc.IMAGE_BACKBONE][k] + graphs[gc.DETECTOR][k] for k in ("eager_fp32_ms", "bf16_ms")}
    if compile_ and all("bf16_compiled_ms" in graphs[g] for g in (gc.IMAGE_BACKBONE, gc.DETECTOR)):
        ours["bf16_compiled_ms"] = graphs[gc.IMAGE_BACKBONE]["bf16_compiled_ms"] + graphs[gc.DETECTOR]["bf16_compiled_ms"]
    return {
        "preset": preset,
        "parameters": params,
        "image_size": dims.image_size,
        "prompts": prompts,
        "checkpoint_build_s": build_s,
        "graphs": graphs,
        "segment_backbone_plus_detector": {
            "transformers_eager_fp32_ms": base_ms,
            "transformers_eager_fp32_peak_bytes": base_peak,
            **{f"graphs_{k}": v for k, v in ours.items()},
            **{f"speedup_{k.removesuffix('_ms')}": base_ms / v for k, v in ours.items()},
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", action="append", default=None, help="preset(s) (default: small)")
    ap.add_argument("--prompts", type=int, default=1)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the bf16 modules")
    ap.add_argument("--output", type=Path, default=None)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (a dry run of the script itself)")
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: this benchmark needs PyTorch with CUDA and a GPU (torch.cuda.is_available() is False)")
    device = torch.device(a.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (the parity reference); bf16 is the fast path
    torch.backends.cudnn.allow_tf32 = False
    import transformers

    result: dict[str, Any] = {
        "benchmark": "gpu_torch_graphs",
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
        "driver_cuda": torch.version.cuda,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "runs": a.runs,
        "warmup": a.warmup,
        "tf32": False,
        "presets": [],
    }
    for preset in a.preset or ["small"]:
        print(f"{preset}: building the random checkpoint", flush=True)
        result["presets"].append(bench_preset(preset, a.prompts, a.runs, a.warmup, a.compile, device))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    text = json.dumps(result, indent=1)
    if a.output:
        a.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
