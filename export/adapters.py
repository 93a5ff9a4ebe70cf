"""Merge a PEFT LoRA adapter into a SAM3 checkpoint before export (`medsam3-rt export --adapter`).

Fine-tuned SAM3 models such as MedSAM3 are published as a LoRA adapter (a PEFT folder:
`adapter_config.json` + `adapter_model.safetensors`) on top of the base weights. Exported
graphs hold plain weights, so the adapter is merged (W + scale * B @ A, by PEFT itself) into
the loaded base model; the parity check then runs on the merged model. Everything that would
make the merge wrong is refused up front with a one-line `CheckpointError`: a folder that is
not a LoRA adapter, variants whose merge is not a plain weight update (DoRA, ...), an adapter
written for another model, LoRA modules the base does not have, and tensors of another shape.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from medsam3_rt.errors import CheckpointError, MissingDependencyError, first_line
from medsam3_rt.manifest import sha256_file

if TYPE_CHECKING:
    from .checkpoint import LoadedCheckpoint

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
PEFT_PREFIX = "base_model.model."
# adapter_config.json fields whose LoRA variant is not a plain low-rank weight update that
# merges into the base (or that changes the architecture): refused, naming the field.
UNSUPPORTED_VARIANTS = {
    "use_dora": "DoRA (weight-decomposed LoRA)",
    "use_qalora": "QA-LoRA",
    "use_bdlora": "BD-LoRA",
    "layer_replication": "layer replication",
    "target_parameters": "LoRA on bare parameters (target_parameters)",
    "alora_invocation_tokens": "activated LoRA (aLoRA)",
    "trainable_token_indices": "trainable token embeddings",
    "arrow_config": "Arrow routing",
    "monteclora_config": "MonteCLoRA",
    "kasa_config": "KaSA",
    "velora_config": "VeLoRA",
    "megatron_config": "Megatron-parallel LoRA",
}
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+|[A-Za-z0-9][\w.-]*")
# top-level module names of Meta's `sam3` package model (not transformers' Sam3Model)
META_PREFIXES = ("backbone.", "transformer.", "segmentation_head.", "dot_prod_scoring.", "input_geometry_encoder.")
VIDEO_PREFIXES = ("detector_model.", "tracker_model.")


@dataclass(frozen=True)
class Adapter:
    """A PEFT adapter folder read and checked for what it declares (not yet against a base)."""

    path: Path
    config: dict[str, Any]
    weights_file: Path
    weights: dict[str, torch.Tensor]

    @property
    def module_keys(self) -> list[str]:
        """Weight names without PEFT's `base_model.model.` prefix."""
        return [k[len(PEFT_PREFIX) :] if k.startswith(PEFT_PREFIX) else k for k in self.weights]


def _peft():
    try:
        import peft
    except ImportError:
        raise MissingDependencyError(
            "--adapter needs the 'peft' package: pip install 'medsam3-rt[adapters]' (on CPU-only machines add -c constraints/cpu.txt)"
        ) from None
    return peft


def read_adapter(path: str | Path) -> Adapter:
    """Read `adapter_config.json` and the adapter weights; refuse what cannot be merged."""
    _peft()  # before anything is loaded: merging needs it
    root = Path(path)
    what = f"adapter '{root}'"
    if not root.exists():
        raise CheckpointError(f"{what} does not exist")
    if not root.is_dir():
        raise CheckpointError(f"{what} is not a folder; expected a PEFT adapter folder ({ADAPTER_CONFIG} + {ADAPTER_WEIGHTS[0]})")
    cfg_path = root / ADAPTER_CONFIG
    if not cfg_path.is_file():
        raise CheckpointError(f"{what} has no {ADAPTER_CONFIG}; expected a PEFT adapter folder saved with save_pretrained")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({first_line(e)})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{cfg_path} does not hold a JSON object")
    kind = config.get("peft_type")
    if kind != "LORA":
        raise CheckpointError(f"{what} is a {kind!r} adapter; medsam3-rt merges LoRA adapters only (peft_type 'LORA')")
    for key, name in UNSUPPORTED_VARIANTS.items():
        if config.get(key):
            raise CheckpointError(
                f"{what} uses {name} ({key} in {ADAPTER_CONFIG}); medsam3-rt merges plain LoRA only: "
                "merge it with PEFT (merge_and_unload) and export the merged model"
            )
    for key in ("r", "lora_alpha"):
        if not isinstance(config.get(key), (int, float)) or isinstance(config.get(key), bool) or config[key] <= 0:
            raise CheckpointError(f"{cfg_path}: '{key}' must be a positive number, got {config.get(key)!r}")
    weights_file = next((root / f for f in ADAPTER_WEIGHTS if (root / f).is_file()), None)
    if weights_file is None:
        raise CheckpointError(f"{what} has no adapter weights ({' or '.join(ADAPTER_WEIGHTS)})")
    weights = _read_weights(weights_file)
    if not any(".lora_A." in k for k in weights):
        raise CheckpointError(f"{weights_file} holds no LoRA weights (no '*.lora_A.*' tensors)")
    return Adapter(root, config, weights_file, weights)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            weights = load_file(str(path), device="cpu")
        else:
            weights = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors raises its own SafetensorError; torch several kinds
        raise CheckpointError(f"cannot read adapter weights {path}: {first_line(e, 200)}") from None
    if not isinstance(weights, dict) or not weights or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{path} does not hold a dict of tensors")
    return weights


