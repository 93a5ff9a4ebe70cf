"""One typed configuration for a fine-tuning run, with the Medical SAM3 recipe as defaults.

Every number of the paper's recipe (Medical SAM3, arXiv 2601.10880, Sec. 3-4 and Table 2) is a
default here, each with its source; values the paper does not give are marked "not in the
paper" together with where the default comes from. A YAML file overrides any subset:

    model: {checkpoint: checkpoints/sam3}
    data: {datasets: [{path: data/Kvasir-SEG, layout: kvasir-seg}]}
    train: {epochs: 10, batch_size: 4}

Unknown keys, wrong types and impossible values are `ConfigError`s with a one-line message
that names the key (`train.batch_size must be >= 1, got 0`). Relative paths in a YAML file
are relative to that file's folder.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from medsam3_rt.errors import UsageError


class ConfigError(UsageError):
    """A training or evaluation configuration that cannot be used as written."""


Layout = Literal["auto", "folders", "kvasir-seg", "busi", "isic2018", "nifti", "mricron"]
InstanceMode = Literal["components", "semantic", "labels"]


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset folder of a run; several are mixed in one run (see docs/training.md).

    path        the dataset folder (for `mricron`: the folder holding ch2.nii.gz etc.)
    layout      how the folder is organised; `auto` reads `dataset.yaml` in it or recognises
                the public layouts (Kvasir-SEG, BUSI, ISIC 2018, nnU-Net style imagesTr/labelsTr)
    name        name used in reports (default: the folder name)
    labels      label-to-text dictionary: {label id: concept} or a JSON/YAML file with it
    concept     shortcut for single-class sets: every non-zero mask pixel is this one concept
    images      image sub-folder (layout `folders`/`nifti`)
    masks       mask sub-folder (layout `folders`/`nifti`)
    instances   how instances are formed: `components` (connected components of each label),
                `semantic` (the whole label is one instance), `labels` (mask values are
                instance ids of the single concept)
    axes        slicing axes of volumes: axial, coronal, sagittal
    slice_stride  every n-th slice of a volume
    split_block   slices per split group (neighbouring slices stay on one side of the split);
                0 keeps each volume whole
    window      intensity window (low, high) for volumes (e.g. CT in HU); default: per-volume
                0.5..99.5 percentiles
    min_area    instances smaller than this many pixels (original resolution) are dropped
    repeat      how often the dataset's triplets appear per epoch (oversample small sets)
    image_sources, concepts  `mricron` only: which images (ch2, ch2bet) and which concepts
    """

    path: str
    layout: Layout = "auto"
    name: str | None = None
    labels: dict[int, str] | str | None = None
    concept: str | None = None
    images: str | None = None
    masks: str | None = None
    instances: InstanceMode | None = None
    axes: tuple[str, ...] = ("axial",)
    slice_stride: int = 1
    split_block: int = 0
    window: tuple[float, float] | None = None
    min_area: int = 0
    repeat: int = 1
    image_sources: tuple[str, ...] = ("ch2",)
    concepts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for ax in self.axes:
            if ax not in ("axial", "coronal", "sagittal"):
                raise ConfigError(f"dataset {self.path}: axes entries must be axial, coronal or sagittal, got '{ax}'")
        _positive(f"dataset {self.path}: slice_stride", self.slice_stride)
        _positive(f"dataset {self.path}: repeat", self.repeat)
        if self.split_block < 0 or self.min_area < 0:
            raise ConfigError(f"dataset {self.path}: split_block and min_area must be >= 0")
        if self.window is not None and not self.window[0] < self.window[1]:
            raise ConfigError(f"dataset {self.path}: window must be (low, high) with low < high, got {list(self.window)}")
        if self.labels is not None and self.concept is not None:
            raise ConfigError(f"dataset {self.path}: give either labels (multi-class) or concept (single class), not both")


