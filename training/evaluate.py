"""Evaluation with the paper's protocol, on a PyTorch checkpoint or an exported model.

Protocol (Medical SAM3 Sec. 4.2): text-only prompts, one per concept of the dataset's
label-to-text dictionary; for each prompt the highest-confidence query's mask (score =
sigmoid(logit) x sigmoid(presence)); for multi-class datasets every concept is queried
independently and overlaps are resolved by pixel-wise maximal mask probability into one
label map. Dice and IoU are computed per (image, concept) pair whose ground truth contains
the concept, averaged per dataset, and the dataset means are averaged. Concepts absent from
an image are reported separately as the false-positive rate (a non-empty predicted mask).
When a dataset's concepts overlap (e.g. "brain" and "cerebellum"), each concept is scored on
its own top-1 mask instead of the label map.

Both predictors run the same steps: `TorchPredictor` uses the runtime's preprocessing
(`medsam3_rt.preprocess.pixel_values`) and post-processing (`medsam3_rt.postprocess`) around
the transformers model; `RuntimePredictor` is `medsam3_rt.load(export_dir).segment`. Running
both on the same images reports the Dice delta an export or a backend costs, and how well
their masks agree.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from medsam3_rt import metrics
from medsam3_rt import postprocess as post
from medsam3_rt.io.atomic import atomic_write_text
from medsam3_rt.manifest import Postprocess, Preprocess
from medsam3_rt.preprocess import pixel_values
from medsam3_rt.tokenizer import normalize_prompt

from .data.sources import SampleRef, Source

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


@dataclass
class Prediction:
    """masks bool (P, H, W) top-1 per prompt; scores float32 (P,); label_map uint8 (H, W)."""

    masks: np.ndarray
    scores: np.ndarray
    label_map: np.ndarray


class Predictor(Protocol):
    name: str

    def predict(self, image: np.ndarray, prompts: list[str]) -> Prediction: ...


def combine_outputs(logits: np.ndarray, presence: np.ndarray, mask_logits: np.ndarray, hw: tuple[int, int], threshold: float) -> Prediction:
    """Detector outputs for P prompts -> the runtime's result (same functions as `Segmenter`)."""
    scores_all = post.detection_scores(logits, presence)
    best = post.top1(scores_all)
    rows = np.arange(logits.shape[0])
    probs = post.upsample_probabilities(mask_logits[rows, best], hw)
    masks, label = post.combine(probs, np.ones(len(rows), bool), threshold)
    return Prediction(masks, scores_all[rows, best].astype(np.float32), label)


class TorchPredictor:
    """A transformers `Sam3Model` behind the runtime's pre- and post-processing."""

    name = "pytorch"

    def __init__(
        self, detector: Any, tokenizer: Any, device: Any = "cpu", *, context_length: int = 32, prompt_semantics: str = "meta"
    ) -> None:
        import torch

        self.torch = torch
        self.prompt_semantics = prompt_semantics  # as the model was trained (medsam3_export.semantics)
        self.detector = detector
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.context_length = context_length
        size = int(detector.config.vision_config.backbone_config.image_size)
        self.preprocess = Preprocess(image_size=size)
        self.threshold = Postprocess().mask_threshold
        self._tokens: dict[str, tuple[Any, Any]] = {}

    def tokens(self, prompts: list[str]) -> tuple[Any, Any]:
        torch = self.torch
        missing = [p for p in prompts if normalize_prompt(p) not in self._tokens]
        if missing:
            enc = self.tokenizer([normalize_prompt(p) for p in missing], padding="max_length", max_length=self.context_length)
            for p, ids, mask in zip(missing, enc["input_ids"], enc["attention_mask"]):
                if len(ids) > self.context_length:
                    from medsam3_rt.errors import PromptError

                    raise PromptError(f"prompt {p!r} is {len(ids)} tokens; the model reads at most {self.context_length}: shorten it")
                self._tokens[normalize_prompt(p)] = (ids, mask)
        rows = [self._tokens[normalize_prompt(p)] for p in prompts]
        return torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows])

    def predict(self, image: np.ndarray, prompts: list[str]) -> Prediction:
        torch = self.torch
        from medsam3_export.semantics import detector_forward
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        ids, mask = self.tokens(prompts)
        pixels = torch.from_numpy(pixel_values(image, self.preprocess)).to(self.device)
        was_training = self.detector.training
        self.detector.eval()
        try:
            with torch.no_grad():
                vision = self.detector.get_vision_features(pixel_values=pixels)
                n = len(prompts)
                expanded = Sam3VisionEncoderOutput(
                    fpn_hidden_states=tuple(f.expand(n, -1, -1, -1) for f in vision.fpn_hidden_states),
                    fpn_position_encoding=tuple(p.expand(n, -1, -1, -1) for p in vision.fpn_position_encoding),
                )
                out = detector_forward(
                    self.detector, ids.to(self.device), mask.to(self.device), self.prompt_semantics, vision_embeds=expanded
                )
        finally:
            self.detector.train(was_training)
        return combine_outputs(
            out.pred_logits.float().cpu().numpy(),
            out.presence_logits.float().cpu().numpy(),
            out.pred_masks.float().cpu().numpy(),
            image.shape[:2],
            self.threshold,
        )


