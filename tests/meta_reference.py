"""Meta's own SAM3 code (`sam3` on PyPI) as a test reference, run on CPU without editing it.

Meta's package hard-codes `device="cuda"` in a few tensor factories (position-encoding
precompute, the decoder's coordinate cache) and calls `.cuda()` / `.pin_memory()`. The
`cpu_only()` context redirects those from outside: factories asked for a CUDA device get the
CPU, and `Tensor.cuda`, `Module.cuda`, `Tensor.pin_memory` return their argument unchanged.
Meta's video path also casts the tracker's backbone features (to all-gather them across GPUs)
and its stored memories to bfloat16 and relies on CUDA autocast to compute on them; under
`cpu_only()` the all-gather cast is skipped (one process) and a memory cast rounds to bfloat16
and returns float32 (the values Meta stores, float32 arithmetic). Meta's CPU fallback for
connected components fails on an empty batch (a frame without detections); it gets empty
outputs, as Meta's CUDA kernels return.

`build_meta_video_model()` builds a random model with Meta's own `build_sam3_video_model` at
Meta's 1008-px geometry; only the ViT and the text encoder are narrowed (`_create_vit_backbone`
and `_create_text_encoder` are replaced by copies with smaller widths/depths for the duration
of the build). Meta leaves the text encoder's `positional_embedding` and `text_projection` as
`torch.empty`; they are initialised as open_clip does, and the detector's query scoring is
sharpened (`HS_PROJ_GAIN`) so that a threshold separates queries. `META_GEOMETRY` is the same geometry as
a transformers `config.json` for `medsam3-rt export sam3.pt --config`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
BPE = REPO / "export" / "assets" / "bpe_simple_vocab_16e6.txt.gz"

# Seconds spent building and exporting Meta's model in this session (printed by the tests).
TIMINGS: dict[str, float] = {}

# The narrowed parts (everything else is Meta's builder as released).
VIT = {"embed_dim": 96, "depth": 2, "num_heads": 2, "global_att_blocks": (1,)}
TEXT = {"width": 64, "heads": 2, "layers": 2}


def meta_available() -> str | None:
    """None when Meta's `sam3` package imports here, else the reason it does not."""
    try:
        import sam3.model_builder  # noqa: F401
    except Exception as e:  # ImportError, or a dependency failing at import
        return f"Meta's sam3 package is not importable ({type(e).__name__}: {e}); install the 'reference' extra (see .ci/run)"
    return None


_FACTORIES = ("zeros", "ones", "empty", "full", "arange", "tensor", "as_tensor", "linspace", "rand", "randn", "zeros_like", "ones_like")


def _cpu_device(device: Any) -> Any:
    if device is None:
        return None
    d = torch.device(device) if isinstance(device, (str, int)) else device
    return torch.device("cpu") if isinstance(d, torch.device) and d.type == "cuda" else device


