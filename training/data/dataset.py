"""(image, mask, text) triplets from several dataset folders, split and batched for training.

`prepare_data` opens every dataset of a config, indexes which concepts each sample contains,
applies (or draws and saves) the split, and lists the training triplets: every (sample,
concept) pair where the concept is present, plus negative pairs (concept absent, empty
target) up to `data.negatives` times the positives, drawn with a fixed seed per dataset.
Validation uses the validation *samples* with all of their dataset's concepts (the paper's
evaluation protocol, `evaluate.py`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medsam3_rt.manifest import Preprocess
from medsam3_rt.preprocess import pixel_values

from ..config import AugmentConfig, ConfigError, DataConfig
from ..targets import BatchTargets, build_target, collate_targets, instance_masks
from .augment import augment
from .sources import SampleRef, Source, open_source
from .split import Split, make_split


@dataclass(frozen=True)
class Triplet:
    source: int  # index into DataBundle.sources
    ref: SampleRef
    concept: int  # index into that source's concepts


@dataclass
class DataBundle:
    sources: list[Source]
    split: Split
    groups: dict[str, list[str]]
    train: list[Triplet]
    val: dict[str, list[SampleRef]]
    stats: dict[str, dict[str, int]] = field(default_factory=dict)

    def save_split(self, path: Path) -> None:
        self.split.save(path, self.groups)


def open_sources(cfg: DataConfig) -> list[Source]:
    sources = [open_source(spec) for spec in cfg.datasets]
    names = [s.name for s in sources]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise ConfigError(f"two datasets are named '{dup}'; give them distinct `name:` values")
    return sources


def negative_pairs(candidates: list[tuple[SampleRef, int]], count: int, seed: int, name: str) -> list[tuple[SampleRef, int]]:
    if count <= 0 or not candidates:
        return []
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    pick = rng.choice(len(candidates), size=min(count, len(candidates)), replace=False)
    return [candidates[i] for i in sorted(pick)]


def prepare_data(cfg: DataConfig, saved_split: Path | None = None, sources: list[Source] | None = None) -> DataBundle:
    sources = sources if sources is not None else open_sources(cfg)
    indexes = {s.name: s.index() for s in sources}
    groups = {name: [ref.group for ref, _ in idx] for name, idx in indexes.items()}
    split_path = Path(cfg.split_file) if cfg.split_file else saved_split
    if cfg.split_file and not Path(cfg.split_file).is_file():
        raise ConfigError(f"data.split_file '{cfg.split_file}' does not exist")
    split = make_split(groups, cfg.val_fraction, cfg.split_seed, split_path)
    train: list[Triplet] = []
    val: dict[str, list[SampleRef]] = {}
    stats: dict[str, dict[str, int]] = {}
    for si, src in enumerate(sources):
        side = split.datasets[src.name]
        pos, neg_candidates = [], []
        val[src.name] = []
        for ref, present in indexes[src.name]:
            if ref.group in side.val:
                val[src.name].append(ref)
                continue
            for ci in range(len(src.concepts)):
                (pos if ci in present else neg_candidates).append((ref, ci))
        neg = negative_pairs(neg_candidates, round(cfg.negatives * len(pos)), cfg.split_seed, src.name)
        pairs = sorted(pos + neg, key=lambda p: (p[0], p[1]))
        train += [Triplet(si, ref, ci) for ref, ci in pairs] * src.spec.repeat
        n_train_samples = sum(1 for ref, _ in indexes[src.name] if ref.group not in side.val)
        stats[src.name] = {
            "train_samples": n_train_samples,
            "val_samples": len(val[src.name]),
            "positive_triplets": len(pos),
            "negative_triplets": len(neg),
            "groups_train": len(side.train),
            "groups_val": len(side.val),
        }
        if not pos:
            raise ConfigError(
                f"dataset {src.name}: no training sample contains any of its concepts ({', '.join(src.concepts)}); check the masks"
            )
    return DataBundle(sources, split, groups, train, val, stats)


@dataclass
class Batch:
    """pixel_values float (B, 3, S, S); input_ids / attention_mask long (B, T); targets; dataset (B,)."""

    pixel_values: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    targets: BatchTargets
    dataset: torch.Tensor

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.pixel_values.to(device, non_blocking=True),
            self.input_ids.to(device, non_blocking=True),
            self.attention_mask.to(device, non_blocking=True),
            self.targets.to(device),
            self.dataset.to(device),
        )


class TripletDataset(torch.utils.data.Dataset):
    """Triplet i -> (pixel_values, tokens, target), augmented with an RNG seeded by (seed, epoch, i)."""

    def __init__(
        self,
        sources: list[Source],
        triplets: list[Triplet],
        tokens: dict[str, tuple[np.ndarray, np.ndarray]],
        *,
        image_size: int,
        mask_size: int,
        num_queries: int,
        augment_cfg: AugmentConfig | None,
        seed: int,
    ) -> None:
        self.sources = sources
        self.triplets = triplets
        self.tokens = tokens
        self.preprocess = Preprocess(image_size=image_size)
        self.mask_size = mask_size
        self.num_queries = num_queries
        self.augment_cfg = augment_cfg
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.triplets)

    def __getitem__(self, i: int) -> tuple:
        t = self.triplets[i]
        src = self.sources[t.source]
        ann = src.load(t.ref)
        mask = ann.masks.get(t.concept)
        if mask is None:
            inst = np.zeros((0, *ann.image.shape[:2]), bool)
        else:
            inst = instance_masks(mask, src.instances, instance_ids=ann.instance_ids, min_area=src.spec.min_area)
        image = ann.image
        if self.augment_cfg is not None:
            rng = np.random.default_rng([self.seed, self.epoch, i])
            image, inst = augment(image, inst, self.augment_cfg, rng)
            inst = inst[inst.reshape(inst.shape[0], -1).any(axis=1)] if inst.shape[0] else inst
        target = build_target(inst, self.mask_size, self.num_queries)
        pixels = pixel_values(image, self.preprocess)[0]
        ids, attn = self.tokens[src.concepts[t.concept]]
        return pixels, ids, attn, target, t.source


def collate(items: list[tuple], num_queries: int) -> Batch:
    pixels, ids, attn, targets, ds = zip(*items)
    return Batch(
        torch.from_numpy(np.stack(pixels)),
        torch.from_numpy(np.stack(ids)).long(),
        torch.from_numpy(np.stack(attn)).long(),
        collate_targets(list(targets), num_queries),
        torch.tensor(ds, dtype=torch.long),
    )
