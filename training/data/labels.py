"""Label-to-text dictionaries: which mask values mean which concept (paper Sec. 4.1).

A dictionary maps label ids (mask pixel values) to canonical concept names, the text prompts
the model is trained and evaluated with:

    {1: liver, 2: liver tumour}          # multi-class: one concept per label
    {1: breast tumor, 2: breast tumor}   # several labels may share one concept (their union)

Single-class datasets use one global concept (`concept: polyp`): every non-zero pixel is it.
Files may be JSON or YAML with the mapping at the top level or under `labels`; nnU-Net's
`dataset.json` (`{"labels": {"background": 0, "liver": 1}}`, name -> id) and the Medical
Segmentation Decathlon's (`{"labels": {"0": "background", "1": "liver"}}`) are read as well.
Label 0 is background and never a concept.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ConfigError, read_yaml

BACKGROUND_NAMES = {"background", "bg", "_background_"}


@dataclass(frozen=True)
class LabelDictionary:
    """labels: label id -> concept; `binary`: any non-zero pixel is the single concept."""

    labels: dict[int, str]
    binary: bool = False

    @property
    def concepts(self) -> list[str]:
        """Distinct concepts in label order (the concept index used everywhere)."""
        return list(dict.fromkeys(self.labels[k] for k in sorted(self.labels)))

    def label_ids(self, concept: str) -> list[int]:
        return [k for k, v in self.labels.items() if v == concept]


def normalize_concept(text: Any, where: str) -> str:
    if not isinstance(text, str) or not " ".join(text.split()):
        raise ConfigError(f"{where}: concept names must be non-empty text, got {text!r}")
    return " ".join(text.split())


def _from_mapping(data: dict[Any, Any], where: str) -> dict[int, str]:
    if "labels" in data and isinstance(data["labels"], dict):
        data = data["labels"]
    out: dict[int, str] = {}
    for key, value in data.items():
        # nnU-Net v2 writes name -> id; everything else id -> name
        if isinstance(value, int) and not isinstance(value, bool) and not str(key).strip().lstrip("-").isdigit():
            key, value = value, key
        try:
            label = int(str(key).strip())
        except ValueError:
            raise ConfigError(f"{where}: label ids must be integers, got {key!r}") from None
        if isinstance(value, str) and value.strip().lower() in BACKGROUND_NAMES and label == 0:
            continue
        if label <= 0:
            raise ConfigError(f"{where}: label {label} -> {value!r}: label 0 is background and ids must be >= 1")
        out[label] = normalize_concept(value, f"{where} label {label}")
    if not out:
        raise ConfigError(f"{where}: the label-to-text dictionary has no concepts (only background)")
    return out


def read_label_file(path: str | Path) -> dict[int, str]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"label dictionary '{p}' does not exist")
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{p}: not valid JSON ({e})") from None
    else:
        data = read_yaml(p)
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a label dictionary is a mapping (label id -> concept)")
    return _from_mapping(data, str(p))


def label_dictionary(
    labels: dict[int, str] | str | None, concept: str | None, where: str, default_concept: str | None = None
) -> LabelDictionary:
    """The dictionary of a dataset from its `labels` / `concept` settings (or the layout's default)."""
    if labels is not None:
        mapping = read_label_file(labels) if isinstance(labels, str) else _from_mapping(dict(labels), where)
        return LabelDictionary(mapping)
    if concept is not None:
        return LabelDictionary({1: normalize_concept(concept, where)}, binary=True)
    if default_concept is not None:
        return LabelDictionary({1: default_concept}, binary=True)
    raise ConfigError(
        f"{where}: no label-to-text dictionary; set `concept: <name>` (single class) or `labels: {{1: <name>, ...}}` "
        "in the training config or the dataset's dataset.yaml"
    )
