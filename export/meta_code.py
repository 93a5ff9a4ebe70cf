"""Meta's own SAM3 code (`sam3` on PyPI) as a parity reference for exports of Meta's `sam3.pt`.

The export's default reference is transformers' `Sam3Model`, which cannot see where transformers
and Meta's code differ (the text-only prompt path, the ViT's LayerNorm eps: both found this way).
With `export --parity-reference meta|both` the exporter also builds Meta's image model with
Meta's own builder at the checkpoint's geometry, loads the file as Meta's loader does, and
compares the text encoder, image backbone and detector graphs with Meta's outputs on the same
inputs. Tracker graphs keep the transformers reference (Meta's tracker runs inside its video
predictor, compared in tests/tracker/test_meta_tracker.py and test_meta_video.py).

Meta's package hard-codes `device="cuda"` in a few tensor factories (position-encoding
precompute, the decoder's coordinate cache) and calls `.cuda()` / `.pin_memory()`. `cpu_only()`
redirects those from outside, without editing Meta's files: factories asked for a CUDA device
get the CPU, and `Tensor.cuda`, `Module.cuda`, `Tensor.pin_memory` return their argument
unchanged (and TorchScript compilation is skipped: it cannot read the redirected factories).
Meta's video path also casts the tracker's backbone features (to all-gather them
across GPUs) and its stored memories to bfloat16 and relies on CUDA autocast to compute on
them; under `cpu_only()` the all-gather cast is skipped (one process) and a memory cast rounds
to bfloat16 and returns float32 (the values Meta stores, float32 arithmetic). Meta's CPU
fallback for connected components fails on an empty batch (a frame without detections); it
gets empty outputs, as Meta's CUDA kernels return.

Meta's builders make the released geometry; only the ViT and the text encoder take the
checkpoint's widths and depths here (`meta_builders`), the rest must match Meta's (a
mismatching tensor is a one-line error naming it).
"""

from __future__ import annotations

import contextlib
import functools
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsam3_rt import graph_contract as gc
from medsam3_rt.errors import CheckpointError, UsageError

BPE = Path(__file__).resolve().parent / "assets" / "bpe_simple_vocab_16e6.txt.gz"

# Meta's ViT constants (sam3.model_builder._create_vit_backbone); only width/depth/heads/global
# blocks and the MLP ratio follow the checkpoint.
META_IMAGE_SIZE = 1008
META_PATCH = 14
META_WINDOW = 24


def meta_unavailable_reason() -> str | None:
    """None when Meta's `sam3` package imports here, else the reason it does not."""
    try:
        with warnings.catch_warnings():  # its imports warn about TorchScript and CUDA autocast on a CPU machine
            warnings.simplefilter("ignore")
            import sam3.model_builder  # noqa: F401
    except Exception as e:  # ImportError, or a dependency failing at import
        return f"Meta's sam3 package is not importable ({type(e).__name__}: {e}); install the 'reference' extra (see .ci/run)"
    return None


def meta_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sam3")
    except PackageNotFoundError:
        return "unknown"


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
    # TorchScript cannot read the redirected factories' source; the eager module computes the same
    # (Meta scripts only the SAM1 predictor's own image transforms)
    patch(torch.jit, "script", lambda obj, *a, **k: obj)
    patch(torch.Tensor, "cuda", lambda self, *a, **k: self)
    patch(torch.Tensor, "pin_memory", lambda self, *a, **k: self)
    patch(torch.nn.Module, "cuda", lambda self, *a, **k: self)
    try:
        yield
    finally:
        for (owner, name), value in saved.items():
            setattr(owner, name, value)


