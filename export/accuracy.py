"""The accuracy gate of reduced-precision builds: masks vs the fp32 reference, Dice/IoU deltas.

Every `medsam3-rt build` segments a validation set twice, with the fp32 ONNX graphs on the
reference backend (ort-cpu by default) and with the new engines, then reports:

- with ground truth (`--val DIR` holding `masks/<stem>.png` label maps, label k = k-th
  prompt): the Dice and IoU drop in points, 100 x (mean Dice(ref, GT) - mean Dice(new, GT));
- always: the agreement of the new masks with the fp32 masks, used as the drop when there
  is no ground truth: 100 x (1 - mean Dice(new, ref)), i.e. 99.5 % agreement counts as a
  0.5-point drop. For IoU this is a true upper bound of the ground-truth drop on the same
  masks (1 - IoU is a metric, so IoU(ref, GT) - IoU(new, GT) <= 1 - IoU(new, ref)); for
  Dice it is the conservative proxy the gate uses, not a proof.

The build fails (exit code 6) when the Dice drop exceeds the threshold (default 0.5 points),
and the report is stored in each engine entry. Metrics come from `medsam3_rt.metrics`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsam3_rt import graph_contract as gc
from medsam3_rt.backends.base import Tensor, as_numpy
from medsam3_rt.errors import AccuracyGateError, InputError
from medsam3_rt.io.images import list_images, read_image
from medsam3_rt.metrics import dice, iou

DEFAULT_MAX_DICE_DROP = 0.5  # points (percent of Dice)
DEFAULT_PROMPTS = ("polyp", "left kidney")
SYNTHETIC_IMAGES = 6


@dataclass(frozen=True)
class Sample:
    name: str
    image: np.ndarray
    labels: np.ndarray | None = None  # uint8 label map: k = k-th prompt, 0 background


@dataclass(frozen=True)
class MaskPair:
    sample: str
    prompt: str
    reference: np.ndarray  # bool (H, W), fp32 pipeline
    candidate: np.ndarray  # bool (H, W), new engines
    truth: np.ndarray | None = None


@dataclass(frozen=True)
class GateReport:
    reference: str
    candidate: str
    mode: str  # "ground truth" | "agreement with fp32"
    samples: int
    pairs: int
    dice_drop_points: float
    iou_drop_points: float
    mean_dice_vs_reference: float
    mean_iou_vs_reference: float
    worst: dict[str, Any]
    max_dice_drop_points: float
    passed: bool
    ground_truth: dict[str, float] = field(default_factory=dict)
    graph_deltas: dict[str, dict[str, float]] = field(default_factory=dict)
    validation_set: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"accuracy gate {verdict}: Dice drop {self.dice_drop_points:.3f} points (limit {self.max_dice_drop_points:g}), "
            f"IoU drop {self.iou_drop_points:.3f} points, {self.mode}, {self.pairs} masks on {self.samples} images; "
            f"worst {self.worst.get('sample')}/{self.worst.get('prompt')} Dice {self.worst.get('dice', 1.0):.4f} vs {self.reference}"
        )


def gate(
    pairs: Sequence[MaskPair],
    *,
    max_dice_drop: float = DEFAULT_MAX_DICE_DROP,
    reference: str = "fp32",
    candidate: str = "",
    samples: int = 0,
) -> GateReport:
    """Compare candidate masks with reference masks (and ground truth where given)."""
    if max_dice_drop < 0:
        raise ValueError(f"max_dice_drop must be >= 0, got {max_dice_drop}")
    if not pairs:
        raise AccuracyGateError("the accuracy gate has no masks to compare (empty validation set)")
    agree_d = np.array([dice(p.candidate, p.reference) for p in pairs])
    agree_i = np.array([iou(p.candidate, p.reference) for p in pairs])
    k = int(np.argmin(agree_d))
    worst = {"sample": pairs[k].sample, "prompt": pairs[k].prompt, "dice": float(agree_d[k]), "iou": float(agree_i[k])}
    truth_pairs = [p for p in pairs if p.truth is not None]
    gt: dict[str, float] = {}
    if truth_pairs and len(truth_pairs) == len(pairs):
        ref_d = np.array([dice(p.reference, p.truth) for p in pairs])  # type: ignore[arg-type]
        new_d = np.array([dice(p.candidate, p.truth) for p in pairs])  # type: ignore[arg-type]
        ref_i = np.array([iou(p.reference, p.truth) for p in pairs])  # type: ignore[arg-type]
        new_i = np.array([iou(p.candidate, p.truth) for p in pairs])  # type: ignore[arg-type]
        gt = {"dice_reference": float(ref_d.mean()), "dice_candidate": float(new_d.mean())}
        gt |= {"iou_reference": float(ref_i.mean()), "iou_candidate": float(new_i.mean())}
        mode = "ground truth"
        dice_drop = 100.0 * (gt["dice_reference"] - gt["dice_candidate"])
        iou_drop = 100.0 * (gt["iou_reference"] - gt["iou_candidate"])
    else:
        mode = "agreement with fp32"
        dice_drop = 100.0 * (1.0 - float(agree_d.mean()))
        iou_drop = 100.0 * (1.0 - float(agree_i.mean()))
    return GateReport(
        reference=reference,
        candidate=candidate,
        mode=mode,
        samples=samples or len({p.sample for p in pairs}),
        pairs=len(pairs),
        dice_drop_points=float(dice_drop),
        iou_drop_points=float(iou_drop),
        mean_dice_vs_reference=float(agree_d.mean()),
        mean_iou_vs_reference=float(agree_i.mean()),
        worst=worst,
        max_dice_drop_points=float(max_dice_drop),
        passed=bool(dice_drop <= max_dice_drop),
        ground_truth=gt,
    )


def check(report: GateReport) -> None:
    if not report.passed:
        raise AccuracyGateError(report.describe() + "; raise --max-dice-drop deliberately or build a higher precision")


# -- validation sets ----------------------------------------------------------------------


def synthetic_samples(size: int, n: int = SYNTHETIC_IMAGES) -> list[Sample]:
    """Deterministic test cards when the user gives no validation images (said so in the report)."""
    from .exporter import parity_image

    return [Sample(f"synthetic-{i}", parity_image(max(size, 64), seed=i)) for i in range(n)]


def load_samples(folder: Path, n_prompts: int) -> list[Sample]:
    """Images of `folder`; a label map `folder/masks/<stem>.png` (k = k-th prompt) adds ground truth."""
    images = list_images(folder)
    if not images:
        raise InputError(f"{folder}: no validation images")
    samples = []
    for path in images:
        labels = None
        mask_path = folder / "masks" / f"{path.stem}.png"
        if mask_path.is_file():
            labels = read_image(mask_path)
            labels = labels[..., 0] if labels.ndim == 3 else labels
            if int(labels.max()) > n_prompts:
                raise InputError(f"{mask_path}: label {int(labels.max())} but only {n_prompts} prompts were given (--prompt)")
        samples.append(Sample(path.stem, read_image(path), labels))
    return samples


def mask_pairs(reference: Any, candidate: Any, samples: Sequence[Sample], prompts: Sequence[str]) -> list[MaskPair]:
    """Segment every sample with both `Segmenter`s; one pair per (sample, prompt)."""
    pairs = []
    for s in samples:
        ref = reference.segment(s.image, list(prompts))
        new = candidate.segment(s.image, list(prompts))
        if s.labels is not None and s.labels.shape != ref.masks.shape[1:]:
            raise InputError(f"ground truth of {s.name} is {s.labels.shape}, the image is {ref.masks.shape[1:]}")
        for k, prompt in enumerate(prompts):
            truth = (s.labels == k + 1) if s.labels is not None else None
            pairs.append(MaskPair(s.name, prompt, ref.masks[k], new.masks[k], truth))
    return pairs


def output_deltas(reference: Mapping[str, Tensor], candidate: Mapping[str, Tensor]) -> dict[str, float]:
    """max |new - ref| per output, and relative to max |ref| (the per-graph part of the report)."""
    out: dict[str, float] = {}
    for name, r in reference.items():
        r64 = as_numpy(r).astype(np.float64)
        c64 = as_numpy(candidate[name]).astype(np.float64)
        err = float(np.max(np.abs(c64 - r64))) if r64.size else 0.0
        scale = float(np.max(np.abs(r64))) if r64.size else 0.0
        out[f"{name}.max_abs"] = err
        out[f"{name}.max_rel"] = err / max(scale, 1e-30)
    return out


def synthetic_feeds(spec: gc.GraphSpec, axes: Mapping[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Valid random feeds for a graph at the given axis sizes (tracker graphs have no natural sample)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for t in spec.inputs:
        shape = tuple(d if isinstance(d, int) else axes[d] for d in t.shape)
        if t.dtype == "bool":
            feeds[t.name] = np.ones(shape, bool)
        elif t.dtype in ("int64", "int32"):
            feeds[t.name] = np.broadcast_to(np.arange(shape[-1], dtype=t.dtype), shape).copy() if shape else np.zeros((), t.dtype)
        elif t.name == gc.MASKS:
            feeds[t.name] = (rng.random(shape) > 0.5).astype(np.float32)
        else:
            feeds[t.name] = rng.normal(0.0, 1.0, shape).astype(t.dtype)
    return feeds
