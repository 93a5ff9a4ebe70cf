"""Load SAM3 checkpoints into transformers models: Hugging Face directories and `sam3.pt`."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import pickle
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import Sam3Config, Sam3Model, Sam3VideoConfig, Sam3VideoModel

from medsam3_rt.errors import CheckpointError, first_line
from medsam3_rt.manifest import sha256_file

from .presets import PRESETS, get_preset
from .sam3_layout import detector_to_hf, tracker_to_hf

log = logging.getLogger(__name__)

HF_MODEL_TYPES = {"sam3": "Sam3Model", "sam3_video": "Sam3VideoModel", "sam3_lite_text": "Sam3LiteTextModel"}
WEIGHT_SUFFIXES = (".safetensors", ".bin")


# Parameters of Meta's sam3.pt that no exported graph uses, by original key (`detector.` removed).
# Meta's geometry encoder always holds the point-prompt projections (Meta's video builder loads
# sam3.pt with strict=True, so the released file has them); transformers' Sam3 has no point
# prompts for the detector and the SDK prompts with text. They are reported, never dropped silently.
UNEXPORTED_DETECTOR = re.compile(r"^geometry_encoder\.points_(?:direct|pool|pos_enc)_project\.")
UNEXPORTED_REASON = "point-prompt projections of Meta's geometry encoder (no transformers counterpart; medsam3-rt prompts with text)"


@dataclass
class LoadedCheckpoint:
    """A detector (`Sam3Model`) and, for video checkpoints, the `Sam3VideoModel` that owns it.

    `trained_semantics` is the prompt semantics a fine-tune recorded (training.json of a
    medsam3 training checkpoint), None when the checkpoint does not say; see
    `medsam3_export.semantics`.
    """

    detector: Sam3Model
    video: Sam3VideoModel | None
    source: dict[str, Any] = field(default_factory=dict)
    trained_semantics: str | None = None

    @property
    def has_tracker(self) -> bool:
        return self.video is not None

    @property
    def prompt_semantics(self) -> str:
        from .semantics import DEFAULT_PROMPT_SEMANTICS

        return self.trained_semantics or DEFAULT_PROMPT_SEMANTICS


def load_checkpoint(path: str | Path, *, config: str | Path | None = None) -> LoadedCheckpoint:
    """Load a Hugging Face SAM3 directory or an original `sam3.pt` file.

    `config` (preset name or config.json path) gives the geometry of a `sam3.pt`, which does
    not record it; the default is the real SAM3 geometry. HF directories carry their own.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint '{p}' does not exist")
    if p.is_dir():
        if config is not None:
            raise CheckpointError("--config applies to sam3.pt files; a Hugging Face directory has its own config.json")
        return _load_hf_dir(p)
    return _load_original(p, config)


def _set_init_std(config: Any, std: float, seen: set[int] | None = None) -> None:
    """Set `initializer_range` on a config and all its sub-configs (each once)."""
    seen = seen if seen is not None else set()
    if id(config) in seen:
        return
    seen.add(id(config))
    if hasattr(config, "initializer_range"):
        config.initializer_range = std
    for value in vars(config).values():
        if hasattr(value, "to_dict") and hasattr(value, "initializer_range"):
            _set_init_std(value, std, seen)


# Tracker object-score bias of `export --random`: objects present, so the tracker graphs' parity
# compares real masks and pointers (tests/conftest.py shifts its tiny model's bias the same way).
RANDOM_OBJECT_SCORE_BIAS = 1.0


