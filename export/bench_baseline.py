"""The transformers baseline of `medsam3-rt bench`: eager fp32 PyTorch, as a user would run SAM3 today.

- images: `Sam3Model` (the detector of a video checkpoint), vision features once per image, the
  prompts as one batch, text embeddings cached per prompt (what a careful user does; a cache
  miss runs the tokenizer and `get_text_features`);
- slices: `Sam3VideoModel` in streaming mode (`model(inference_session=..., frame=...)`), with
  the video processor's post-processing (upsampling, object-wise non-overlap) and a label map.

Inputs are preprocessed with medsam3_rt's `pixel_values`, which equals `Sam3ImageProcessor`
(bit-exact for uint8; tests/runtime/test_preprocess.py): the processor itself needs torchvision.
Stages are timed by wrapping the model's own methods, so nothing of its code changes. The
weights are those of the export (`--checkpoint`, or the random preset rebuilt from its seed and
saved once to a temporary Hugging Face directory, so that `load` times `from_pretrained`).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from medsam3_bench.candidates import Candidate, ImageOutput, StreamHandle, StreamOutput, StreamPolicy

from medsam3_rt.errors import UsageError
from medsam3_rt.manifest import Manifest
from medsam3_rt.preprocess import pixel_values
from medsam3_rt.stopwatch import Stopwatch

from .checkpoint import load_checkpoint
from .semantics import add_geometry_cls, manifest_prompt_semantics
from .tokenizer_files import bundled_clip_tokenizer, checkpoint_tokenizer


def _resolve_device(device: str) -> torch.device:
    """auto: the first CUDA GPU when PyTorch sees one, else the CPU; an unusable request is a usage error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--baseline-device {device}: PyTorch sees no CUDA GPU here (torch {torch.__version__}); use cpu or auto")
    return torch.device(device)


def _gpu_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device)


