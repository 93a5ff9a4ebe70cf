"""The fine-tuning loop: data -> SAM3 -> set-prediction loss -> AdamW, with DDP, checkpoints, logs.

`train(cfg)` runs a whole job in this process; under `torchrun` every process runs it and
DDP keeps the replicas in step (gradients averaged each optimizer step, loss normalisers
averaged over processes). Per optimizer step: `grad_accum` micro-batches of `batch_size`
triplets per process, optional bf16 autocast, gradient clipping, AdamW, the LR schedule.
Per epoch: validation with the paper's protocol on every dataset's held-out samples
(`evaluate.py`), `last/` saved with the full trainer state, `best/` when the mean validation
Dice improved. `--resume` restores the model, optimizer, scheduler, RNG states and the
position in the epoch, so the resumed run takes the same steps as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsam3_rt.errors import CheckpointError, OutputExistsError, PromptError
from medsam3_rt.io.atomic import atomic_write_text
from medsam3_rt.tokenizer import normalize_prompt

from . import distributed as D
from .checkpoints import read_info, read_trainer_state, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from .data.dataset import DataBundle, TripletDataset, collate, prepare_data
from .data.split import SPLIT_FILE
from .evaluate import TorchPredictor, evaluate, json_safe
from .losses import Normalizers, SetCriterion
from .model import TrainingModel, enable_gradient_checkpointing, image_size, load_model, mask_size, num_queries
from .optim import build_optimizer, build_scheduler, describe_groups

log = logging.getLogger(__name__)

CONTEXT_LENGTH = 32
LAST, BEST = "last", "best"
METRICS_CSV = "metrics.csv"
VALIDATION_LOG = "validation.jsonl"


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No transformers progress bars ("Loading weights", "Writing model shards"): the CLI draws its own."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


class Progress:
    """What the loop reports; the CLI draws it (the library never prints)."""

    def start(self, info: dict[str, Any]) -> None:
        log.info("training: %s", info)

    def epoch(self, epoch: int, epochs: int, batches: int, start_batch: int) -> None:
        log.info("epoch %d/%d: %d batches", epoch + 1, epochs, batches)

    def step(self, batch: int, stats: dict[str, float]) -> None:
        pass

    def validation(self, epoch: int, summary: dict[str, Any], best: bool) -> None:
        log.info("epoch %d validation: %s%s", epoch + 1, summary, " (best)" if best else "")

    def message(self, text: str) -> None:
        log.info(text)

    def end(self, result: TrainResult) -> None:
        pass


@dataclass
class TrainResult:
    output_dir: Path
    last_dir: Path
    best_dir: Path | None
    best_dice: float | None
    steps: int
    epochs_done: int
    history: list[dict[str, Any]] = field(default_factory=list)
    model: Any = None  # medsam3_export.LoadedCheckpoint, this process's replica
    seconds: float = 0.0


def concept_tokens(tokenizer: Any, concepts: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Token ids and attention mask (CONTEXT_LENGTH,) per concept, as the runtime encodes prompts."""
    out = {}
    for concept in dict.fromkeys(concepts):
        enc = tokenizer([normalize_prompt(concept)], padding="max_length", max_length=CONTEXT_LENGTH)
        ids, mask = enc["input_ids"][0], enc["attention_mask"][0]
        if len(ids) > CONTEXT_LENGTH:
            raise PromptError(
                f"concept {concept!r} is {len(ids)} CLIP tokens; SAM3 reads at most {CONTEXT_LENGTH}: shorten it in the dictionary"
            )
        out[concept] = (np.asarray(ids, np.int64), np.asarray(mask, np.int64))
    return out


