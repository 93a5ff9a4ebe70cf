"""The deterministic, saved 85/15 train/validation split (paper Sec. 4.1: seed 42).

Each dataset is split on its own, by *group* (a 2D image, a volume, or a block of
neighbouring slices), so nothing of one group lands on both sides. The groups are sorted,
permuted by `numpy.random.default_rng(seed)`, and the first round(n * val_fraction) (at
least one when there are two or more groups) become validation. The result is written to
`split.json` in the run folder and every checkpoint, and reused as it is on `--resume`, by
`split_file`, and by `medsam3-rt eval`; a saved split whose groups no longer match the data
is an error rather than silently redrawn.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsam3_rt.io.atomic import atomic_write_text

from ..config import ConfigError

SPLIT_FILE = "split.json"


@dataclass(frozen=True)
class DatasetSplit:
    train: frozenset[str]
    val: frozenset[str]

    def side(self, group: str) -> str:
        return "val" if group in self.val else "train"


def fingerprint(groups: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(set(groups))).encode()).hexdigest()[:16]


def draw_split(groups: list[str], val_fraction: float, seed: int) -> DatasetSplit:
    uniq = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(uniq))
    n_val = 0 if len(uniq) < 2 else min(len(uniq) - 1, max(1, round(len(uniq) * val_fraction)))
    val = frozenset(uniq[i] for i in order[:n_val])
    return DatasetSplit(frozenset(uniq) - val, val)


@dataclass(frozen=True)
class Split:
    seed: int
    val_fraction: float
    datasets: dict[str, DatasetSplit]

    def to_json(self, groups: dict[str, list[str]]) -> dict:
        return {
            "seed": self.seed,
            "val_fraction": self.val_fraction,
            "datasets": {
                name: {"fingerprint": fingerprint(groups[name]), "train": sorted(s.train), "val": sorted(s.val)}
                for name, s in self.datasets.items()
            },
        }

    def save(self, path: Path, groups: dict[str, list[str]]) -> None:
        atomic_write_text(path, json.dumps(self.to_json(groups), indent=1))


def read_split(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        _ = data["datasets"]
        return data
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConfigError(f"cannot read the saved split '{path}' ({type(e).__name__}: {e}); delete it to draw a new one") from None


def make_split(groups: dict[str, list[str]], val_fraction: float, seed: int, saved: Path | None = None) -> Split:
    """The split of every dataset: drawn, or taken from a saved split.json and checked."""
    if saved is None or not Path(saved).is_file():
        return Split(seed, val_fraction, {name: draw_split(g, val_fraction, seed) for name, g in groups.items()})
    data = read_split(saved)
    out = {}
    for name, g in groups.items():
        entry = data["datasets"].get(name)
        if entry is None:
            raise ConfigError(f"{saved} has no split for dataset '{name}'; delete it (or set data.split_file) to draw a new one")
        if entry.get("fingerprint") != fingerprint(g):
            raise ConfigError(
                f"{saved}: dataset '{name}' changed since the split was drawn (its samples differ); "
                "delete the file to draw a new split, or restore the data"
            )
        out[name] = DatasetSplit(frozenset(entry["train"]), frozenset(entry["val"]))
    return Split(int(data.get("seed", seed)), float(data.get("val_fraction", val_fraction)), out)