class TransformersCandidate(Candidate):
    name = "transformers"
    kind = "baseline"

    def __init__(
        self, model_dir: Path, manifest: Manifest, *, checkpoint: Path | None = None, threads: int | None = None, device: str = "auto"
    ) -> None:
        self.manifest = manifest
        self.device = _resolve_device(device)
        self.semantics = manifest_prompt_semantics(manifest.model)
        self.threads = threads
        if threads:
            torch.set_num_threads(threads)
        self._tmp: Path | None = None
        source = manifest.model.get("source") or {}
        if checkpoint is None:
            if source.get("format") != "random":
                raise UsageError("the transformers baseline needs the checkpoint this export was made from: pass --checkpoint PATH")
            from .torch_backend import checkpoint_for

            ckpt = checkpoint_for(manifest, None)  # the random preset, rebuilt from its seed
            self._tmp = Path(tempfile.mkdtemp(prefix="medsam3-bench-hf-"))
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            try:
                (ckpt.video or ckpt.detector).save_pretrained(self._tmp)
            finally:
                hf_logging.enable_progress_bar()
            del ckpt
            checkpoint = self._tmp
        self.checkpoint = Path(checkpoint)
        self.video: Any = None
        self.detector: Any = None
        self.tokenizer: Any = None
        self._text: dict[str, torch.Tensor] = {}  # prompt -> (T, C) projected text features
        self._masks: dict[str, torch.Tensor] = {}

    def load(self) -> None:
        ckpt = load_checkpoint(self.checkpoint, config=None if self.checkpoint.is_dir() else self.manifest.model.get("config"))
        self.detector, self.video = ckpt.detector.eval().to(self.device), ckpt.video
        if self.video is not None:
            self.video.eval().to(self.device)
        self.tokenizer = checkpoint_tokenizer(self.checkpoint)[0] if self.checkpoint.is_dir() else bundled_clip_tokenizer()

    def describe(self) -> dict[str, Any]:
        import transformers

        attn = getattr(self.detector.config, "_attn_implementation", None) if self.detector is not None else None
        where = _gpu_name(self.device) if self.device.type == "cuda" else f"{torch.get_num_threads()} threads"
        return {
            "name": self.name,
            "kind": self.kind,
            "backend": f"pytorch eager fp32 ({self.device.type})",
            "description": f"transformers {transformers.__version__} Sam3Model / Sam3VideoModel, torch {torch.__version__}, "
            f"fp32, {attn} attention, {self.semantics} text-only semantics, {where}",
            "threads": torch.get_num_threads(),
        }

    # -- text -----------------------------------------------------------------------------
    def _tokenize(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        ctx = self.manifest.dims.text_context
        enc = self.tokenizer(list(prompts), padding="max_length", max_length=ctx, truncation=True, return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items()}

    def sync(self) -> None:
        """Wait for queued GPU work, so that a lap counts it (no-op on the CPU)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def text_miss(self, prompts: Sequence[str]) -> dict[str, float]:
        sw = self.stopwatch()
        enc = self._tokenize(prompts)
        sw.lap("tokenize")
        with torch.inference_mode():
            out = self.detector.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], return_dict=True)
        self.sync()
        sw.lap("text_encoder")
        for i, p in enumerate(prompts):
            self._text[p], self._masks[p] = out.pooler_output[i], enc["attention_mask"][i]
        return sw.ms

    # -- images ---------------------------------------------------------------------------
    def _detect(self, image: np.ndarray, prompts: Sequence[str], sw: Stopwatch) -> Any:
        from transformers.modeling_outputs import BaseModelOutputWithPooling
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        if any(p not in self._text for p in prompts):
            self.text_miss([p for p in prompts if p not in self._text])
            sw.reset()
        feats = torch.stack([self._text[p] for p in prompts])
        mask = torch.stack([self._masks[p] for p in prompts])
        sw.lap("text")
        pixels = torch.from_numpy(pixel_values(image, self.manifest.preprocess)).to(self.device)
        self.sync()
        sw.lap("preprocess")
        with torch.inference_mode():
            vision = self.detector.get_vision_features(pixel_values=pixels)
            self.sync()
            sw.lap("backbone")
            n = len(prompts)
            batched = Sam3VisionEncoderOutput(
                fpn_hidden_states=tuple(f.expand(n, -1, -1, -1) for f in vision.fpn_hidden_states),
                fpn_position_encoding=tuple(p.expand(n, -1, -1, -1) for p in vision.fpn_position_encoding),
            )
            if self.semantics == "meta":  # the export's detector graph appends the empty prompt's geometry CLS: so does its baseline
                feats, mask = add_geometry_cls(
                    self.detector, feats, mask, batched.fpn_hidden_states[:-1], batched.fpn_position_encoding[:-1]
                )
            out = self.detector(vision_embeds=batched, text_embeds=BaseModelOutputWithPooling(pooler_output=feats), attention_mask=mask)
        self.sync()
        sw.lap("detector")
        return out

    def detection_probs(self, image: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
        out = self._detect(image, prompts, Stopwatch())
        return (out.pred_logits.sigmoid() * out.presence_logits.sigmoid()).cpu().numpy()

    def segment(self, image: np.ndarray, prompts: Sequence[str]) -> tuple[dict[str, float], ImageOutput]:
        sw = self.stopwatch()
        out = self._detect(image, prompts, sw)
        # post_process_instance_segmentation, top-1 query per prompt (the paper's protocol)
        scores = out.pred_logits.sigmoid() * out.presence_logits.sigmoid()
        best = scores.argmax(dim=1)
        rows = torch.arange(len(prompts), device=self.device)
        h, w = image.shape[:2]
        probs = F.interpolate(out.pred_masks[rows, best].sigmoid()[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        masks = (probs > 0.5).cpu().numpy()
        sw.lap("postprocess")
        return sw.ms, ImageOutput(masks, scores[rows, best].cpu().numpy())

    # -- streaming ------------------------------------------------------------------------
    def stream(self, prompts: Sequence[str], hw: tuple[int, int], policy: StreamPolicy) -> StreamHandle:
        if self.video is None:
            raise RuntimeError("the checkpoint has no tracker (Sam3Model): streaming needs a Sam3VideoModel")
        return _TransformersStream(self, prompts, hw, policy)

    def gpu_memory_bytes(self) -> int | None:
        return int(torch.cuda.max_memory_allocated(self.device)) if self.device.type == "cuda" else None

    def close(self) -> None:
        self.video = self.detector = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


class _TransformersStream(StreamHandle):
    """`Sam3VideoModel` streaming, one frame per `push`, stages timed around its own methods."""

    def __init__(self, cand: TransformersCandidate, prompts: Sequence[str], hw: tuple[int, int], policy: StreamPolicy) -> None:
        from transformers.models.sam3_video import modeling_sam3_video as msv
        from transformers.models.sam3_video.processing_sam3_video import Sam3VideoProcessor

        self.cand = cand
        self.model = model = cand.video
        model.score_threshold_detection = policy.detection_threshold
        model.new_det_thresh = policy.new_object_threshold
        model.max_num_objects = policy.max_objects
        # NMS and hole filling need transformers' optional hub kernel; the policy says whether to run them
        model.det_nms_thresh = model.config.det_nms_thresh if policy.nms else 0.0
        model.fill_hole_area = model.config.fill_hole_area if policy.fill_holes else 0
        self.hw = hw
        self.session = msv.Sam3VideoInferenceSession(
            video_height=hw[0], video_width=hw[1], inference_device=cand.device, dtype=torch.float32
        )
        enc = cand._tokenize(prompts)
        for i, p in enumerate(prompts):
            pid = self.session.add_prompt(p)
            self.session.prompt_input_ids[pid] = enc["input_ids"][i : i + 1]
            self.session.prompt_attention_masks[pid] = enc["attention_mask"][i : i + 1]
        self.processor = object.__new__(Sam3VideoProcessor)  # its post-processing needs no tokenizer
        self.ms: dict[str, float] = {}
        self._wrapped: list[tuple[Any, str]] = []
        for obj, method, stage in (
            (model.detector_model, "get_vision_features", "backbone"),
            (model, "run_detection", "detector"),
            (model, "run_tracker_propagation", "tracker"),
            (model, "run_tracker_update_planning_phase", "merge_memory"),
            (model, "run_tracker_update_execution_phase", "merge_memory"),
            (model, "build_outputs", "postprocess"),
        ):
            self._wrap(obj, method, stage)
        if cand.semantics == "meta":
            self._meta_detector(model.detector_model)
        self._last = -1

    def _meta_detector(self, detector: Any) -> None:
        """Meta's text-only semantics inside `Sam3VideoModel.run_detection`, as the export's detector graph has them."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        forward = detector.forward

        def meta_forward(*, vision_embeds: Any, text_embeds: Any, attention_mask: torch.Tensor, **kwargs: Any) -> Any:
            levels, pos = vision_embeds.fpn_hidden_states[:-1], vision_embeds.fpn_position_encoding[:-1]
            feats, mask = add_geometry_cls(detector, text_embeds.pooler_output, attention_mask, levels, pos)
            text = BaseModelOutputWithPooling(pooler_output=feats)
            return forward(vision_embeds=vision_embeds, text_embeds=text, attention_mask=mask, **kwargs)

        detector.forward = meta_forward
        self._wrapped.append((detector, "forward"))

    def _wrap(self, obj: Any, method: str, stage: str) -> None:
        original = getattr(obj, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.cand.sync()
                self.ms[stage] = self.ms.get(stage, 0.0) + (time.perf_counter() - t0) * 1e3

        setattr(obj, method, timed)
        self._wrapped.append((obj, method))

    def push(self, frame: np.ndarray) -> tuple[dict[str, float], StreamOutput]:
        self.ms = {}
        t0 = time.perf_counter()
        pixels = torch.from_numpy(pixel_values(frame, self.cand.manifest.preprocess))[0].to(self.cand.device)
        self.ms["preprocess"] = (time.perf_counter() - t0) * 1e3
        with torch.inference_mode():
            out = self.model(inference_session=self.session, frame=pixels)
        t1 = time.perf_counter()
        label = self._postprocess(out)
        self.ms["postprocess"] = self.ms.get("postprocess", 0.0) + (time.perf_counter() - t1) * 1e3
        total = (time.perf_counter() - t0) * 1e3
        self.ms["other"] = max(0.0, total - sum(self.ms.values()))
        self._last = out.frame_idx
        return dict(self.ms), StreamOutput(label, len(out.object_ids))

    def _postprocess(self, out: Any) -> np.ndarray:
        """The video processor's post-processing, then a label map like medsam3_rt's FrameResult."""
        h, w = self.hw
        ids = sorted(out.obj_id_to_mask)
        label = np.zeros((h, w), np.uint8)
        if not ids:
            return label
        low = torch.cat([out.obj_id_to_mask[i] for i in ids])
        logits = F.interpolate(low[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        masks = logits > 0
        keep = masks.any(dim=(1, 2))
        if not bool(keep.any()):
            return label
        ids = [i for i, k in zip(ids, keep.tolist()) if k]
        masks, logits = masks[keep], logits[keep]
        score_of = out.obj_id_to_tracker_score
        scores = torch.tensor([float(score_of.get(i, out.obj_id_to_score.get(i, 0.0))) for i in ids], device=logits.device)
        prompt_ids = [self.session.obj_id_to_prompt_id[i] for i in ids]
        if len(ids) > 1:
            masks = (
                self.processor._apply_object_wise_non_overlapping_constraints(
                    masks[:, None], scores[:, None], background_value=0, prompt_ids=prompt_ids
                )[:, 0]
                > 0
            )
        conf = torch.where(masks, logits.sigmoid(), torch.full_like(logits, -1.0))
        best = conf.argmax(dim=0).cpu().numpy()
        pid = np.asarray(prompt_ids, np.int64)
        return np.where(masks.any(dim=0).cpu().numpy(), pid[best] + 1, 0).astype(np.uint8)

    def tracker_step(self) -> tuple[float, dict[str, int]] | None:
        if not self.session.obj_ids or self._last < 0:
            return None
        t0 = time.perf_counter()
        with torch.inference_mode():
            self.model.run_tracker_propagation(inference_session=self.session, frame_idx=self._last, reverse=False)
        self.cand.sync()
        ms = (time.perf_counter() - t0) * 1e3
        return ms, {"objects": len(self.session.obj_ids)}

    def close(self) -> None:
        for obj, method in self._wrapped:
            if method in vars(obj):
                delattr(obj, method)  # back to the class's method
        self._wrapped.clear()
        self.session = None