@contextlib.contextmanager
def cpu_only() -> Iterator[None]:
    """Run Meta's code on CPU: CUDA device requests go to the CPU, `.cuda()`/`.pin_memory()` are no-ops."""
    saved: dict[tuple[Any, str], Any] = {}

    def patch(owner: Any, name: str, value: Any) -> None:
        saved[(owner, name)] = getattr(owner, name)
        setattr(owner, name, value)

    for name in _FACTORIES:
        original = getattr(torch, name)

        def redirected(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            if "device" in kwargs:
                kwargs["device"] = _cpu_device(kwargs["device"])
            return _original(*args, **kwargs)

        patch(torch, name, functools.wraps(original)(redirected))
    original_to = torch.Tensor.to

    def tensor_to(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        args = tuple(_cpu_device(a) if isinstance(a, (str, torch.device)) and str(a).startswith("cuda") else a for a in args)
        if "device" in kwargs:
            kwargs["device"] = _cpu_device(kwargs["device"])
        kwargs.pop("non_blocking", None)
        out = original_to(self, *args, **kwargs)
        if out.dtype != torch.bfloat16 or self.dtype == torch.bfloat16:
            return out
        # Meta's video path casts to bfloat16 (i) the tracker's backbone features, only to all-gather
        # them across GPUs, and (ii) the memories it stores; it computes on them under CUDA autocast.
        # On the CPU: (i) stays float32 (one process gathers nothing), (ii) keeps bfloat16's rounding
        # (the runtime stores memories as bfloat16 too) with float32 arithmetic.
        callers = {sys._getframe(1).f_code.co_name, sys._getframe(2).f_code.co_name}  # 2: from a list comprehension
        if "_build_multigpu_buffer_next_chunk" in callers:
            return self
        return original_to(out, torch.float32)

    patch(torch.Tensor, "to", tensor_to)
    try:  # Meta's CPU connected components stack an empty list on a frame without detections
        import sam3.perflib.connected_components as cc

        original_cc = cc.connected_components_cpu

        def connected_components_cpu(input_tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if input_tensor.shape[0] == 0:
                empty = torch.zeros(input_tensor.shape, dtype=torch.int64)
                return empty, empty.clone()
            return original_cc(input_tensor)

        patch(cc, "connected_components_cpu", connected_components_cpu)
    except ImportError:
        pass
    patch(torch.Tensor, "cuda", lambda self, *a, **k: self)
    patch(torch.Tensor, "pin_memory", lambda self, *a, **k: self)
    patch(torch.nn.Module, "cuda", lambda self, *a, **k: self)
    try:
        yield
    finally:
        for (owner, name), value in saved.items():
            setattr(owner, name, value)


def _narrow_builders(mb: Any) -> dict[str, Any]:
    """Replacement builders for Meta's ViT and text encoder with `VIT` / `TEXT` sizes."""
    from sam3.model.text_encoder_ve import VETextEncoder
    from sam3.model.tokenizer_ve import SimpleTokenizer
    from sam3.model.vitdet import ViT

    def vit(compile_mode: Any = None) -> Any:
        return ViT(
            img_size=1008,
            pretrain_img_size=336,
            patch_size=14,
            mlp_ratio=4.625,
            norm_layer="LayerNorm",
            drop_path_rate=0.1,
            qkv_bias=True,
            use_abs_pos=True,
            tile_abs_pos=True,
            rel_pos_blocks=(),
            use_rope=True,
            use_interp_rope=True,
            window_size=24,
            pretrain_use_cls_token=True,
            retain_cls_token=False,
            ln_pre=True,
            ln_post=False,
            return_interm_layers=False,
            bias_patch_embed=False,
            compile_mode=compile_mode,
            **VIT,
        )

    def text(bpe_path: str) -> Any:
        return VETextEncoder(tokenizer=SimpleTokenizer(bpe_path=bpe_path), d_model=256, **TEXT)

    return {"_create_vit_backbone": vit, "_create_text_encoder": text}


# Meta's random initialisation gives all 200 queries the same detection score (to 3 decimals: the
# presence head and the clamped dot-product saturate), so any threshold keeps none or all of them.
# The query projection of the dot-product scoring is scaled up so that queries on a textured frame
# score differently and a threshold picks a few: detections that come and go in the video test.
HS_PROJ_GAIN = 30.0


def _init_empty(model: torch.nn.Module, seed: int) -> None:
    """Deterministic values for the parameters Meta's builder leaves as `torch.empty` (open_clip's init)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("language_backbone.encoder.positional_embedding"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.01)
            elif name.endswith("language_backbone.encoder.text_projection"):
                p.copy_(torch.randn(p.shape, generator=g) * p.shape[0] ** -0.5)


def build_meta_video_model(seed: int = 0) -> torch.nn.Module:
    """Meta's `build_sam3_video_model` (detector + tracker, 1008 px) with a narrow ViT and text encoder."""
    import sam3.model_builder as mb

    torch.manual_seed(seed)
    replaced = {name: getattr(mb, name) for name in ("_create_vit_backbone", "_create_text_encoder")}
    try:
        for name, fn in _narrow_builders(mb).items():
            setattr(mb, name, fn)
        with cpu_only():
            model = mb.build_sam3_video_model(checkpoint_path=None, load_from_HF=False, bpe_path=str(BPE), device="cpu")
    finally:
        for name, fn in replaced.items():
            setattr(mb, name, fn)
    _init_empty(model, seed)
    with torch.no_grad():
        model.detector.dot_prod_scoring.hs_proj.weight.mul_(HS_PROJ_GAIN)
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all() or p.abs().max() > 1e6]
    assert not bad, f"uninitialised parameters in Meta's build: {bad[:5]}"
    return model.eval()


def meta_geometry() -> dict[str, Any]:
    """The transformers `Sam3VideoConfig` (as config.json content) of `build_meta_video_model`."""
    from medsam3_export.presets import PRESETS

    width, layers, heads = TEXT["width"], TEXT["layers"], TEXT["heads"]
    preset = dataclasses.replace(
        PRESETS["full"],
        name="meta-narrow",
        vit_hidden=VIT["embed_dim"],
        vit_layers=VIT["depth"],
        vit_heads=VIT["num_heads"],
        vit_mlp=int(VIT["embed_dim"] * 4.625),
        global_attn_indexes=VIT["global_att_blocks"],
        text_hidden=width,
        text_layers=layers,
        text_heads=heads,
        text_mlp=4 * width,
    )
    cfg = preset.video_config().to_dict()
    cfg["detector_config"]["text_config"]["projection_dim"] = 512  # Meta's TextTransformer output_dim
    cfg["model_type"] = "sam3_video"
    return cfg


def write_geometry(path: Path) -> Path:
    path.write_text(json.dumps(meta_geometry()))
    return path