class RuntimePredictor:
    """An export directory through the torch-free runtime (`medsam3_rt.load`)."""

    def __init__(self, model_dir: str | Path, backend: str = "auto", *, name: str = "exported") -> None:
        import medsam3_rt

        self.name = name
        self.segmenter = medsam3_rt.load(model_dir, backend)

    def predict(self, image: np.ndarray, prompts: list[str]) -> Prediction:
        res = self.segmenter.segment(image, prompts)
        return Prediction(res.masks, res.scores, res.label_map)

    def close(self) -> None:
        self.segmenter.close()


@dataclass
class _Acc:
    dice: list[float] = field(default_factory=list)
    iou: list[float] = field(default_factory=list)
    absent: int = 0
    false_pos: int = 0

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dice": float(np.mean(self.dice)) if self.dice else math.nan,
            "iou": float(np.mean(self.iou)) if self.iou else math.nan,
            "n": len(self.dice),
        }
        if self.absent:
            out["absent"] = self.absent
            out["false_positive_rate"] = self.false_pos / self.absent
        return out


def evaluate(
    sources: list[Source],
    refs: dict[str, list[SampleRef]],
    predictors: list[Predictor],
    *,
    max_images: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Run every predictor on the same samples; returns the report as plain data."""
    names = [p.name for p in predictors]
    per: dict[str, dict[str, dict[str, _Acc]]] = {n: {} for n in names}
    agreement: dict[str, list[float]] = {}
    images: dict[str, int] = {}
    for src in sources:
        todo = refs.get(src.name, [])
        if max_images is not None:
            todo = todo[:max_images]
        images[src.name] = len(todo)
        for n in names:
            per[n][src.name] = {"__all__": _Acc(), **{c: _Acc() for c in src.concepts}}
        agreement[src.name] = []
        for k, ref in enumerate(todo):
            ann = src.load(ref)
            preds = [p.predict(ann.image, list(src.concepts)) for p in predictors]
            for ci, concept in enumerate(src.concepts):
                gt = ann.masks.get(ci)
                masks = [(pr.label_map == ci + 1) if src.exclusive else pr.masks[ci] for pr in preds]
                for n, m in zip(names, masks):
                    acc, allacc = per[n][src.name][concept], per[n][src.name]["__all__"]
                    if gt is None:
                        for a in (acc, allacc):
                            a.absent += 1
                            a.false_pos += int(m.any())
                    else:
                        d, i = metrics.dice(m, gt), metrics.iou(m, gt)
                        for a in (acc, allacc):
                            a.dice.append(d)
                            a.iou.append(i)
                if len(masks) > 1:
                    agreement[src.name].append(metrics.dice(masks[1], masks[0]))
            if progress is not None:
                progress(src.name, k + 1, len(todo))
    report: dict[str, Any] = {
        "protocol": (
            "text-only prompts from the label-to-text dictionary; top-1 (sigmoid(logit) x sigmoid(presence)) mask per prompt; "
            "multi-class by pixel-wise maximal probability; Dice/IoU per (image, concept) with the concept in the ground truth"
        ),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "images": images,
        "predictors": {},
    }
    for n in names:
        datasets = {}
        for ds, accs in per[n].items():
            summary = accs["__all__"].summary()
            summary["concepts"] = {c: a.summary() for c, a in accs.items() if c != "__all__"}
            datasets[ds] = summary
        valid = [d for d in datasets.values() if d["n"]]
        report["predictors"][n] = {
            "datasets": datasets,
            "mean": {
                "dice": float(np.mean([d["dice"] for d in valid])) if valid else math.nan,
                "iou": float(np.mean([d["iou"] for d in valid])) if valid else math.nan,
            },
        }
    if len(names) > 1:
        ref_name, cand = names[0], names[1]
        a, b = report["predictors"][ref_name], report["predictors"][cand]
        report["comparison"] = {
            "reference": ref_name,
            "candidate": cand,
            "dice_delta": b["mean"]["dice"] - a["mean"]["dice"],
            "iou_delta": b["mean"]["iou"] - a["mean"]["iou"],
            "datasets": {
                ds: {
                    "dice_delta": b["datasets"][ds]["dice"] - a["datasets"][ds]["dice"],
                    "mask_agreement_dice": float(np.mean(agreement[ds])) if agreement[ds] else math.nan,
                }
                for ds in a["datasets"]
            },
        }
    return report


def _fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def markdown(report: dict[str, Any], title: str = "Evaluation") -> str:
    lines = [f"# {title}", "", f"Protocol: {report['protocol']}.", "", "Dice / IoU in %.", ""]
    names = list(report["predictors"])
    header = "| dataset | images | " + " | ".join(f"{n} Dice | {n} IoU" for n in names) + " |"
    lines += [header, "|" + "---|" * (2 + 2 * len(names))]
    first = report["predictors"][names[0]]["datasets"]
    for ds in first:
        cells = " | ".join(
            f"{_fmt(report['predictors'][n]['datasets'][ds]['dice'])} | {_fmt(report['predictors'][n]['datasets'][ds]['iou'])}"
            for n in names
        )
        lines.append(f"| {ds} | {report['images'].get(ds, 0)} | {cells} |")
    means = " | ".join(f"{_fmt(report['predictors'][n]['mean']['dice'])} | {_fmt(report['predictors'][n]['mean']['iou'])}" for n in names)
    lines += [f"| **mean** | | {means} |", ""]
    for n in names:
        lines += [
            f"## {n}: per concept",
            "",
            "| dataset | concept | pairs | Dice | IoU | false positives on absent |",
            "|---|---|---|---|---|---|",
        ]
        for ds, d in report["predictors"][n]["datasets"].items():
            for c, s in d["concepts"].items():
                fp = f"{100 * s['false_positive_rate']:.0f}% of {s['absent']}" if "absent" in s else "-"
                lines.append(f"| {ds} | {c} | {s['n']} | {_fmt(s['dice'])} | {_fmt(s['iou'])} | {fp} |")
        lines.append("")
    if "comparison" in report:
        c = report["comparison"]
        lines += [
            f"## {c['candidate']} vs {c['reference']}",
            "",
            f"Mean Dice delta: {100 * c['dice_delta']:+.2f} points (IoU {100 * c['iou_delta']:+.2f}).",
            "",
            "| dataset | Dice delta (points) | mask agreement (Dice) |",
            "|---|---|---|",
        ]
        for ds, d in c["datasets"].items():
            lines.append(f"| {ds} | {100 * d['dice_delta']:+.2f} | {_fmt(d['mask_agreement_dice'])} |")
        lines.append("")
    return "\n".join(lines)


def json_safe(value: Any) -> Any:
    """NaN (no pairs to score) becomes null, so the JSON is strict."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_report(report: dict[str, Any], output_dir: str | Path, title: str = "Evaluation") -> tuple[Path, Path]:
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    j, m = out / REPORT_JSON, out / REPORT_MD
    atomic_write_text(j, json.dumps(json_safe(report), indent=1, allow_nan=False))
    atomic_write_text(m, markdown(report, title))
    return j, m
