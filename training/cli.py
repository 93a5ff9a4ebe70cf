"""Bodies of `medsam3-rt train` and `medsam3-rt eval` (declared in `medsam3_training.commands`).

Evaluating an export directory needs only the runtime: this module and the data code import
torch lazily, so `medsam3-rt eval model/ --data data/` works after a runtime-only install.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from rich.markup import escape

from medsam3_rt.cli.console import STATE, err_console, out_console
from medsam3_rt.cli.console import say as _say
from medsam3_rt.errors import OutputExistsError, UsageError

from .config import ConfigError, DatasetSpec, default_yaml, load_config, yaml_module


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`--set train.epochs=2` -> {"train.epochs": 2} (values parsed as YAML scalars/lists)."""
    yaml = yaml_module()

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set '{item}': expected KEY=VALUE, e.g. --set train.epochs=2")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise UsageError(f"--set '{item}': the value is not valid YAML") from None
    return out


def say(message: str) -> None:
    _say(escape(message))  # paths and dataset names may contain [brackets]


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


class RichProgress:
    """Progress bar per epoch and a validation table (rank 0 only)."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
        )
        self._progress_cls = Progress
        self.bar = None
        self.task = None

    def start(self, info: dict[str, Any]) -> None:
        say(
            f"training on {info['device']} ({info['processes']} process(es), {info['precision']}), image size {info['image_size']}, "
            f"{info['parameters'] / 1e6:.1f} M parameters, {info['train_triplets']} training triplets"
        )
        for name, s in info["datasets"].items():
            say(
                f"  {name}: {s['train_samples']} train / {s['val_samples']} val samples, "
                f"{s['positive_triplets']} positive + {s['negative_triplets']} negative triplets"
            )
        if info.get("resumed_at"):
            r = info["resumed_at"]
            say(f"resuming at epoch {r['epoch'] + 1}, batch {r['batch']}, step {r['step']}")

    def epoch(self, epoch: int, epochs: int, batches: int, start_batch: int) -> None:
        self._close()
        if STATE.quiet:
            return
        self.bar = self._progress_cls(*self._columns, console=err_console, transient=False)
        self.bar.start()
        self.task = self.bar.add_task(f"epoch {epoch + 1}/{epochs}", total=batches, completed=start_batch, stats="")

    def step(self, batch: int, stats: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=batch, stats=f"loss {stats['total']:.3f} lr {stats['lr']:.2e}")

    def validation(self, epoch: int, summary: dict[str, Any], best: bool) -> None:
        self._close()
        parts = ", ".join(f"{ds} Dice {100 * d['dice']:.1f} IoU {100 * d['iou']:.1f}" for ds, d in summary["datasets"].items())
        tail = " - best so far, saved best/" if best else ""
        say(f"validation after epoch {epoch + 1}: mean Dice {100 * summary['mean']['dice']:.1f} ({parts}){tail}")

    def message(self, text: str) -> None:
        say(text)

    def end(self, result: Any) -> None:
        self._close()
        best = (
            f"best validation Dice {100 * result.best_dice:.1f} in {result.best_dir}" if result.best_dice is not None else "no validation"
        )
        say(f"done: {result.steps} steps in {result.seconds:.0f} s; {best}; last state in {result.last_dir}")

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def train_command(
    config: str | None, *, resume: bool, output: str | None, overrides: list[str], print_config: bool, recipe: str = "image"
) -> None:
    if recipe not in ("image", "tracker"):
        raise UsageError(f"--recipe must be image or tracker, got {recipe!r}")
    if recipe == "tracker":
        return _train_tracker(config, resume=resume, output=output, overrides=overrides, print_config=print_config)
    if print_config:
        out_console.print(default_yaml(), end="", highlight=False, markup=False, soft_wrap=True)
        return
    if config is None:
        raise UsageError("give the run's YAML with --config (see `medsam3-rt train --print-config` for every key and its default)")
    sets = parse_overrides(overrides)
    if output is not None:
        sets["output_dir"] = str(Path(output).resolve())
    cfg = load_config(config, sets)
    from .trainer import Progress, train

    progress = RichProgress() if _is_main_process() else Progress()
    train(cfg, resume=resume, progress=progress)  # type: ignore[arg-type]


def _train_tracker(config: str | None, *, resume: bool, output: str | None, overrides: list[str], print_config: bool) -> None:
    from dataclasses import asdict

    from .config import ModelConfig
    from .tracker_config import TrackerTrainConfig, load_tracker_config

    if print_config:
        example = TrackerTrainConfig(model=ModelConfig(checkpoint="checkpoints/sam3-video"))
        text = yaml_module().safe_dump(asdict(example), sort_keys=False)
        out_console.print(text, end="", highlight=False, markup=False, soft_wrap=True)
        return
    if config is None:
        raise UsageError("give the tracker run's YAML with --config (see `medsam3-rt train --recipe tracker --print-config`)")
    sets = parse_overrides(overrides)
    if output is not None:
        sets["output_dir"] = str(Path(output).resolve())
    cfg = load_tracker_config(config, sets)
    from .tracker_trainer import train_tracker

    r = train_tracker(cfg, resume=resume)
    say(
        f"done: {r.steps} steps in {r.seconds:.0f} s; loss {r.first_loss:.3f} -> {r.last_loss:.3f}; "
        f"held-out propagation Dice {r.initial_dice:.1f} -> best {r.best_dice:.1f} in {r.output_dir}/best"
    )


def _split_for(checkpoint: Path, config_output: Path | None) -> Path | None:
    for candidate in (checkpoint / "split.json", (config_output / "split.json") if config_output else None):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def eval_command(
    checkpoint: str,
    *,
    data: list[str],
    config: str | None,
    output: str,
    exported: str | None,
    split: str,
    backend: str,
    max_images: int | None,
    device: str,
    force: bool,
) -> None:
    from medsam3_rt.manifest import MANIFEST_NAME

    from .data.sources import open_source
    from .data.split import fingerprint, read_split
    from .evaluate import RuntimePredictor, evaluate, write_report

    ckpt = Path(checkpoint)
    if not ckpt.exists():
        raise UsageError(f"checkpoint '{ckpt}' does not exist")
    out = Path(output)
    if out.exists() and any(out.iterdir()) and not force:
        raise OutputExistsError(f"report folder '{out}' is not empty; choose another or pass --force to overwrite its report")
    if split not in ("auto", "val", "all"):
        raise UsageError(f"--split must be auto, val or all, got '{split}'")
    if bool(data) == bool(config):
        raise UsageError("give the evaluation data with --data DATASET_FOLDER (repeatable) or --config TRAIN_YAML, one of them")
    config_output = None
    if config:
        cfg = load_config(config)
        specs = list(cfg.data.datasets)
        config_output = Path(cfg.output_dir)
    else:
        specs = [DatasetSpec(path=d) for d in data]
    sources = [open_source(s) for s in specs]

    split_file = _split_for(ckpt if ckpt.is_dir() else ckpt.parent, config_output)
    saved = read_split(split_file) if split_file is not None else None
    refs, used = {}, {}
    for src in sources:
        index = src.index()
        entry = (saved or {}).get("datasets", {}).get(src.name)
        matches = entry is not None and entry.get("fingerprint") == fingerprint([r.group for r, _ in index])
        if split == "val" and not matches:
            raise ConfigError(
                f"--split val: no saved split for dataset '{src.name}' next to the checkpoint"
                + (f" ({split_file} was drawn for other data)" if entry is not None else "")
                + "; use --split all, or evaluate a checkpoint from the run that trained on it"
            )
        if matches and split != "all":
            val = set(entry["val"])
            refs[src.name] = [r for r, _ in index if r.group in val]
            used[src.name] = f"validation split ({split_file})"
        else:
            refs[src.name] = [r for r, _ in index]
            used[src.name] = "all samples"

    predictors: list[Any] = []
    closers = []
    try:
        if (ckpt / MANIFEST_NAME).is_file():
            p = RuntimePredictor(ckpt, backend, name="exported")
            predictors.append(p)
            closers.append(p)
        else:
            predictors.append(_torch_predictor(ckpt, device))
        if exported is not None:
            p = RuntimePredictor(exported, backend, name="exported" if predictors[0].name != "exported" else "exported-2")
            predictors.append(p)
            closers.append(p)
        progress = _eval_progress()
        try:
            report = evaluate(sources, refs, predictors, max_images=max_images, progress=progress.update if progress else None)
        finally:
            if progress:
                progress.stop()
    finally:
        for c in closers:
            c.close()
    report["checkpoint"] = str(ckpt)
    report["exported"] = exported
    report["samples"] = used
    j, m = write_report(report, out, title=f"Evaluation of {ckpt}")
    _print_summary(report)
    say(f"wrote {j} and {m}")


def _torch_predictor(ckpt: Path, device: str) -> Any:
    from medsam3_rt.cli.console import import_optional

    exp = import_optional("medsam3_export.checkpoint", "export", "evaluating a PyTorch checkpoint")
    from medsam3_export.tokenizer_files import checkpoint_tokenizer

    from .distributed import pick_device
    from .evaluate import TorchPredictor
    from .trainer import quiet_transformers

    with quiet_transformers():
        loaded = exp.load_checkpoint(ckpt)
    dev = pick_device(device, 0)
    loaded.detector.to(dev).eval()
    tokenizer, _ = checkpoint_tokenizer(ckpt if ckpt.is_dir() else None)
    return TorchPredictor(loaded.detector, tokenizer, dev, prompt_semantics=loaded.prompt_semantics)


class _EvalBar:
    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err_console)
        self.bar.start()
        self.tasks: dict[str, Any] = {}

    def update(self, dataset: str, done: int, total: int) -> None:
        if dataset not in self.tasks:
            self.tasks[dataset] = self.bar.add_task(f"eval {dataset}", total=total)
        self.bar.update(self.tasks[dataset], completed=done)

    def stop(self) -> None:
        self.bar.stop()


def _eval_progress() -> _EvalBar | None:
    return None if STATE.quiet else _EvalBar()


def _print_summary(report: dict[str, Any]) -> None:
    from rich.table import Table

    names = list(report["predictors"])
    table = Table(title="medsam3-rt eval (Dice / IoU %)")
    table.add_column("dataset")
    table.add_column("images", justify="right")
    for n in names:
        table.add_column(f"{n} Dice", justify="right")
        table.add_column(f"{n} IoU", justify="right")

    def f(x: float) -> str:
        return "n/a" if x is None or math.isnan(x) else f"{100 * x:.1f}"

    for ds in report["predictors"][names[0]]["datasets"]:
        row = [ds, str(report["images"].get(ds, 0))]
        for n in names:
            d = report["predictors"][n]["datasets"][ds]
            row += [f(d["dice"]), f(d["iou"])]
        table.add_row(*row)
    row = ["mean", ""]
    for n in names:
        row += [f(report["predictors"][n]["mean"]["dice"]), f(report["predictors"][n]["mean"]["iou"])]
    table.add_row(*row, style="bold")
    if not STATE.quiet:
        out_console.print(table)
    if "comparison" in report:
        c = report["comparison"]
        say(f"{c['candidate']} vs {c['reference']}: mean Dice delta {100 * c['dice_delta']:+.2f} points")