@dataclass(frozen=True)
class AugmentConfig:
    """Modest, label-preserving augmentation (the paper gives none; these keep it mild).

    Flips default to off: they swap left and right, which breaks laterality concepts
    ("left kidney"). Everything is drawn from an RNG seeded by (seed, epoch, sample), so a
    resumed run sees the same augmentations as an uninterrupted one.
    """

    enabled: bool = True
    scale: tuple[float, float] = (0.85, 1.0)  # area fraction of a random crop
    rotate_deg: float = 10.0
    brightness: float = 0.1
    contrast: float = 0.1
    gamma: tuple[float, float] = (0.9, 1.1)
    hflip: float = 0.0
    vflip: float = 0.0
    # Stronger variation, off by default; the bundled demo model (training/recipes/demo_brain.py)
    # turns them on so that a model trained on one subject holds up on other scans.
    zoom_out: float = 0.0  # pad each side by up to this fraction of the size (the anatomy appears smaller)
    aspect: float = 0.0  # stretch the width by a factor within exp(-aspect)..exp(aspect)
    blur: float = 0.0  # Gaussian blur of up to this sigma in pixels, on half of the samples
    noise: float = 0.0  # Gaussian noise of up to this std (fraction of the 0..255 range), on half of the samples
    bias_field: float = 0.0  # smooth multiplicative intensity ramp of up to +-this fraction across the image

    def __post_init__(self) -> None:
        for name in ("zoom_out", "aspect", "blur", "noise", "bias_field"):
            if getattr(self, name) < 0:
                raise ConfigError(f"data.augment.{name} must be >= 0, got {getattr(self, name)}")
        lo, hi = self.scale
        if not 0.1 <= lo <= hi <= 1.0:
            raise ConfigError(f"data.augment.scale must satisfy 0.1 <= low <= high <= 1, got {list(self.scale)}")
        if not 0 < self.gamma[0] <= self.gamma[1]:
            raise ConfigError(f"data.augment.gamma must satisfy 0 < low <= high, got {list(self.gamma)}")
        for name in ("hflip", "vflip"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"data.augment.{name} is a probability in 0..1, got {getattr(self, name)}")


@dataclass(frozen=True)
class DataConfig:
    datasets: tuple[DatasetSpec, ...] = ()
    val_fraction: float = 0.15  # paper Sec. 4.1: 85/15 split
    split_seed: int = 42  # paper Sec. 4.1
    split_file: str | None = None  # reuse a saved split.json instead of drawing one
    # Negative triplets (a concept absent from the image, empty target) per positive one. Not in
    # the paper; SAM3's presence token needs them to learn "absent".
    negatives: float = 0.25
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    num_workers: int = 2

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be within (0, 1), got {self.val_fraction}")
        if self.negatives < 0:
            raise ConfigError(f"data.negatives must be >= 0, got {self.negatives}")
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.num_workers}")


@dataclass(frozen=True)
class RandomModelConfig:
    """Train from a randomly initialised preset geometry (tests, the bundled demo model)."""

    preset: str = "tiny"
    overrides: dict[str, Any] = field(default_factory=dict)  # Preset fields, e.g. {image_size: 112}
    video: bool = False
    seed: int = 0
    init_std: float | None = None


@dataclass(frozen=True)
class ModelConfig:
    checkpoint: str | None = None  # Hugging Face SAM3 directory or sam3.pt
    config: str | None = None  # geometry of a sam3.pt (preset name or config.json)
    random: RandomModelConfig | None = None
    # Text-only prompt semantics of the forward pass: "meta" (Meta's sam3: the geometry encoder's
    # CLS token for the empty geometric prompt is appended to the text tokens) or "transformers"
    # (Sam3Model: text tokens only). Recorded in the checkpoints; export follows it.
    prompt_semantics: str = "meta"

    def __post_init__(self) -> None:
        if (self.checkpoint is None) == (self.random is None):
            raise ConfigError("model: give exactly one of model.checkpoint (a SAM3 checkpoint) or model.random (a preset geometry)")
        if self.prompt_semantics not in ("meta", "transformers"):
            raise ConfigError(f"model.prompt_semantics must be meta or transformers, got '{self.prompt_semantics}'")


@dataclass(frozen=True)
class MatcherConfig:
    """One-to-one binary Hungarian matcher (Table 2, "O2O matcher")."""

    cost_class: float = 2.0  # w_cls
    cost_bbox: float = 5.0  # w_box (L1 on cx, cy, w, h)
    cost_giou: float = 2.0  # w_giou
    alpha: float = 0.25  # focal cost alpha
    gamma: float = 2.0  # focal cost gamma
    stable: bool = False  # Table 2: "stable false"


@dataclass(frozen=True)
class O2MConfig:
    """One-to-many matcher and its loss weight (Table 2, "O2M matcher")."""

    enabled: bool = True
    topk: int = 4
    threshold: float = 0.4
    alpha: float = 0.3  # alpha_o2m: cost = alpha * p + (1 - alpha) * IoU
    weight: float = 2.0  # lambda_o2m

    def __post_init__(self) -> None:
        _positive("loss.o2m.topk", self.topk)