@dataclass(frozen=True)
class MetaGeometry:
    """The parts of Meta's builder that follow the checkpoint (sam3.model_builder's ViT / text encoder)."""

    vit: dict[str, Any]
    text: dict[str, Any]

    @classmethod
    def released(cls) -> MetaGeometry:
        return cls(
            {"embed_dim": 1024, "depth": 32, "num_heads": 16, "global_att_blocks": (7, 15, 23, 31), "mlp_ratio": 4.625},
            {"width": 1024, "heads": 16, "layers": 24},
        )

    @classmethod
    def from_config(cls, detector_config: Any) -> MetaGeometry:
        """The geometry of a transformers `Sam3Config`; refuses what Meta's builder cannot make."""
        b = detector_config.vision_config.backbone_config
        t = detector_config.text_config
        fixed = {"image_size": META_IMAGE_SIZE, "patch_size": META_PATCH, "window_size": META_WINDOW}
        wrong = [f"{k} {getattr(b, k)} (Meta: {v})" for k, v in fixed.items() if getattr(b, k) != v]
        if wrong:
            raise UsageError(
                "--parity-reference meta: Meta's builder makes a 1008-px ViT with 14-px patches and 24-token windows; "
                f"this checkpoint has {', '.join(wrong)}"
            )
        return cls(
            {
                "embed_dim": b.hidden_size,
                "depth": b.num_hidden_layers,
                "num_heads": b.num_attention_heads,
                "global_att_blocks": tuple(b.global_attn_indexes),
                "mlp_ratio": b.intermediate_size / b.hidden_size,
            },
            {"width": t.hidden_size, "heads": t.num_attention_heads, "layers": t.num_hidden_layers},
        )


def meta_builders(geometry: MetaGeometry) -> dict[str, Any]:
    """Replacements for Meta's `_create_vit_backbone` / `_create_text_encoder` at `geometry`
    (every other argument as Meta's builder passes it)."""
    from sam3.model.text_encoder_ve import VETextEncoder
    from sam3.model.tokenizer_ve import SimpleTokenizer
    from sam3.model.vitdet import ViT

    def vit(compile_mode: Any = None) -> Any:
        return ViT(
            img_size=META_IMAGE_SIZE,
            pretrain_img_size=336,
            patch_size=META_PATCH,
            norm_layer="LayerNorm",
            drop_path_rate=0.1,
            qkv_bias=True,
            use_abs_pos=True,
            tile_abs_pos=True,
            rel_pos_blocks=(),
            use_rope=True,
            use_interp_rope=True,
            window_size=META_WINDOW,
            pretrain_use_cls_token=True,
            retain_cls_token=False,
            ln_pre=True,
            ln_post=False,
            return_interm_layers=False,
            bias_patch_embed=False,
            compile_mode=compile_mode,
            **geometry.vit,
        )

    def text(bpe_path: str) -> Any:
        return VETextEncoder(tokenizer=SimpleTokenizer(bpe_path=bpe_path), d_model=256, **geometry.text)

    return {"_create_vit_backbone": vit, "_create_text_encoder": text}


@contextlib.contextmanager
def meta_builder_at(geometry: MetaGeometry) -> Iterator[Any]:
    """Meta's `sam3.model_builder` with its ViT and text builders at `geometry`, restored afterwards."""
    import sam3.model_builder as mb

    replaced = {name: getattr(mb, name) for name in ("_create_vit_backbone", "_create_text_encoder")}
    try:
        for name, fn in meta_builders(geometry).items():
            setattr(mb, name, fn)
        yield mb
    finally:
        for name, fn in replaced.items():
            setattr(mb, name, fn)


