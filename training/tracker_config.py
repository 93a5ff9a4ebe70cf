"""The tracker recipe's typed config (YAML like the image recipe's, validated by the same builder).

output_dir: runs/brain-tracker
model: {checkpoint: runs/brain/best}          # a Sam3VideoModel (detector + tracker)
data:
  volumes:
    - {image: ch2bet.nii.gz, label: aal.nii.gz, labels: {71: caudate, 72: caudate}, axes: [axial]}
  videos:
    - {frames: clip1/frames, masks: clip1/masks, labels: {1: polyp}}
clip: {length: 8, stride: 4}
train: {steps: 2000, lr: 1e-4}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ConfigError, ModelConfig, build, read_config_mapping


@dataclass(frozen=True)
class HeldoutBlocks:
    """Hold out what an image run held out, so a detector and its tracker share one validation set.

    The image recipe splits a volume's slices in blocks of `block` neighbours per axis, groups
    named `<volume_key>:<axis>:<block index>`; with this set, a clip whose frames all lie in
    validation blocks is a validation clip, one whose frames all lie in training blocks trains,
    and a clip straddling both is dropped (it would train on held-out slices).
    """

    split_file: str  # the image run's split.json
    dataset: str  # the dataset's name in it
    volume_key: str  # this volume's group prefix there (the mricron layout: its dataset name; nifti: the case)
    block: int = 10  # the image run's split_block

    def __post_init__(self) -> None:
        if self.block < 1:
            raise ConfigError(f"heldout.block must be >= 1, got {self.block}")


@dataclass(frozen=True)
class VolumeSpec:
    """An image NIfTI and its label NIfTI on the same grid (labels: mask value -> concept)."""

    image: str
    label: str
    labels: dict[int, str]
    axes: tuple[str, ...] = ("axial",)
    slice_step: int = 1  # every n-th slice (a coarser grid is a harder, faster clip)
    window: tuple[float, float] | None = None
    heldout: HeldoutBlocks | None = None  # split like an image run (else: the clip split below)


@dataclass(frozen=True)
class VideoSpec:
    """Frame images (sorted by name) and label-map masks with the same stems."""

    frames: str
    masks: str
    labels: dict[int, str]


@dataclass(frozen=True)
class TrackerDataConfig:
    volumes: tuple[VolumeSpec, ...] = ()
    videos: tuple[VideoSpec, ...] = ()
    val_fraction: float = 0.15  # split by groups of neighbouring clips, as the image recipe
    split_seed: int = 42


@dataclass(frozen=True)
class ClipConfig:
    length: int = 8  # frames per clip: 1 prompted + length-1 tracked (SAM2 trains with 8)
    stride: int = 4  # start a clip every n frames
    split_block: int = 16  # start positions per split group (>= length: no frame on both sides)
    min_pixels: int = 50  # the first frame's mask must have this many pixels (it is the prompt)
    # truth: frame 0 is prompted with its ground-truth mask; detector: with the frozen detector's
    # top-1 mask for the concept's text (as a streamed video starts), the truth where it finds nothing
    prompt: str = "truth"
    # objects tracked together per training step: the concepts of one clip position share its
    # frames (and the frozen ViT's features), so a step propagates up to this many of them side
    # by side, as the runtime batches a frame's objects (1: one concept per step)
    objects: int = 1

    def __post_init__(self) -> None:
        if self.objects < 1:
            raise ConfigError(f"clip.objects must be >= 1, got {self.objects}")
        if self.prompt not in ("truth", "detector"):
            raise ConfigError(f"clip.prompt must be truth or detector, got {self.prompt!r}")
        if self.length < 2:
            raise ConfigError(f"clip.length must be >= 2 (a prompted frame and a tracked one), got {self.length}")
        if self.stride < 1:
            raise ConfigError(f"clip.stride must be >= 1, got {self.stride}")


@dataclass(frozen=True)
class TrackerLoopConfig:
    steps: int = 2000  # optimizer steps, one clip each
    lr: float = 1e-4
    weight_decay: float = 0.1
    grad_clip: float = 0.1
    warmup_steps: int = 100
    seed: int = 0
    log_every: int = 10
    validate_every: int = 100  # steps between validations (and saves of last/)
    val_max_clips: int | None = None
    focal: float = 20.0
    dice: float = 1.0
    iou: float = 1.0
    object_score: float = 1.0
    device: str = "cpu"  # cpu, cuda (cuda:N) or auto (cuda when available)
    # stop after this many seconds of the run (validated and saved there; --resume continues):
    # for a fixed slot on a borrowed accelerator
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "log_every", "validate_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if not (self.device in ("cpu", "cuda", "auto") or self.device.startswith("cuda:")):
            raise ConfigError(f"train.device must be cpu, cuda, cuda:N or auto, got {self.device!r}")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ConfigError(f"train.max_seconds must be > 0, got {self.max_seconds}")


@dataclass(frozen=True)
class TrackerTrainConfig:
    model: ModelConfig  # a Sam3VideoModel checkpoint, or model.random with video: true
    output_dir: str = "runs/tracker"
    data: TrackerDataConfig = field(default_factory=TrackerDataConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    train: TrackerLoopConfig = field(default_factory=TrackerLoopConfig)


def _resolve_paths(cfg: TrackerTrainConfig, base: Path) -> TrackerTrainConfig:
    import dataclasses

    def r(p: str) -> str:
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else base / q)

    def held(h: HeldoutBlocks | None) -> HeldoutBlocks | None:
        return None if h is None else dataclasses.replace(h, split_file=r(h.split_file))

    vols = tuple(dataclasses.replace(v, image=r(v.image), label=r(v.label), heldout=held(v.heldout)) for v in cfg.data.volumes)
    vids = tuple(dataclasses.replace(v, frames=r(v.frames), masks=r(v.masks)) for v in cfg.data.videos)
    return dataclasses.replace(cfg, output_dir=r(cfg.output_dir), data=dataclasses.replace(cfg.data, volumes=vols, videos=vids))


def tracker_config(data: dict[str, Any], base_dir: str | Path | None = None) -> TrackerTrainConfig:
    """A `TrackerTrainConfig` from plain data; relative paths are relative to `base_dir`."""
    if not isinstance(data, dict):
        raise ConfigError(f"a tracker training config is a mapping at the top level, got {type(data).__name__}")
    cfg = build(TrackerTrainConfig, data, "", base_dir)
    return _resolve_paths(cfg, Path(base_dir)) if base_dir is not None else cfg


def load_tracker_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrackerTrainConfig:
    """Read a YAML tracker config; `overrides` ({"train.steps": 10}) replace single keys."""
    return tracker_config(read_config_mapping(path, overrides, "tracker training"), Path(path).resolve().parent)
