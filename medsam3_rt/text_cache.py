"""Text embeddings are computed once per prompt and reused for every image, slice and frame."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TextEmbedding:
    """One prompt's detector input: features (T, C) float32 and its token mask (T,) bool."""

    features: np.ndarray
    mask: np.ndarray


class TextEmbeddingCache:
    """Thread-safe LRU keyed by the normalised prompt; prompt-pack entries are pinned."""

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self._lru: OrderedDict[str, TextEmbedding] = OrderedDict()
        self._pinned: dict[str, TextEmbedding] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> TextEmbedding | None:
        with self._lock:
            if key in self._pinned:
                self.hits += 1
                return self._pinned[key]
            emb = self._lru.get(key)
            if emb is None:
                self.misses += 1
                return None
            self._lru.move_to_end(key)
            self.hits += 1
            return emb

    def put(self, key: str, emb: TextEmbedding, *, pin: bool = False) -> None:
        with self._lock:
            if pin:
                self._pinned[key] = emb
                self._lru.pop(key, None)
                return
            self._lru[key] = emb
            self._lru.move_to_end(key)
            while len(self._lru) > self.capacity:
                self._lru.popitem(last=False)

    def __len__(self) -> int:
        return len(self._lru) + len(self._pinned)

    def clear(self) -> None:
        with self._lock:
            self._lru.clear()
            self.hits = self.misses = 0