def _check_base(adapter: Adapter, root: torch.nn.Module) -> None:
    """The adapter's declared base (name, class) must be a SAM3 model of the loaded class."""
    name = str(adapter.config.get("base_model_name_or_path") or "")
    # a Hub id ("facebook/sam3") names the model family; a local path ("/work/base") does not
    if HUB_ID.fullmatch(name) and "sam3" not in name.lower():
        raise CheckpointError(
            f"adapter '{adapter.path}' was trained on '{name}' (base_model_name_or_path in {ADAPTER_CONFIG}), not a SAM3 model; "
            "if that is a renamed copy of SAM3, correct the name in the file"
        )
    declared = (adapter.config.get("auto_mapping") or {}).get("base_model_class")
    if declared and declared != type(root).__name__:
        raise CheckpointError(
            f"adapter '{adapter.path}' was trained on a {declared} (auto_mapping in {ADAPTER_CONFIG}); "
            f"the base checkpoint is a {type(root).__name__}"
        )


def _adapter_root(adapter: Adapter, ckpt: LoadedCheckpoint) -> torch.nn.Module:
    """The module the adapter's names are relative to: the detector, or the video model."""
    keys = adapter.module_keys
    if any(k.startswith(VIDEO_PREFIXES) for k in keys):
        if ckpt.video is None:
            raise CheckpointError(
                f"adapter '{adapter.path}' adapts a SAM3 video model (detector_model.* / tracker_model.* weights); "
                "the base is an image model"
            )
        return ckpt.video
    return ckpt.detector


def _diff(expected: dict[str, torch.Tensor], adapter: Adapter) -> None:
    """Refuse an adapter whose tensors do not map one-to-one, shape for shape, onto the base."""
    got = adapter.weights
    unexpected = sorted(set(got) - set(expected))
    missing = sorted(set(expected) - set(got))
    strip = lambda k: k[len(PEFT_PREFIX) :] if k.startswith(PEFT_PREFIX) else k  # noqa: E731
    if unexpected:
        mods = sorted({strip(k).split(".lora_")[0] for k in unexpected})
        raise CheckpointError(
            f"adapter '{adapter.path}' adapts {len(mods)} module(s) the base checkpoint does not have "
            f"(e.g. {', '.join(mods[:3])}); it was made for another model or geometry"
        )
    if missing:
        raise CheckpointError(
            f"adapter '{adapter.path}' has no weights for {len(missing)} base module(s) its {ADAPTER_CONFIG} targets "
            f"(e.g. {', '.join(strip(k) for k in missing[:3])}); it was made for another geometry, or its files are incomplete"
        )
    wrong = [k for k in sorted(got) if got[k].shape != expected[k].shape]
    if wrong:
        k = wrong[0]
        raise CheckpointError(
            f"adapter '{adapter.path}' has {len(wrong)} tensor(s) of another shape than the base needs "
            f"(e.g. {strip(k)}: {list(got[k].shape)} vs {list(expected[k].shape)}); "
            f"it was made for another geometry, or its rank in {ADAPTER_CONFIG} is not its weights' rank"
        )