def load_meta_image_model(state: dict[str, torch.Tensor], geometry: MetaGeometry, *, with_tracker: bool) -> torch.nn.Module:
    """Meta's `build_sam3_image_model` holding `state` (a sam3.pt state dict), mapped as Meta's
    `_load_checkpoint` maps it; unlike Meta's loader (which prints and goes on) every parameter
    must come from the file."""
    with meta_builder_at(geometry) as mb, cpu_only(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*CUDA is not available.*")  # Meta's autocast contexts on a CPU machine
        model = mb.build_sam3_image_model(
            bpe_path=str(BPE), device="cpu", load_from_HF=False, checkpoint_path=None, enable_inst_interactivity=with_tracker
        )
    mapped = {k.replace("detector.", ""): v for k, v in state.items() if "detector" in k}
    if with_tracker:
        mapped.update({k.replace("tracker.", "inst_interactive_predictor.model."): v for k, v in state.items() if "tracker" in k})
    try:
        missing, _unexpected = model.load_state_dict(mapped, strict=False)
    except RuntimeError as e:  # size mismatches: Meta's builder makes another geometry
        first = str(e).split("size mismatch for ", 1)[-1].split("\n", 1)[0]
        raise CheckpointError(f"--parity-reference meta: Meta's builder makes another geometry than this checkpoint: {first}") from None
    if missing:
        raise CheckpointError(
            f"--parity-reference meta: {len(missing)} parameters of Meta's model are not in the checkpoint (e.g. {', '.join(missing[:3])})"
        )
    return model.eval()


def meta_reference_outputs(
    model: torch.nn.Module,
    pixels: np.ndarray,
    prompts: Sequence[str],
    text_valid: np.ndarray,
    *,
    with_tracker: bool,
    detector: bool,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]]]:
    """(inputs, reference outputs) per graph, from Meta's own forward on `pixels` (1, 3, S, S) and
    `prompts`, in the graph contract's names and layouts.

    The text encoder graph is fed our tokenizer's ids (so the comparison covers tokenisation) and
    compared on the tokens our attention mask keeps; Meta's own mask is compared as an output. The
    detector graph is fed Meta's backbone and text outputs, as transformers parity chains its
    references; it runs once per prompt on Meta's side (Meta's processor does the same)."""
    from sam3.model import box_ops
    from sam3.model.data_misc import FindStage

    refs: dict[str, dict[str, np.ndarray]] = {}
    inputs: dict[str, dict[str, np.ndarray]] = {}
    with cpu_only(), torch.inference_mode():
        image = model.backbone.forward_image(torch.from_numpy(pixels))
        fpn = [f.numpy() for f in image["backbone_fpn"][:3]]
        refs[gc.IMAGE_BACKBONE] = dict(zip(gc.DET_FPN, fpn, strict=True))
        if with_tracker:
            sam2 = image["sam2_backbone_out"]
            decoder = model.inst_interactive_predictor.model.sam_mask_decoder
            refs[gc.IMAGE_BACKBONE].update(
                {
                    gc.TRK_FEATURES[0]: decoder.conv_s0(sam2["backbone_fpn"][0]).numpy(),
                    gc.TRK_FEATURES[1]: decoder.conv_s1(sam2["backbone_fpn"][1]).numpy(),
                    gc.TRK_VISION_FEAT: sam2["vision_features"].numpy(),
                }
            )
        text = model.backbone.forward_text(list(prompts), device="cpu")
        features = text["language_features"].transpose(0, 1).numpy()  # (T, P, C) -> (P, T, C)
        meta_valid = ~text["language_mask"].numpy()  # Meta's mask marks padding
        refs[gc.TEXT_ENCODER] = {gc.TEXT_FEATURES: features * text_valid[..., None], "text_valid_tokens": meta_valid.astype(np.float32)}
        if detector:
            find = FindStage(
                img_ids=torch.tensor([0], dtype=torch.long),
                text_ids=torch.tensor([0], dtype=torch.long),
                input_boxes=None,
                input_boxes_mask=None,
                input_boxes_label=None,
                input_points=None,
                input_points_mask=None,
            )
            outs = []
            for prompt in prompts:
                image.update(model.backbone.forward_text([prompt], device="cpu"))
                outs.append(
                    model.forward_grounding(
                        backbone_out=image, find_input=find, geometric_prompt=model._get_dummy_prompt(), find_target=None
                    )
                )
            refs[gc.DETECTOR] = {
                gc.PRED_LOGITS: np.concatenate([o["pred_logits"][..., 0].numpy() for o in outs]),
                gc.PRED_BOXES: np.concatenate([box_ops.box_cxcywh_to_xyxy(o["pred_boxes"]).numpy() for o in outs]),
                gc.PRESENCE_LOGITS: np.concatenate([o["presence_logit_dec"].reshape(1, 1).numpy() for o in outs]),
                gc.PRED_MASKS: np.concatenate([o["pred_masks"].numpy() for o in outs]),
            }
            inputs[gc.DETECTOR] = {**dict(zip(gc.DET_FPN, fpn, strict=True)), gc.TEXT_FEATURES: features, gc.TEXT_MASK: meta_valid}
    return inputs, refs
