"""Tracker training loop: one clip per step, frozen detector, resumable checkpoints.

Conventions follow the image recipe (`trainer.py`): the run folder holds `last/` (weights +
`trainer_state.pt` with optimizer, scheduler, RNG and step, for an exact `--resume`) and
`best/` (best mean validation propagation Dice), both Hugging Face `Sam3VideoModel` folders
that `medsam3-rt export` takes as they are (the tracker graphs are exported from them), plus
`metrics.csv` and `validation.jsonl`. Validation propagates every held-out clip from its
ground-truth first frame and pools Dice over the tracked frames.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsam3_rt.errors import InputError

from .checkpoints import TRAINER_STATE, read_trainer_state, rng_state, save_checkpoint, set_rng_state
from .model import load_model
from .optim import lr_factor
from .tracker_config import TrackerTrainConfig
from .tracker_data import Clip, clip_masks, clip_tensors, group_clips, split_clips, video_clips, volume_clips
from .tracker_model import TrackerLossWeights, TrackerTrainingModel, clip_loss, propagation_dice, trainable_parameters

log = logging.getLogger(__name__)


@dataclass
class TrackerTrainResult:
    output_dir: str
    steps: int
    first_loss: float
    last_loss: float
    best_dice: float
    initial_dice: float
    history: list[dict[str, Any]]
    seconds: float


def load_clips(cfg: TrackerTrainConfig) -> list[Clip]:
    """Every clip of every configured volume axis and video."""
    c = cfg.clip
    clips: list[Clip] = []
    for v in cfg.data.volumes:
        for axis in v.axes:
            clips += volume_clips(
                v.image,
                v.label,
                dict(v.labels),
                axis=axis,
                length=c.length,
                stride=c.stride,
                block=c.split_block,
                step=v.slice_step,
                min_pixels=c.min_pixels,
                window=v.window,
                heldout=v.heldout,
            )
    for d in cfg.data.videos:
        clips += video_clips(
            d.frames, d.masks, dict(d.labels), length=c.length, stride=c.stride, block=c.split_block, min_pixels=c.min_pixels
        )
    if not clips:
        raise InputError("the tracker config yields no clips: add data.volumes or data.videos whose first clip frames show a concept")
    return clips


class DetectorPrompt:
    """Frame-0 prompts from the frozen detector: its top-1 mask for the concept's text.

    Where the detector finds nothing, the ground truth prompts the clip (a tracker cannot start
    from an empty mask); `fallbacks` counts those clips.
    """

    def __init__(self, detector: torch.nn.Module, model_dir: Path | None, prompt_semantics: str) -> None:
        from medsam3_export.tokenizer_files import checkpoint_tokenizer

        from .evaluate import TorchPredictor

        tok, _ = checkpoint_tokenizer(model_dir if model_dir is not None and model_dir.is_dir() else None)
        self.predictor = TorchPredictor(detector, tok, prompt_semantics=prompt_semantics)
        self.fallbacks = 0
        self.prompts = 0

    def __call__(self, clip: Clip, truth: torch.Tensor) -> torch.Tensor:
        self.prompts += 1
        mask = self.predictor.predict(clip.frames[0], [clip.concept]).masks[0]
        if not mask.any():
            self.fallbacks += 1
            return truth
        t = torch.from_numpy(mask.astype(np.float32))[None, None]
        return (torch.nn.functional.interpolate(t, size=truth.shape[-2:], mode="area") > 0.5).float()


def first_mask(clip: Clip, masks: torch.Tensor, prompt: DetectorPrompt | None) -> torch.Tensor:
    """(1, 1, m, m) prompt of frame 0: the ground truth, or the detector's mask."""
    return masks[:1] if prompt is None else prompt(clip, masks[:1].cpu()).to(masks.device)


def validate(
    model: TrackerTrainingModel, clips: list[Clip], weights: TrackerLossWeights | None = None, prompt: DetectorPrompt | None = None
) -> dict[str, Any]:
    """Propagation Dice (%) per concept (mean over its clips) and overall, from ground-truth first frames, and the mean loss."""
    per: dict[str, list[float]] = {}
    losses = []
    fallbacks = prompt.fallbacks if prompt is not None else 0
    model.eval()
    dev = model.device
    with torch.no_grad():
        for clip in clips:
            px, mk = (x.to(dev) for x in clip_tensors(clip, model.image_size, model.low_res_size()))
            out = model(px, first_mask(clip, mk, prompt)).object(0)
            per.setdefault(clip.concept, []).append(propagation_dice(out, mk)[0])
            losses.append(float(clip_loss(out, mk, weights)[0]))
    model.train()
    concepts = {k: float(np.mean(v)) for k, v in sorted(per.items())}
    mean_dice = float(np.mean(list(concepts.values()))) if concepts else 0.0
    summary = {"dice": mean_dice, "loss": float(np.mean(losses)) if losses else 0.0, "concepts": concepts, "clips": len(clips)}
    if prompt is not None:  # clips the detector found nothing on (prompted with the truth instead)
        summary["truth_prompted"] = prompt.fallbacks - fallbacks
    return summary