def random_checkpoint(
    preset: str,
    *,
    video: bool = True,
    seed: int = 0,
    init_std: float | None = None,
    overrides: Mapping[str, Any] | None = None,
    object_score_bias: float | None = None,
) -> LoadedCheckpoint:
    """A randomly initialised model of a preset geometry (tests, benchmarks, size studies, training from scratch).

    `init_std` overrides the weight initialisation scale; tests use 0.05 so that queries
    score distinctly and mask logits are not all near zero (transformers' 0.02 makes every
    query score ~0.25 in a tiny model). `overrides` replaces fields of the preset (validated by
    the caller) and is recorded in the source. `object_score_bias` sets the bias of the tracker's
    object-score head: at transformers' init its logit is ~0 for every input (|logit| < 0.01), so
    presence is a coin flip per preset, and where it lands "absent" (small, full) the tracker
    graphs' parity compares only the constant "no object" fill of their masks;
    `RANDOM_OBJECT_SCORE_BIAS` makes every tracked object present (`export --random` uses it).
    """
    pr = get_preset(preset)
    if overrides is not None:
        pr = dataclasses.replace(pr, **{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
    video = video and pr.has_video  # SAM3-LiteText presets are image models
    cfg = pr.video_config() if video else pr.detector_config()
    if init_std is not None:
        _set_init_std(cfg, init_std)
    torch.manual_seed(seed)
    source: dict[str, Any] = {"format": "random", "preset": preset, "seed": seed}
    if overrides is not None:
        source = {"format": "random", "preset": preset, "overrides": dict(overrides), "seed": seed}
    if video:
        vm = Sam3VideoModel(cfg).eval()
        if object_score_bias is not None:
            with torch.no_grad():
                vm.tracker_model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(object_score_bias)
            source["object_score_bias"] = object_score_bias
        return LoadedCheckpoint(vm.detector_model, vm, {**source, "class": "Sam3VideoModel"})
    det = getattr(transformers, HF_MODEL_TYPES[cfg.model_type])(cfg).eval()
    return LoadedCheckpoint(det, None, {**source, "class": type(det).__name__})


def _dir_digest(root: Path, names: list[Path]) -> str:
    h = hashlib.sha256()
    for f in sorted(names):
        h.update(f.name.encode() + b"\0" + sha256_file(f).encode())
    return h.hexdigest()


def _load_hf_dir(root: Path) -> LoadedCheckpoint:
    cfg_path = root / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(
            f"'{root}' has no config.json; expected a Hugging Face SAM3 directory (config.json + *.safetensors) or a sam3.pt file"
        )
    try:
        model_type = json.loads(cfg_path.read_text())["model_type"]
    except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path} is not a valid transformers config ({e})") from None
    if model_type not in HF_MODEL_TYPES:
        raise CheckpointError(f"{cfg_path} is a '{model_type}' model; medsam3-rt exports SAM3 checkpoints ({', '.join(HF_MODEL_TYPES)})")
    weights = [f for f in root.iterdir() if f.suffix in WEIGHT_SUFFIXES]
    if not weights:
        raise CheckpointError(f"'{root}' has a config.json but no *.safetensors / *.bin weights")
    cls = getattr(transformers, HF_MODEL_TYPES[model_type])
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the CLI shows its own progress; no tqdm bars on stderr
    try:
        model, info = cls.from_pretrained(root, local_files_only=True, output_loading_info=True)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise CheckpointError(f"cannot load '{root}' with transformers {cls.__name__}: {first_line(e)}") from None
    finally:
        hf_logging.enable_progress_bar()
    _check_complete(info.get("missing_keys", []), info.get("mismatched_keys", []), root)
    model.eval()
    source = {"format": "hf", "path": root.name, "class": cls.__name__, "sha256": _dir_digest(root, [*weights, cfg_path])}
    trained = _trained_semantics(root)
    if isinstance(model, Sam3VideoModel):
        return LoadedCheckpoint(model.detector_model, model, source, trained)
    return LoadedCheckpoint(model, None, source, trained)


def _trained_semantics(root: Path) -> str | None:
    """`prompt_semantics` recorded by medsam3 training in the checkpoint's training.json, if any."""
    from .semantics import check_prompt_semantics

    info = root / "training.json"
    if not info.is_file():
        return None
    try:
        value = json.loads(info.read_text(encoding="utf-8")).get("prompt_semantics")
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None
    return None if value is None else check_prompt_semantics(str(value))


def _check_complete(missing: list[str], mismatched: list[Any], where: Path) -> None:
    if missing:
        raise CheckpointError(
            f"'{where}' lacks {len(missing)} weights of the model (e.g. {', '.join(sorted(missing)[:3])}); "
            "it is not a complete SAM3 checkpoint for this config"
        )
    if mismatched:
        raise CheckpointError(f"'{where}' has {len(mismatched)} weights of the wrong shape (e.g. {mismatched[0]})")


def _resolve_config(config: str | Path | None) -> Sam3VideoConfig | Sam3Config:
    if config is None:
        return PRESETS["full"].video_config()
    if isinstance(config, str) and config in PRESETS:
        return PRESETS[config].video_config()
    cfg_path = Path(config)
    if not cfg_path.is_file():
        raise CheckpointError(f"--config '{config}' is neither a preset ({', '.join(PRESETS)}) nor a config.json file")
    try:
        data = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({e})") from None
    kind = data.pop("model_type", None)
    if kind == "sam3_video":
        return Sam3VideoConfig(**data)
    if kind == "sam3":
        return Sam3Config(**data)
    raise CheckpointError(f"{cfg_path}: model_type must be 'sam3' or 'sam3_video', got {kind!r}")


# Meta's ViT (sam3/model/vitdet.py) builds its LayerNorms with eps=1e-5; transformers'
# Sam3ViTConfig defaults to 1e-6. A sam3.pt was trained with Meta's code, so its ViT gets 1e-5
# (measured on a random 1008-px Meta build: with 1e-6 the FPN features differ from Meta's by
# 7.5e-3 relative, with 1e-5 by 5e-7).
META_VIT_LAYER_NORM_EPS = 1e-5


def _meta_vit_layer_norm(cfg: Sam3VideoConfig | Sam3Config) -> Sam3VideoConfig | Sam3Config:
    det = cfg.detector_config if isinstance(cfg, Sam3VideoConfig) else cfg
    vision_configs = [det.vision_config]
    if isinstance(cfg, Sam3VideoConfig) and getattr(cfg.tracker_config, "vision_config", None) is not None:
        vision_configs.append(cfg.tracker_config.vision_config)
    for vision in vision_configs:
        vision.backbone_config.layer_norm_eps = META_VIT_LAYER_NORM_EPS
    return cfg


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A torch pickle of tensors, loaded with weights_only=True (no code execution)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(
            f"cannot read '{path}' as a sam3.pt checkpoint: {first_line(e, 200)} (expected a torch state dict saved with torch.save)"
        ) from None
    if isinstance(obj, dict):
        for wrapper in ("model", "state_dict"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"'{path}' does not hold a state dict of tensors (keys -> tensors)")
    return obj


def _load_original(path: Path, config: str | Path | None) -> LoadedCheckpoint:
    state = read_state_dict(path)
    det_state = {k[len("detector.") :]: v for k, v in state.items() if k.startswith("detector.")}
    prefixed = bool(det_state)
    others = sorted(k for k in state if not k.startswith(("detector.", "tracker."))) if prefixed else []
    if others:
        raise CheckpointError(
            f"'{path.name}' has {len(others)} keys outside detector.* / tracker.* (e.g. {', '.join(others[:3])}); "
            "not a SAM3 checkpoint medsam3-rt knows"
        )
    trk_state = {k[len("tracker.") :]: v for k, v in state.items() if k.startswith("tracker.")}
    if not det_state:  # a detector-only dump without the prefix (Meta's image model state dict)
        det_state, trk_state = dict(state), {}
    unexported = {k: v for k, v in det_state.items() if UNEXPORTED_DETECTOR.match(k)}
    det_state = {k: v for k, v in det_state.items() if k not in unexported}
    if unexported:
        count = sum(v.numel() for v in unexported.values())
        log.warning(
            "%s: %d tensors (%d parameters) are not exported: %s (%s)",
            path.name,
            len(unexported),
            count,
            ", ".join(sorted(unexported)),
            UNEXPORTED_REASON,
        )
    cfg = _meta_vit_layer_norm(_resolve_config(config))
    neck_keys = {k for k in det_state if k.startswith("backbone.vision_backbone.sam2_convs.")}
    video: Sam3VideoModel | None = None
    if trk_state and isinstance(cfg, Sam3VideoConfig):
        video = Sam3VideoModel(cfg)
        detector = video.detector_model
    else:
        if trk_state:
            log.warning("%s has tracker weights but --config describes an image model; exporting the detector only", path.name)
        detector = Sam3Model(cfg.detector_config if isinstance(cfg, Sam3VideoConfig) else cfg)
    _load_strict(detector, detector_to_hf({k: v for k, v in det_state.items() if k not in neck_keys}), path, "detector")
    if video is not None:
        own = {k: v for k, v in video.state_dict().items() if not k.startswith("detector_model.")}
        trk = tracker_to_hf(trk_state, {k: det_state[k] for k in neck_keys})
        _load_strict(_Subset(video, own), trk, path, "tracker")
    detector.eval()
    if video is not None:
        video.eval()
    source = {
        "format": "sam3.pt",
        "path": path.name,
        "sha256": sha256_file(path),
        "class": "Sam3VideoModel" if video is not None else "Sam3Model",
    }
    if unexported:
        source["unexported_parameters"] = {
            "reason": UNEXPORTED_REASON,
            "tensors": [
                {"name": "detector." + k if prefixed else k, "shape": list(v.shape), "count": v.numel()}
                for k, v in sorted(unexported.items())
            ],
            "total": sum(v.numel() for v in unexported.values()),
        }
    return LoadedCheckpoint(detector, video, source)


class _Subset:
    """The part of a module's state dict outside the detector, for a strict load of the tracker."""

    def __init__(self, module: torch.nn.Module, own: dict[str, torch.Tensor]) -> None:
        self.module, self.own = module, own

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.own

    def load_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True) -> None:
        missing, unexpected = self.module.load_state_dict(state, strict=False)
        leftover = [k for k in missing if not k.startswith("detector_model.")]
        if leftover or unexpected:
            raise CheckpointError(f"tracker weights did not load: missing {leftover[:3]}, unexpected {unexpected[:3]}")


def _load_strict(module: torch.nn.Module | _Subset, state: dict[str, torch.Tensor], path: Path, part: str) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            k = sorted(wrong)[0]
            parts.append(f"{len(wrong)} of another shape (e.g. {k}: {list(state[k].shape)} vs {list(own[k].shape)})")
        raise CheckpointError(
            f"'{path.name}' does not match the {part} of the configured SAM3 geometry: {'; '.join(parts)}. "
            "Pass --config with the checkpoint's geometry (a preset or config.json)"
        )
    module.load_state_dict(state, strict=True)