class EpochSampler(torch.utils.data.Sampler[int]):
    """This process's share of a seeded permutation per epoch, optionally skipping done batches.

    Shards have equal length (the permutation wraps around), so every DDP process runs the
    same number of batches.
    """

    def __init__(self, n: int, rank: int, world: int, seed: int, batch_size: int) -> None:
        self.n, self.rank, self.world, self.seed, self.batch_size = n, rank, world, seed, batch_size
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip = epoch, skip_batches

    def shard(self) -> list[int]:
        perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n).tolist()
        per_rank = math.ceil(self.n / self.world)
        perm += perm[: per_rank * self.world - self.n]
        return perm[self.rank :: self.world]

    def batches(self) -> int:
        return math.ceil(math.ceil(self.n / self.world) / self.batch_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.shard()[self.skip * self.batch_size :])

    def __len__(self) -> int:
        return max(0, math.ceil(self.n / self.world) - self.skip * self.batch_size)


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


class CsvLog:
    def __init__(self, path: Path, append: bool) -> None:
        self.path = path
        self.fields: list[str] | None = None
        if append and path.is_file():
            with open(path, newline="") as f:
                header = next(csv.reader(f), None)
            self.fields = header

    def write(self, row: dict[str, Any]) -> None:
        if self.fields is None:
            self.fields = list(row)
            with open(self.path, "w", newline="") as f:
                csv.DictWriter(f, self.fields).writeheader()
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow(row)