def train_tracker(cfg: TrackerTrainConfig, *, resume: bool = False) -> TrackerTrainResult:
    """Train the tracker of `cfg.model` (a Sam3VideoModel) on the configured clips."""
    t0 = time.perf_counter()
    out = Path(cfg.output_dir)
    last, best_dir = out / "last", out / "best"
    if out.exists() and any(out.iterdir()) and not resume:
        raise InputError(f"output_dir {out} is not empty; pass --resume to continue its run or choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    clips = load_clips(cfg)
    train_clips, val_clips = split_clips(clips, cfg.data.val_fraction, cfg.data.split_seed)
    if cfg.train.val_max_clips is not None:
        val_clips = val_clips[: cfg.train.val_max_clips]
    (out / "split.json").write_text(json.dumps({"train": [c.name for c in train_clips], "val": [c.name for c in val_clips]}, indent=1))

    ckpt = load_model(cfg.model if not resume else _resume_model(cfg, last))
    if ckpt.video is None:
        raise InputError("tracker training needs a video checkpoint (Sam3VideoModel: detector + tracker); this one is detector-only")
    for p in ckpt.video.parameters():
        p.requires_grad_(False)
    params = trainable_parameters(ckpt.video)
    for p in params:
        p.requires_grad_(True)
    device = resolve_device(cfg.train.device)
    model = TrackerTrainingModel(ckpt.video).to(device)
    model.train()
    ckpt.video.detector_model.eval()
    t = cfg.train
    optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, t.warmup_steps, max(t.steps, 1)))
    weights = TrackerLossWeights(focal=t.focal, dice=t.dice, iou=t.iou, object_score=t.object_score)
    prompt = None
    src = Path(cfg.model.checkpoint) if cfg.model.checkpoint else None
    tokenizer_dir = src if src is not None and src.is_dir() and any((src / f).is_file() for f in ("tokenizer.json", "vocab.json")) else None
    if cfg.clip.prompt == "detector":
        prompt = DetectorPrompt(ckpt.video.detector_model, src, cfg.model.prompt_semantics)

    step, history, best = 0, [], -1.0
    torch.manual_seed(t.seed)
    if resume:
        state = read_trainer_state(last)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        step, history, best = int(state["step"]), list(state["history"]), float(state["best"])
    if not history:
        history.append({"step": 0, **validate(model, val_clips, weights, prompt)})
    initial = history[0]["dice"]
    groups = group_clips(train_clips, cfg.clip.objects)  # one clip per group when clip.objects is 1
    rng = np.random.default_rng(t.seed)  # epoch after epoch, a fresh permutation of the groups
    order = np.concatenate([rng.permutation(len(groups)) for _ in range(t.steps // len(groups) + 1)])
    csv_path = out / "metrics.csv"
    new_csv = not csv_path.exists() or not resume
    losses: list[float] = []
    first_loss = float("nan")
    with csv_path.open("w" if new_csv else "a", newline="") as fh:
        writer = csv.writer(fh)
        if new_csv:
            writer.writerow(["step", "loss", "focal", "dice", "iou", "object_score", "lr", "seconds"])
        while step < t.steps:
            loss, stats = _group_loss(model, groups[int(order[step])], device, weights, prompt)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(float(loss.detach()))
            if step == 1:
                first_loss = losses[0]
            if step % t.log_every == 0 or step == t.steps:
                writer.writerow(
                    [
                        step,
                        f"{np.mean(losses[-t.log_every :]):.5f}",
                        *(f"{stats[k]:.5f}" for k in ("focal", "dice", "iou", "object_score")),
                        f"{scheduler.get_last_lr()[0]:.3g}",
                        f"{time.perf_counter() - t0:.1f}",
                    ]
                )
                fh.flush()
            out_of_time = t.max_seconds is not None and time.perf_counter() - t0 >= t.max_seconds
            if step % t.validate_every == 0 or step == t.steps or out_of_time:
                summary = validate(model, val_clips, weights, prompt)
                history.append({"step": step, **summary})
                with (out / "validation.jsonl").open("a") as vf:
                    vf.write(json.dumps({"step": step, **summary}) + "\n")
                info = {"recipe": "tracker", "step": step, "validation": summary, "config": asdict(cfg)}
                if summary["dice"] > best:
                    best = summary["dice"]
                    save_checkpoint(best_dir, ckpt, info=info, tokenizer_dir=tokenizer_dir)
                state = {
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": rng_state(),
                    "step": step,
                    "history": history,
                    "best": best,
                }
                save_checkpoint(last, ckpt, info=info, tokenizer_dir=tokenizer_dir, trainer_state=state)
            if out_of_time:
                log.warning("train.max_seconds reached after %d of %d steps; --resume continues the run", step, t.steps)
                break
    return TrackerTrainResult(
        str(out),
        step,
        first_loss,
        float(np.mean(losses[-t.log_every :])) if losses else float("nan"),
        best,
        initial,
        history,
        time.perf_counter() - t0,
    )


def _group_loss(
    model: TrackerTrainingModel, group: list[Clip], device: torch.device, weights: TrackerLossWeights, prompt: DetectorPrompt | None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean clip loss of a group's objects, propagated together over their shared frames."""
    px = clip_tensors(group[0], model.image_size, model.low_res_size())[0].to(device)  # the group's shared frames
    masks = [clip_masks(c, model.low_res_size()).to(device) for c in group]
    out = model(px, torch.cat([first_mask(c, mk, prompt) for c, mk in zip(group, masks, strict=True)]))
    per = [clip_loss(out.object(i), mk, weights) for i, mk in enumerate(masks)]
    loss = torch.stack([x for x, _ in per]).mean()
    stats = {k: float(np.mean([s[k] for _, s in per])) for k in per[0][1]}
    return loss, stats


def resolve_device(name: str) -> torch.device:
    """cpu, cuda, cuda:N, or auto (cuda when torch sees one); a missing GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"train.device {name}: torch sees no CUDA device here (use cpu or auto)")
    return torch.device(name)


def _resume_model(cfg: TrackerTrainConfig, last: Path):
    """The model block pointing at last/ (the run's own weights), for --resume."""
    import dataclasses

    if not (last / TRAINER_STATE).is_file():
        raise InputError(f"{last} has no {TRAINER_STATE}; nothing to resume")
    return dataclasses.replace(cfg.model, checkpoint=str(last), random=None)