@dataclass(frozen=True)
class FindLossConfig:
    """L_find (Table 2)."""

    ce: float = 20.0  # lambda_ce
    presence: float = 20.0  # lambda_pr
    alpha: float = 0.25  # alpha_cls
    gamma: float = 2.0  # gamma_cls
    pos_weight: float = 10.0
    pad_queries: int = 200  # padded N_q: the classification term is a mean over this many query slots
    l1: float = 5.0  # lambda_l1
    giou: float = 2.0  # lambda_g
    # Not in Table 2 (it gives only lambda_pr): SAM3's presence-loss defaults.
    presence_alpha: float = 0.5
    presence_gamma: float = 0.0
    aux_layers: bool = True  # also supervise every intermediate DETR decoder layer (SAM3 does)


@dataclass(frozen=True)
class SegLossConfig:
    """L_seg (Table 2), applied to the matched instance masks and to the semantic map (docs/training.md)."""

    alpha: float = 0.6  # alpha_seg
    gamma: float = 2.0  # gamma_seg
    focal: float = 20.0  # lambda_f
    dice: float = 30.0  # lambda_d
    presence: float = 1.0  # lambda_sp
    instance: bool = True
    semantic: bool = True


@dataclass(frozen=True)
class LossConfig:
    matcher: MatcherConfig = field(default_factory=MatcherConfig)
    o2m: O2MConfig = field(default_factory=O2MConfig)
    find: FindLossConfig = field(default_factory=FindLossConfig)
    seg: SegLossConfig = field(default_factory=SegLossConfig)


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with group learning rates and layer-wise decay (paper Sec. 3.2 and 4.2)."""

    lr_decoder: float = 3e-4  # DETR encoder/decoder, segmentation head, dot-product scoring
    lr_vision: float = 5e-5  # vision backbone (ViT + FPN neck)
    lr_language: float = 5e-5  # language backbone (CLIP text encoder + projection)
    lr_geometry: float = 1e-4  # geometry (prompt) encoder
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    layer_decay: float = 0.85  # gamma of Eq. (1)
    layer_decay_levels: int = 12  # L of Eq. (1)
    # Not in the paper: SAM3's fine-tuning configs use weight decay 0.1 and gradient clipping 0.1.
    weight_decay: float = 0.1
    grad_clip: float = 0.1  # max global gradient norm; 0 disables
    # Linear warm-up then inverse-square-root decay (paper Sec. 4.2); the lengths are not in the paper.
    warmup_steps: int = 500
    decay_timescale: int = 500

    def __post_init__(self) -> None:
        for name in ("lr_decoder", "lr_vision", "lr_language", "lr_geometry"):
            if getattr(self, name) < 0:
                raise ConfigError(f"optim.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.layer_decay <= 1:
            raise ConfigError(f"optim.layer_decay must be within (0, 1], got {self.layer_decay}")
        _positive("optim.layer_decay_levels", self.layer_decay_levels)
        _positive("optim.decay_timescale", self.decay_timescale)
        if self.warmup_steps < 0:
            raise ConfigError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")


@dataclass(frozen=True)
class TrainLoopConfig:
    epochs: int = 10  # paper Sec. 4.2: up to 10 epochs, best internal-validation Dice kept
    max_steps: int | None = None  # stop after this many optimizer steps (smoke runs, tests)
    batch_size: int = 4  # triplets per process per micro-batch
    grad_accum: int = 1
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast on GPUs that support it
    gradient_checkpointing: bool = False
    device: str = "auto"  # auto: cuda:LOCAL_RANK when CUDA is available, else cpu
    seed: int = 0
    log_every: int = 10  # optimizer steps between CSV rows
    save_every: int = 0  # also save `last/` every n optimizer steps (0: at epoch ends only)
    validate_every: int = 1  # epochs between validations
    val_max_images: int | None = None  # cap validation images per dataset (quick runs)
    tensorboard: bool = False  # also write TensorBoard scalars (needs the tensorboard package)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum", "log_every", "validate_every"):
            _positive(f"train.{name}", getattr(self, name))
        if self.max_steps is not None:
            _positive("train.max_steps", self.max_steps)
        if self.save_every < 0:
            raise ConfigError(f"train.save_every must be >= 0, got {self.save_every}")


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig
    data: DataConfig
    output_dir: str = "runs/medsam3"
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        if not self.data.datasets:
            raise ConfigError("data.datasets is empty: list at least one dataset folder (see docs/training.md)")

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{name} must be >= 1, got {value}")


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


# ---- building dataclasses from plain YAML data, with one-line errors -------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str, base: Path | None) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, where, base)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where} must be {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping of {tp.__name__} fields, got {type(value).__name__}")
        return _build(tp, value, where, base)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]", base) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where} must be a list of {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, f"{where}[{i}]", base) for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        kt, vt = args
        return {_convert(k, kt, f"{where} key", base): _convert(v, vt, f"{where}[{k}]", base) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)  # YAML/JSON mapping keys such as "1"
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            return float(value)  # YAML reads 3e-4 as a string
        except ValueError:
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{where}: unsupported type {tp}")  # pragma: no cover - a bug in a dataclass


PATH_FIELDS = {("DatasetSpec", "path"), ("ModelConfig", "checkpoint"), ("TrainConfig", "output_dir"), ("DataConfig", "split_file")}


def _build(cls: type, data: dict[str, Any], where: str, base: Path | None) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        key = str(key)
        path = f"{where}.{key}" if where else key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(names)}"
            raise ConfigError(f"unknown key '{path}'{hint}")
        converted = _convert(value, hints[key], path, base)
        if base is not None and isinstance(converted, str) and (cls.__name__, key) in PATH_FIELDS:
            converted = _resolve(converted, base)
        kwargs[key] = converted
    if cls is DatasetSpec and base is not None and isinstance(kwargs.get("labels"), str):
        kwargs["labels"] = _resolve(kwargs["labels"], base)
    if cls is ModelConfig and base is not None and isinstance(kwargs.get("config"), str) and kwargs["config"].endswith(".json"):
        kwargs["config"] = _resolve(kwargs["config"], base)
    missing = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [m for m in missing if m not in kwargs]
    if missing:
        raise ConfigError(f"{where or 'config'} lacks the required key '{missing[0]}'")
    return cls(**kwargs)


def _resolve(value: str, base: Path) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p))


def from_dict(data: dict[str, Any], *, base_dir: str | Path | None = None) -> TrainConfig:
    """A `TrainConfig` from plain data (a parsed YAML file); paths relative to `base_dir`."""
    if not isinstance(data, dict):
        raise ConfigError(f"a training config is a mapping at the top level, got {type(data).__name__}")
    return _build(TrainConfig, data, "", Path(base_dir) if base_dir is not None else None)


def build(cls: type, data: dict[str, Any], where: str = "", base_dir: str | Path | None = None) -> Any:
    """Any config dataclass of this module from plain data, validated like `from_dict`."""
    return _build(cls, data, where, Path(base_dir) if base_dir is not None else None)


def yaml_module() -> Any:
    try:
        import yaml
    except ImportError:
        from medsam3_rt.errors import MissingDependencyError

        raise MissingDependencyError("reading YAML configs needs PyYAML: pip install 'medsam3-rt[train]' (or pip install pyyaml)") from None
    return yaml


def read_yaml(path: str | Path) -> Any:
    yaml = yaml_module()
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{p}' does not exist")
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}{where}: not valid YAML ({problem})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a UTF-8 text file") from None


def read_config_mapping(path: str | Path, overrides: dict[str, Any] | None, what: str) -> dict[str, Any]:
    """A YAML config file as a mapping, `overrides` ({"train.epochs": 2}) set on single dotted keys."""
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} config is a YAML mapping at the top level")
    for dotted, value in (overrides or {}).items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{dotted}': '{part}' is not a mapping in {path}")
        node[parts[-1]] = value
    return data


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML training config; `overrides` ({"train.epochs": 2}) replace single keys."""
    return from_dict(read_config_mapping(path, overrides, "training"), base_dir=Path(path).resolve().parent)


def default_yaml() -> str:
    """The full default config as YAML (what `medsam3-rt train --print-config` shows)."""
    yaml = yaml_module()

    example = TrainConfig(
        model=ModelConfig(checkpoint="path/to/sam3-checkpoint"),
        data=DataConfig(datasets=(DatasetSpec(path="data/Kvasir-SEG", layout="kvasir-seg"),)),
    )
    return yaml.safe_dump(example.to_dict(), sort_keys=False, default_flow_style=False, width=120)