class Trainer:
    def __init__(self, cfg: TrainConfig, *, resume: bool = False, progress: Progress | None = None) -> None:
        self.cfg = cfg
        self.resume = resume
        self.progress = progress or Progress()
        self.out = Path(cfg.output_dir)

    # ---- set-up -------------------------------------------------------------------------------
    def _check_output(self) -> None:
        last = self.out / LAST
        if self.resume:
            if not last.is_dir():
                raise CheckpointError(f"--resume: '{last}' does not exist; start the run without --resume")
        elif self.out.exists() and any(self.out.iterdir()):
            raise OutputExistsError(f"output_dir '{self.out}' is not empty; pass --resume to continue its run or choose another output_dir")

    def _tokenizer(self, model_dir: Path | None) -> tuple[Any, Path | None]:
        from medsam3_export.tokenizer_files import checkpoint_tokenizer

        tok, _ = checkpoint_tokenizer(model_dir if model_dir is not None and model_dir.is_dir() else None)
        has_files = (
            model_dir is not None and model_dir.is_dir() and any((model_dir / f).is_file() for f in ("tokenizer.json", "vocab.json"))
        )
        return tok, (model_dir if has_files else None)

    def run(self) -> TrainResult:
        cfg = self.cfg
        t_start = time.perf_counter()
        dist = D.setup(cfg.train.device)
        try:
            with quiet_transformers():
                return self._run(dist, t_start)
        finally:
            D.teardown(dist)

    def _run(self, dist: D.DistInfo, t_start: float) -> TrainResult:
        cfg = self.cfg
        if dist.main:
            self._check_output()
        D.barrier(dist)
        self.out.mkdir(parents=True, exist_ok=True)
        last_dir, best_dir = self.out / LAST, self.out / BEST

        data = prepare_data(cfg.data, saved_split=self.out / SPLIT_FILE)
        if dist.main:
            data.save_split(self.out / SPLIT_FILE)
            atomic_write_text(self.out / "config.yaml", _yaml(cfg.to_dict()))

        # model (the source, or last/ when resuming) and its tokenizer
        if self.resume:
            from medsam3_export import load_checkpoint

            model = load_checkpoint(last_dir)
            source_dir = last_dir
        else:
            model = load_model(cfg.model)
            source_dir = Path(cfg.model.checkpoint) if cfg.model.checkpoint else None
        tokenizer, tokenizer_dir = self._tokenizer(source_dir)
        detector = model.detector
        tokens = concept_tokens(tokenizer, [c for s in data.sources for c in s.concepts])

        torch.manual_seed(cfg.train.seed * 1009 + dist.rank)  # dropout differs per process, reproducibly
        detector.to(dist.device).train()
        if model.video is not None:
            model.video.to(dist.device)
        checkpointed = enable_gradient_checkpointing(detector) if cfg.train.gradient_checkpointing else 0
        wrapper: torch.nn.Module = TrainingModel(detector, o2m=cfg.loss.o2m.enabled, prompt_semantics=cfg.model.prompt_semantics)
        if dist.distributed:
            wrapper = torch.nn.parallel.DistributedDataParallel(
                wrapper, device_ids=[dist.device.index] if dist.device.type == "cuda" else None, find_unused_parameters=True
            )
        optimizer = build_optimizer(detector, cfg.optim)
        scheduler = build_scheduler(optimizer, cfg.optim)
        criterion = SetCriterion(cfg.loss)

        start_epoch, start_batch, step, best, history = 0, 0, 0, None, []
        if self.resume:
            state = read_trainer_state(last_dir)
            if state.get("world") != dist.world:
                raise CheckpointError(
                    f"{last_dir} was saved by {state.get('world')} process(es); resume with the same number (now {dist.world})"
                )
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start_epoch, start_batch, step = state["epoch"], state["batch"], state["step"]
            best, history = state.get("best"), list(state.get("history", []))
            set_rng_state(state["rng"][dist.rank])

        dataset = TripletDataset(
            data.sources,
            data.train,
            tokens,
            image_size=image_size(detector),
            mask_size=mask_size(detector),
            num_queries=num_queries(detector),
            augment_cfg=cfg.data.augment if cfg.data.augment.enabled else None,
            seed=cfg.train.seed,
        )
        sampler = EpochSampler(len(dataset), dist.rank, dist.world, cfg.train.seed, cfg.train.batch_size)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=cfg.train.batch_size,
            sampler=sampler,
            num_workers=cfg.data.num_workers,
            collate_fn=functools.partial(collate, num_queries=num_queries(detector)),
            pin_memory=dist.device.type == "cuda",
            # its own generator: starting an epoch's iterator must not draw from the global RNG
            # (dropout's), or a resumed run would diverge from an uninterrupted one
            generator=torch.Generator().manual_seed(cfg.train.seed),
        )
        amp = _autocast_dtype(cfg.train.precision, dist.device)
        csv_log = CsvLog(self.out / METRICS_CSV, append=self.resume) if dist.main else None
        tb = self._tensorboard() if dist.main and cfg.train.tensorboard else None
        if dist.main:
            self.progress.start(
                {
                    "output_dir": str(self.out),
                    "device": str(dist.device),
                    "processes": dist.world,
                    "precision": "bf16 autocast" if amp is not None else "fp32",
                    "gradient_checkpointing_layers": checkpointed,
                    "image_size": image_size(detector),
                    "parameters": sum(p.numel() for p in detector.parameters()),
                    "datasets": data.stats,
                    "train_triplets": len(dataset),
                    "optimizer_groups": describe_groups(optimizer),
                    "resumed_at": {"epoch": start_epoch, "batch": start_batch, "step": step} if self.resume else None,
                }
            )

        accum = cfg.train.grad_accum
        done = cfg.train.max_steps is not None and step >= cfg.train.max_steps
        epoch = start_epoch
        window: list[dict[str, float]] = []
        t_window = time.perf_counter()
        while epoch < cfg.train.epochs and not done:
            skip = start_batch if epoch == start_epoch else 0
            dataset.set_epoch(epoch)
            sampler.set_epoch(epoch, skip)
            batches = sampler.batches()
            if dist.main:
                self.progress.epoch(epoch, cfg.train.epochs, batches, skip)
            optimizer.zero_grad(set_to_none=True)
            b = skip
            for b, batch in enumerate(loader, start=skip):
                batch = batch.to(dist.device)
                boundary = (b + 1) % accum == 0 or b + 1 == batches
                sync = nullcontext() if (boundary or not dist.distributed) else wrapper.no_sync()
                with sync:
                    with torch.autocast(dist.device.type, dtype=amp) if amp is not None else nullcontext():
                        out = wrapper(batch.pixel_values, batch.input_ids, batch.attention_mask)
                    local = Normalizers.local(batch.targets)
                    inst, pos = D.mean_over_ranks([float(batch.targets.counts.sum()), float((batch.targets.counts > 0).sum())], dist)
                    norm = Normalizers(max(inst, 1.0), max(pos, 1.0)) if dist.distributed else local
                    loss, parts = criterion(out, batch.targets, norm)
                    (loss / accum).backward()
                window.append(parts)
                if not boundary:
                    continue
                grad_norm = self._clip(detector)
                if math.isfinite(loss.item()) and math.isfinite(grad_norm):
                    optimizer.step()
                else:
                    log.warning(
                        "non-finite loss or gradient at step %d (loss %s, grad norm %s): update skipped", step, loss.item(), grad_norm
                    )
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                stats = {k: float(np.mean([w[k] for w in window if k in w])) for k in window[-1]}
                stats["grad_norm"] = grad_norm
                if dist.main:
                    self.progress.step(b + 1, {**stats, "step": step, "lr": optimizer.param_groups[0]["lr"]})
                if step % cfg.train.log_every == 0 and dist.main:
                    self._log_row(csv_log, tb, step, epoch, b + 1, stats, optimizer, time.perf_counter() - t_window)
                    t_window = time.perf_counter()
                if step % cfg.train.log_every == 0:
                    window = []
                done = cfg.train.max_steps is not None and step >= cfg.train.max_steps
                if done or (cfg.train.save_every and step % cfg.train.save_every == 0 and b + 1 < batches):
                    self._save_last(dist, model, optimizer, scheduler, epoch, b + 1, step, best, history, tokenizer_dir)
                if done:
                    break
            epoch_finished = not done or b + 1 >= batches
            if epoch_finished:
                epoch += 1
            validate = (epoch_finished and (epoch % cfg.train.validate_every == 0 or epoch == cfg.train.epochs)) or done
            if validate:
                summary = self._validate(dist, detector, tokenizer, data)
                improved = False
                if dist.main and summary is not None:
                    dice = summary["mean"]["dice"]
                    improved = not math.isnan(dice) and (best is None or dice > best["dice"])
                    entry = {"epoch": epoch if epoch_finished else epoch + (b + 1) / batches, "step": step, **summary}
                    history.append(entry)
                    with open(self.out / VALIDATION_LOG, "a") as f:
                        f.write(json.dumps(json_safe(entry), allow_nan=False) + "\n")
                    if improved:
                        best = {"dice": dice, "iou": summary["mean"]["iou"], "epoch": entry["epoch"], "step": step}
                        info = {
                            "epoch": entry["epoch"],
                            "step": step,
                            "validation": summary,
                            "source": model.source,
                            "prompt_semantics": cfg.model.prompt_semantics,
                        }
                        save_checkpoint(best_dir, model, info=info, split_json=self.out / SPLIT_FILE, tokenizer_dir=tokenizer_dir)
                    self.progress.validation(epoch - 1 if epoch_finished else epoch, summary, improved)
                    if tb is not None:
                        for ds, d in summary["datasets"].items():
                            tb.add_scalar(f"val/{ds}/dice", d["dice"], step)
                            tb.add_scalar(f"val/{ds}/iou", d["iou"], step)
                best = D.broadcast_object(best, dist)
            if epoch_finished or done:
                self._save_last(
                    dist, model, optimizer, scheduler, epoch, 0 if epoch_finished else b + 1, step, best, history, tokenizer_dir
                )
        if tb is not None:
            tb.close()
        D.barrier(dist)
        result = TrainResult(
            output_dir=self.out,
            last_dir=last_dir,
            best_dir=best_dir if best_dir.is_dir() else None,
            best_dice=best["dice"] if best else None,
            steps=step,
            epochs_done=epoch,
            history=history,
            model=model,
            seconds=time.perf_counter() - t_start,
        )
        if dist.main:
            self.progress.end(result)
        return result

    # ---- pieces -------------------------------------------------------------------------------
    def _clip(self, detector: torch.nn.Module) -> float:
        params = [p for p in detector.parameters() if p.grad is not None]
        if self.cfg.optim.grad_clip > 0:
            return float(torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip))
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))) if params else 0.0

    def _validate(self, dist: D.DistInfo, detector: torch.nn.Module, tokenizer: Any, data: DataBundle) -> dict[str, Any] | None:
        """Rank 0 evaluates every dataset's validation samples; the others wait."""
        summary = None
        if dist.main and any(data.val.values()):
            predictor = TorchPredictor(
                detector, tokenizer, dist.device, context_length=CONTEXT_LENGTH, prompt_semantics=self.cfg.model.prompt_semantics
            )
            report = evaluate(data.sources, data.val, [predictor], max_images=self.cfg.train.val_max_images)
            p = report["predictors"][predictor.name]
            summary = {
                "mean": p["mean"],
                "datasets": {ds: {k: d[k] for k in ("dice", "iou", "n")} for ds, d in p["datasets"].items()},
                "concepts": {ds: {c: s["dice"] for c, s in d["concepts"].items()} for ds, d in p["datasets"].items()},
            }
        elif dist.main:
            self.progress.message("no validation samples (every dataset has a single split group); best/ is not kept")
        D.barrier(dist)
        return summary

    def _save_last(self, dist, model, optimizer, scheduler, epoch, batch, step, best, history, tokenizer_dir) -> None:
        rngs = [rng_state()]
        if dist.distributed:
            gathered: list[Any] = [None] * dist.world
            torch.distributed.all_gather_object(gathered, rngs[0])
            rngs = gathered
        if dist.main:
            state = {
                "epoch": epoch,
                "batch": batch,
                "step": step,
                "best": best,
                "history": history,
                "world": dist.world,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rngs,
            }
            info = {
                "epoch": epoch,
                "batch": batch,
                "step": step,
                "best": best,
                "source": model.source,
                "prompt_semantics": self.cfg.model.prompt_semantics,
            }
            save_checkpoint(
                self.out / LAST, model, info=info, split_json=self.out / SPLIT_FILE, tokenizer_dir=tokenizer_dir, trainer_state=state
            )
        D.barrier(dist)

    def _log_row(self, csv_log, tb, step, epoch, batch, stats, optimizer, seconds) -> None:
        row: dict[str, Any] = {"step": step, "epoch": epoch, "batch": batch}
        row.update({k: round(v, 6) for k, v in stats.items()})
        lrs = {}
        for g in optimizer.param_groups:
            comp = g["name"].split("/")[0]
            lrs[f"lr_{comp}"] = max(lrs.get(f"lr_{comp}", 0.0), g["lr"])
        row.update(lrs)
        row["sec_per_step"] = round(seconds / self.cfg.train.log_every, 4)
        if csv_log is not None:
            csv_log.write(row)
        if tb is not None:
            for k, v in row.items():
                if k not in ("step", "epoch", "batch"):
                    tb.add_scalar(f"train/{k}", v, step)

    def _tensorboard(self) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("train.tensorboard is on but the tensorboard package is not installed (pip install tensorboard); CSV only")
            return None
        return SummaryWriter(str(self.out / "tensorboard"))


def _yaml(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, width=120)


def train(cfg: TrainConfig, *, resume: bool = False, progress: Progress | None = None) -> TrainResult:
    """Run one training job (one process of it under torchrun)."""
    return Trainer(cfg, resume=resume, progress=progress).run()


def run_info(path: Path) -> dict[str, Any]:
    """training.json of a checkpoint folder (epoch, step, validation), or {}."""
    return read_info(path)
