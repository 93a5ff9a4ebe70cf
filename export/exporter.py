"""Checkpoint -> export directory: ONNX graphs, tokenizer, manifest and parity report.

The directory is assembled under a temporary name and renamed into place only after every
graph passed its parity check, so a failed or interrupted export never leaves a directory
that looks usable.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch
import transformers

from medsam3_rt import graph_contract as gc
from medsam3_rt._version import __version__
from medsam3_rt.backends.ort import OrtCpuBackend
from medsam3_rt.errors import CheckpointError, OutputExistsError, UsageError
from medsam3_rt.io.atomic import atomic_directory, atomic_write_text
from medsam3_rt.manifest import (
    INTENDED_USE,
    MANIFEST_NAME,
    GraphEntry,
    Manifest,
    Postprocess,
    Preprocess,
)
from medsam3_rt.preprocess import pixel_values
from medsam3_rt.tokenizer import ClipTokenizer
from medsam3_rt.tracker.streaming import MEMORY_SELECTION_THRESHOLD

from . import parity
from .attention import ATTENTION_CHOICES, DEFAULT_ATTENTION, FUSED, attention_mode, graph_attention, onnx_translation
from .checkpoint import LoadedCheckpoint, load_checkpoint
from .graphs import build_graph_module
from .manifest_writer import file_entry
from .onnx_export import DEFAULT_OPSET, export_graph
from .resolution import resize_checkpoint, resolution_info
from .semantics import (
    DEFAULT_PROMPT_SEMANTICS,
    DEFAULT_TRACKER_SEMANTICS,
    DESCRIPTIONS,
    TRACKER_DESCRIPTIONS,
    check_prompt_semantics,
    check_tracker_semantics,
)
from .tokenizer_files import checkpoint_tokenizer, write_tokenizer

log = logging.getLogger(__name__)

PARITY_REPORT = "parity_report.json"
PARITY_PROMPTS = ("polyp", "left kidney, upper pole")
PARITY_REFERENCES = ("transformers", "meta", "both")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ExportOptions:
    """`prompt_semantics`: "meta" or "transformers" for the detector graph (see
    `medsam3_export.semantics`); None takes the one the checkpoint was trained with when it
    records it (medsam3 training's training.json), else "meta". `tracker_semantics`: "meta"
    (default) or "transformers" for the tracker's new-object path (see the same module)."""

    opset: int = DEFAULT_OPSET
    tolerance: parity.Tolerance = field(default_factory=parity.Tolerance)
    overwrite: bool = False
    prompt_semantics: str | None = None
    tracker_semantics: str = DEFAULT_TRACKER_SEMANTICS
    adapter: str | Path | None = None  # a PEFT LoRA adapter folder merged into the weights (adapters.py)
    # "fused": every attention as one com.microsoft::MultiHeadAttention node (attention.py);
    # "unfused": MatMul/Softmax/MatMul, for backends without that op (TensorRT's parser)
    attention: str = DEFAULT_ATTENTION
    image_size: int | None = None  # export at this input size instead of the checkpoint's (resolution.py)
    batch_axis: bool = False  # image backbone with a symbolic batch axis "B" (several images per call)
    # what the graphs are checked against: transformers (always computed), Meta's own code for a
    # sam3.pt (text encoder, image backbone, detector; needs the `sam3` package), or both
    parity_reference: str = "transformers"

    def __post_init__(self) -> None:
        check_tracker_semantics(self.tracker_semantics)
        if self.parity_reference not in PARITY_REFERENCES:
            raise UsageError(f"--parity-reference {self.parity_reference}: choose one of {', '.join(PARITY_REFERENCES)}")
        if self.attention not in ATTENTION_CHOICES:
            raise UsageError(f"--attention {self.attention}: choose one of {', '.join(ATTENTION_CHOICES)}")


def resolve_prompt_semantics(requested: str | None, ckpt: LoadedCheckpoint) -> tuple[str, str]:
    """(semantics, where it came from): an explicit option wins over the checkpoint's record,
    with a warning when they differ (the graph then differs from the model as trained)."""
    trained = ckpt.trained_semantics
    if requested is None:
        return (trained, "checkpoint") if trained else (DEFAULT_PROMPT_SEMANTICS, "default")
    chosen = check_prompt_semantics(requested)
    if trained and trained != chosen:
        log.warning(
            "the checkpoint was trained with '%s' prompt semantics but --prompt-semantics %s was given; "
            "the detector graph follows '%s' and will not reproduce the model as trained",
            trained,
            chosen,
            chosen,
        )
    return chosen, "option"


def model_dims(ckpt: LoadedCheckpoint) -> gc.ModelDims:
    cfg = ckpt.detector.config
    fpn = cfg.vision_config.fpn_hidden_size
    if cfg.detr_encoder_config.hidden_size != fpn:
        raise CheckpointError(
            f"DETR width {cfg.detr_encoder_config.hidden_size} != FPN width {fpn}: not a SAM3 geometry medsam3-rt supports"
        )
    patch = cfg.vision_config.backbone_config.patch_size
    tracker: dict[str, int] = {}
    if ckpt.video is not None:
        trk = ckpt.video.tracker_model
        if trk.mem_dim != 64 or trk.hidden_dim != fpn:
            raise CheckpointError(
                f"tracker memory width {trk.mem_dim} / hidden {trk.hidden_dim}: transformers' Sam3 tracker supports 64 / {fpn}"
            )
        tracker = {
            "tracker_feat_s0_channels": int(trk.mask_decoder.conv_s0.out_channels),
            "tracker_feat_s1_channels": int(trk.mask_decoder.conv_s1.out_channels),
            "memory_channels": int(trk.mem_dim),
        }
    return gc.ModelDims(
        image_size=int(cfg.vision_config.backbone_config.image_size),
        patch_size=int(patch if isinstance(patch, int) else patch[0]),
        fpn_channels=int(fpn),
        text_context=int(cfg.text_config.max_position_embeddings),
        num_queries=int(cfg.detr_decoder_config.num_queries),
        **tracker,
    )


# Sam3VideoConfig / Sam3TrackerVideoConfig fields the runtime's streaming logic reads.
VIDEO_SETTINGS = (
    "score_threshold_detection",
    "det_nms_thresh",
    "assoc_iou_thresh",
    "trk_assoc_iou_thresh",
    "new_det_thresh",
    "recondition_on_trk_masks",
    "hotstart_delay",
    "hotstart_unmatch_thresh",
    "hotstart_dup_thresh",
    "suppress_unmatched_only_within_hotstart",
    "init_trk_keep_alive",
    "max_trk_keep_alive",
    "min_trk_keep_alive",
    "suppress_overlapping_based_on_recent_occlusion_threshold",
    "decrease_trk_keep_alive_for_empty_masklets",
    "fill_hole_area",
    "max_num_objects",
    "recondition_every_nth_frame",
    "high_conf_thresh",
    "high_iou_thresh",
    "low_res_mask_size",
)
TRACKER_SETTINGS = ("num_maskmem", "max_cond_frame_num", "max_object_pointers_in_encoder")


def tracker_settings(ckpt: LoadedCheckpoint, semantics: str = DEFAULT_TRACKER_SEMANTICS) -> dict[str, Any]:
    """The streaming constants of a Sam3VideoModel, recorded in the manifest's `tracker` section."""
    assert ckpt.video is not None
    cfg, tcfg = ckpt.video.config, ckpt.video.tracker_model.config
    out: dict[str, Any] = {k: getattr(cfg, k) for k in VIDEO_SETTINGS}
    out.update({k: getattr(tcfg, k) for k in TRACKER_SETTINGS})
    out["memory_storage_dtype"] = "bfloat16"
    out["reference"] = "transformers Sam3VideoModel streaming inference (frame by frame)"
    out["semantics"] = semantics
    out["semantics_description"] = TRACKER_DESCRIPTIONS[semantics]
    # Meta's video tracker reads only memories of frames scored above mf_threshold
    # (use_memory_selection in build_sam3_video_model); transformers' reads the last frames
    out["memory_selection"] = semantics == "meta"
    out["memory_selection_threshold"] = MEMORY_SELECTION_THRESHOLD
    return out


def parity_inputs(
    name: str,
    dims: gc.ModelDims,
    ids: np.ndarray,
    attn: np.ndarray,
    pixels: np.ndarray,
    refs: dict[str, dict[str, np.ndarray]],
    num_maskmem: int = 7,
) -> dict[str, torch.Tensor]:
    """Fixed inputs of graph `name`, built from earlier graphs' reference outputs where they chain."""
    t = torch.from_numpy
    if name == gc.TEXT_ENCODER:
        return {gc.INPUT_IDS: t(ids), gc.ATTENTION_MASK: t(attn)}
    if name == gc.IMAGE_BACKBONE:
        return {gc.PIXEL_VALUES: t(pixels)}
    backbone = {k: v[:1] for k, v in refs[gc.IMAGE_BACKBONE].items()}  # the first image of a batched backbone
    if name == gc.DETECTOR:
        return {
            **{k: t(backbone[k]) for k in gc.DET_FPN},
            gc.TEXT_FEATURES: t(refs[gc.TEXT_ENCODER][gc.TEXT_FEATURES]),
            gc.TEXT_MASK: t(attn.astype(bool)),
        }
    trk = {k: t(backbone[k]) for k in gc.TRK_FEATURES}
    rng = np.random.default_rng(0)
    m, hw, mem, c = dims.mask_size, dims.feat_size**2, dims.memory_channels, dims.fpn_channels
    if name == gc.TRACKER_INIT:
        masks = np.zeros((2, 1, m, m), np.float32)
        masks[0, 0, m // 4 : m // 2, m // 3 : 2 * m // 3] = 1
        return {**trk, gc.MASKS: t(masks)}  # the second object is empty (absent)
    if name == gc.MEMORY_ENCODER:
        logits = (rng.normal(size=(2, 1, 4 * m, 4 * m)) * 5).astype(np.float32)
        return {
            gc.TRK_VISION_FEAT: trk[gc.TRK_VISION_FEAT],
            gc.MASK_LOGITS: t(logits),
            gc.BINARIZE: t(np.array([[True], [False]])),
            gc.OBJECT_SCORE_LOGITS: t(np.array([[10.0], [-10.0]], np.float32)),
        }
    if name == gc.TRACKER_STEP:
        # two objects with different histories, padded: 2 and 3 memories, 2 and 4 pointers
        feats = rng.normal(size=(2, 3, hw, mem)).astype(np.float32)
        return {
            **trk,
            gc.MEM_FEATS: t(feats),
            gc.MEM_TPOS: t(np.array([[num_maskmem - 1, 0, 0], [num_maskmem - 1, 1, 0]], np.int64)),
            gc.MEM_VALID: t(np.array([[True, True, False], [True, True, True]])),
            gc.OBJ_PTRS: t(rng.normal(size=(2, 4, c)).astype(np.float32)),
            gc.PTR_TPOS: t(np.array([[0, 1, 0, 0], [0, 1, 2, 3]], np.float32) / 15),
            gc.PTR_VALID: t(np.array([[True, True, False, False], [True, True, True, True]])),
        }
    raise KeyError(name)


def objects_present(refs: dict[str, dict[str, np.ndarray]]) -> dict[str, str]:
    """Per tracker graph, how many parity objects the reference scored present ("1/2").

    An absent object's masks are a constant fill, so its mask parity says little; a reader of
    the report sees how much of the tracker parity compared real masks.
    """
    out = {}
    for name in (gc.TRACKER_INIT, gc.TRACKER_STEP):
        if name in refs:
            scores = refs[name][gc.OBJECT_SCORE_LOGITS]
            out[name] = f"{int((scores > 0).sum())}/{scores.size}"
    return out


def parity_image(size: int, seed: int = 0) -> np.ndarray:
    """A deterministic RGB test card: smooth background, bright and dark ellipses, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = 60 + 80 * xx[..., None] + 40 * yy[..., None] * np.array([1.0, 0.6, 0.3], np.float32)
    for cx, cy, r, v in ((0.35, 0.4, 0.18, 220.0), (0.7, 0.65, 0.12, 30.0), (0.65, 0.25, 0.08, 180.0)):
        img[((xx - cx) ** 2 + (yy - cy) ** 2) < r * r] = v
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _versions(opset: int) -> dict[str, Any]:
    import onnxscript

    return {
        "medsam3_rt": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "onnxruntime": onnxruntime.__version__,
        "exporter": "torch.onnx.export(dynamo=True)",
        "opset": opset,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def export_model(
    source: str | Path | LoadedCheckpoint,
    output_dir: str | Path,
    *,
    config: str | Path | None = None,
    options: ExportOptions | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Export a SAM3 checkpoint (HF directory, sam3.pt, or a loaded model) to `output_dir`."""
    opts = options or ExportOptions()
    if opts.prompt_semantics is not None:
        check_prompt_semantics(opts.prompt_semantics)  # a typo fails before the checkpoint loads
    say = progress or (lambda msg: log.info(msg))
    out = Path(output_dir)
    if out.exists() and not opts.overwrite:
        raise OutputExistsError(f"output '{out}' already exists; choose another folder or pass --force to replace it")
    if opts.parity_reference != "transformers":
        from .meta_parity import check_meta_reference

        check_meta_reference(source)  # before a long load: the package and a sam3.pt file
    if opts.adapter is not None:  # its files are checked before a large base checkpoint is loaded
        from .adapters import merge_adapter, read_adapter

        adapter = read_adapter(opts.adapter)
    if isinstance(source, LoadedCheckpoint):
        ckpt, source_dir = source, None
    else:
        say(f"loading checkpoint {source}")
        ckpt = load_checkpoint(source, config=config)
        source_dir = Path(source) if Path(source).is_dir() else None
    if opts.parity_reference != "transformers":
        check_meta_reference(source, ckpt)
        if opts.adapter is not None or opts.image_size not in (None, model_dims(ckpt).image_size):
            raise UsageError("--parity-reference meta compares the checkpoint as Meta's code runs it: not with --adapter or --image-size")
    if opts.adapter is not None:
        merge_adapter(ckpt, adapter, say)
    checkpoint_size = model_dims(ckpt).image_size
    if opts.image_size is not None:
        ckpt = resize_checkpoint(ckpt, opts.image_size)
        if opts.image_size != checkpoint_size:
            say(f"exporting at {opts.image_size} px (the checkpoint's size is {checkpoint_size} px)")
    dims = model_dims(ckpt)
    semantics, semantics_from = resolve_prompt_semantics(opts.prompt_semantics, ckpt)
    say(f"detector prompt semantics: {semantics} ({semantics_from})")
    if dims.has_tracker:
        say(f"tracker semantics: {opts.tracker_semantics}")
    if ckpt.source.get("unexported_parameters"):
        un = ckpt.source["unexported_parameters"]
        say(f"not exported: {len(un['tensors'])} tensors, {un['total']} parameters ({un['reason']})")
    specs = gc.expected_specs(dims)
    if opts.batch_axis:
        specs[gc.IMAGE_BACKBONE] = gc.backbone_spec(dims, "B")
    det = ckpt.detector
    names = list(gc.DETECTOR_GRAPHS) + (list(gc.TRACKER_GRAPHS) if dims.has_tracker else [])
    model = ckpt.video or det
    with atomic_directory(out, overwrite=opts.overwrite) as stage:
        tokenizer, tokenizer_source = checkpoint_tokenizer(source_dir)
        tok_info = write_tokenizer(tokenizer, stage, int(det.config.text_config.vocab_size), dims.text_context)
        ids, attn = ClipTokenizer(stage / tok_info.file, tok_info).encode(PARITY_PROMPTS)
        preprocess = Preprocess(image_size=dims.image_size)
        pixels = pixel_values(parity_image(dims.image_size), preprocess)
        if opts.batch_axis:  # two different images: a batch of 1 would let the exporter fix the axis
            pixels = np.concatenate([pixels, pixel_values(parity_image(dims.image_size, seed=1), preprocess)])

        modules = {name: build_graph_module(name, ckpt, dims, semantics, opts.tracker_semantics) for name in names}
        say("running the PyTorch reference")
        inputs: dict[str, dict[str, torch.Tensor]] = {}
        refs: dict[str, dict[str, np.ndarray]] = {}
        with torch.no_grad():
            for name in names:
                num_maskmem = ckpt.video.tracker_model.num_maskmem if ckpt.video is not None else 7
                inputs[name] = parity_inputs(name, dims, ids, attn, pixels, refs, num_maskmem)
                outs = modules[name](*inputs[name].values())
                outs = outs if isinstance(outs, tuple) else (outs,)
                refs[name] = {t.name: o.numpy() for t, o in zip(specs[name].outputs, outs, strict=True)}

        graphs: dict[str, GraphEntry] = {}
        results: list[parity.OutputParity] = []
        backend = OrtCpuBackend()
        previous_attn = det.config._attn_implementation
        translation = onnx_translation() if opts.attention == FUSED else None
        # dynamo cannot decompose SDPA with dynamic batch axes: eager (or the fused op) instead, same math.
        with attention_mode(model, opts.attention, modules.values()):
            for name, module in modules.items():
                say(f"exporting {name} ({opts.attention} attention)")
                path = stage / f"{name}.onnx"
                files = export_graph(module, inputs[name], specs[name], path, opset=opts.opset, translation=translation)
                entry = GraphEntry(name, files[0], specs[name], tuple(files[1:]), graph_attention(path))
                graphs[name] = entry
                runner = backend.open(entry, stage)
                got = runner.run({k: v.numpy() for k, v in inputs[name].items()})
                runner.close()
                results += parity.compare(name, refs[name], got, opts.tolerance)
        reference = f"transformers {type(model).__name__} fp32 ({previous_attn} attention), CPU"
        per_graph = {name: reference for name in names}
        if semantics == "meta":
            per_graph[gc.DETECTOR] = f"{reference} with Meta's text-only prompt (geometry-encoder CLS token, medsam3_export.semantics)"
        if gc.TRACKER_INIT in per_graph and opts.tracker_semantics == "meta":
            per_graph[gc.TRACKER_INIT] = f"{reference} with Meta's single-mask object pointer (medsam3_export.semantics)"
        meta = None
        if opts.parity_reference != "transformers":
            from .meta_parity import meta_parity

            assert not isinstance(source, LoadedCheckpoint)
            meta = meta_parity(
                source, ckpt, stage, graphs, pixels, ids, attn,
                prompts=PARITY_PROMPTS, prompt_semantics=semantics, tolerance=opts.tolerance, say=say,
            )  # fmt: skip
            for name in meta.graphs:
                per_graph[name] = meta.reference if opts.parity_reference == "meta" else f"{per_graph[name]}; {meta.reference}"
            if opts.parity_reference == "meta":  # the covered graphs are judged by Meta's code alone
                results = [r for r in results if r.graph not in meta.graphs]
            results += meta.results
        report = parity.report(results, opts.tolerance, reference, per_graph)
        report["objects_present"] = objects_present(refs)
        if meta is not None:
            report["meta"] = {"reference": meta.reference, "detail": meta.detail, "graphs": meta.graphs, "not_compared": meta.skipped}
        atomic_write_text(stage / PARITY_REPORT, json.dumps(report, indent=2))
        for r in results:
            say(("ok    " if r.passed else "FAIL  ") + r.describe())
        parity.check(results)

        rel_files = [f for g in graphs.values() for f in (g.file, *g.external_data)] + [tok_info.file]
        manifest = Manifest(
            model={
                "name": out.name,
                "architecture": det.config.model_type if det.config.model_type == "sam3_lite_text" else "sam3",
                "source": {**ckpt.source, "tokenizer": tokenizer_source},
                "prompt_semantics": semantics,
                "prompt_semantics_detail": {
                    "from": semantics_from,
                    "trained_with": ckpt.trained_semantics,
                    "description": DESCRIPTIONS[semantics],
                    "graphs": [gc.DETECTOR],
                },
                "config": model.config.to_dict(),
                "resolution": resolution_info(ckpt, checkpoint_size),
                "intended_use": INTENDED_USE,
            },
            producer=_versions(opts.opset),
            dims=dims,
            preprocess=preprocess,
            tokenizer=tok_info,
            graphs=graphs,
            files={f: file_entry(stage, f) for f in rel_files},
            postprocess=Postprocess(),
            tracker=tracker_settings(ckpt, opts.tracker_semantics) if dims.has_tracker else None,
            parity={
                "passed": report["passed"],
                "tolerance": report["tolerance"],
                "reference": reference,
                "references": per_graph,
                "report": PARITY_REPORT,
                **({"meta": report["meta"]} if meta is not None else {}),
                "worst": {
                    f"{r.graph}.{r.output}" + (f" vs {r.reference}" if r.reference else ""): {
                        "max_abs": r.max_abs,
                        "max_rel": r.max_rel,
                        **({"sign_agreement": r.sign_agreement} if r.sign_agreement is not None else {}),
                    }
                    for r in results
                },
            },
        )
        atomic_write_text(stage / MANIFEST_NAME, json.dumps(manifest.to_json(), indent=2, default=_json_default))
    say(f"wrote {out}")
    return manifest


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)