def merge_adapter(ckpt: LoadedCheckpoint, path: str | Path | Adapter, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Merge the LoRA adapter at `path` (or one `read_adapter` returned) into `ckpt`'s weights, in place.

    Returns the manifest record of the adapter, also stored as `ckpt.source["adapter"]`.
    """
    say = progress or log.info
    peft = _peft()
    adapter = path if isinstance(path, Adapter) else read_adapter(path)
    root = _adapter_root(adapter, ckpt)
    _check_base(adapter, root)
    say(f"merging LoRA adapter {adapter.path.name}")
    try:
        config = peft.LoraConfig.from_pretrained(str(adapter.path))
    except (TypeError, ValueError) as e:
        raise CheckpointError(
            f"{adapter.path / ADAPTER_CONFIG} is not a LoRA config this PEFT {peft.__version__} reads: {first_line(e)}"
        ) from None
    config.inference_mode = True
    config.init_lora_weights = False  # the file's weights replace them; skip the init math
    names = {n for n, _ in root.named_modules()}
    declared = [k.split(".lora_")[0] for k in adapter.module_keys if ".lora_" in k]
    absent = sorted({m for m in declared if m not in names})
    if absent:
        meta = any(m.startswith(META_PREFIXES) for m in absent)
        raise CheckpointError(
            f"adapter '{adapter.path}' targets {len(absent)} module(s) the base checkpoint does not have "
            f"(e.g. {', '.join(absent[:3])}); "
            + (
                "these are Meta's sam3 module names: medsam3-rt merges adapters made on transformers' Sam3Model"
                if meta
                else "it was made for another model or geometry"
            )
        )
    was_training = root.training
    try:
        with warnings.catch_warnings():  # transformers' deprecation notices as PEFT probes the model
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)  # "base_model_name_or_path was renamed": expected, the base is local
            model = peft.get_peft_model(root, config)
    except (ValueError, TypeError, RuntimeError) as e:  # e.g. "Target modules {...} not found in the base model"
        raise CheckpointError(f"adapter '{adapter.path}' does not fit the base checkpoint: {first_line(e, 240)}") from None
    expected = peft.get_peft_model_state_dict(model)
    _diff(expected, adapter)
    result = peft.set_peft_model_state_dict(model, adapter.weights)
    unloaded = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if unloaded:
        raise CheckpointError(f"adapter '{adapter.path}': {len(unloaded)} LoRA tensors did not load (e.g. {unloaded[0]})")
    lora_layers = [m for m in model.modules() if isinstance(m, peft.tuners.lora.LoraLayer)]
    merged_parameters = sum(int(m.get_base_layer().weight.numel()) for m in lora_layers)
    saved_modules = list(config.modules_to_save or [])
    replaced = sum(int(v.numel()) for k, v in adapter.weights.items() if ".lora_" not in k)
    with torch.no_grad():
        merged = model.merge_and_unload(safe_merge=True)
    if merged is not root:
        raise CheckpointError("PEFT returned a new model object instead of merging in place; this PEFT version is not supported")
    root.train(was_training)
    record = {
        "path": adapter.path.name,
        "format": "peft-lora",
        "weights": adapter.weights_file.name,
        "sha256": sha256_file(adapter.weights_file),
        "config_sha256": sha256_file(adapter.path / ADAPTER_CONFIG),
        "base_model_name_or_path": adapter.config.get("base_model_name_or_path"),
        "rank": int(config.r),
        "alpha": float(config.lora_alpha),
        "use_rslora": bool(config.use_rslora),
        "rank_pattern": dict(config.rank_pattern or {}),
        "alpha_pattern": dict(config.alpha_pattern or {}),
        "target_modules": sorted(config.target_modules) if isinstance(config.target_modules, (set, list)) else config.target_modules,
        "lora_modules": len(lora_layers),
        "merged_parameters": merged_parameters,
        "modules_to_save": saved_modules,
        "replaced_parameters": replaced,
        "peft_version": adapter.config.get("peft_version"),
        "merged_with": f"peft {peft.__version__} merge_and_unload(safe_merge=True)",
    }
    ckpt.source["adapter"] = record
    say(f"merged {len(lora_layers)} LoRA modules ({merged_parameters:,} weights) rank {config.r}, alpha {config.lora_alpha}")
    return record
