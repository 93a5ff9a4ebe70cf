"""An export directory opened on a backend: the graphs, the tokenizer and the prompt cache.

`Model` runs the graphs stage by stage (text encoder, image backbone, detector, tracker)
and knows nothing about images or masks; `Segmenter` and the streaming tracker build on it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import graph_contract as gc
from .backends import Backend, BackendOptions, GraphRunner, as_numpy, resolve
from .manifest import Manifest, Verify, load_manifest
from .prompt_pack import SUFFIX as PACK_SUFFIX
from .prompt_pack import PromptPack, read_prompt_pack
from .text_cache import TextEmbedding, TextEmbeddingCache
from .tokenizer import ClipTokenizer, normalize_prompt

log = logging.getLogger(__name__)

PROMPT_PACK_DIR = "prompt_packs"


@dataclass(frozen=True)
class TextBatch:
    """Detector text input for P prompts: features (P, T, C) float32, mask (P, T) bool."""

    features: np.ndarray
    mask: np.ndarray


class Model:
    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        backend: str | Backend = "auto",
        *,
        options: BackendOptions | None = None,
        verify: Verify = "hash",
        prompt_packs: Iterable[str | os.PathLike[str]] = (),
        cache_size: int = 1024,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.manifest: Manifest = load_manifest(self.model_dir, verify=verify)
        self.backend = backend if isinstance(backend, Backend) else resolve(backend, options, manifest=self.manifest)
        self.backend.attach(self.manifest, self.model_dir)  # backends read engines etc. from this manifest, not from disk
        self._runners: dict[str, GraphRunner] = {}
        self._runner_lock = threading.Lock()
        self.tokenizer = ClipTokenizer(self.model_dir / self.manifest.tokenizer.file, self.manifest.tokenizer)
        self.text_cache = TextEmbeddingCache(cache_size)
        # Graphs for every image are opened eagerly so a broken export fails at load time.
        for name in (gc.IMAGE_BACKBONE, gc.DETECTOR):
            self.runner(name)
        self._keep_features_on_device()
        packs = [Path(p) for p in prompt_packs]
        pack_dir = self.model_dir / PROMPT_PACK_DIR
        if pack_dir.is_dir():
            packs = sorted(pack_dir.glob(f"*{PACK_SUFFIX}")) + packs
        for p in packs:
            self.add_prompt_pack(read_prompt_pack(p, expect_text_encoder_sha256=self.manifest.text_encoder_sha256))

    # -- graphs ------------------------------------------------------------------------
    def runner(self, name: str) -> GraphRunner:
        with self._runner_lock:
            if name not in self._runners:
                self._runners[name] = self.backend.open(self.manifest.graph(name), self.model_dir)
            return self._runners[name]

    def open_graphs(self) -> list[str]:
        """Names of the graphs with an open session (the others load on first use)."""
        with self._runner_lock:
            return list(self._runners)

    def release(self, names: Iterable[str] | None = None) -> list[str]:
        """Close sessions to free their memory; they reopen on next use (issue 21).

        Default: every graph except the image backbone and the detector, i.e. the text
        encoder (needed again only on a text-cache miss) and the tracker graphs. Returns
        the names closed.
        """
        keep = {gc.IMAGE_BACKBONE, gc.DETECTOR}
        with self._runner_lock:
            chosen = [n for n in self._runners if n not in keep] if names is None else [n for n in names if n in self._runners]
            for n in chosen:
                self._runners.pop(n).close()
        return chosen

    def run(self, name: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.runner(name).run(feeds)

    # -- GPU device handoff (issue 5) ----------------------------------------------------
    def _keep_features_on_device(self) -> None:
        """Backbone features are read only by other graphs: GPU backends keep them on the device.

        With tensorrt / ort-cuda / ort-trt / torch-on-CUDA, `encode_image` then returns
        `DeviceTensor`s that the detector and tracker graphs bind without a host round trip
        (~85 MB per FPN level at 1008 px). Host code that needs the values calls
        `backends.as_numpy(t)`. CPU backends ignore the request and return numpy arrays.
        """
        if self.backend.options.keep_on_device:
            self.runner(gc.IMAGE_BACKBONE).keep_outputs_on_device((*gc.DET_FPN, *gc.TRK_FEATURES))

    # -- text --------------------------------------------------------------------------
    def add_prompt_pack(self, pack: PromptPack) -> None:
        for key, emb in pack.embeddings().items():
            self.text_cache.put(key, emb, pin=True)
        log.info("prompt pack: %d prompts pinned in the text cache", len(pack.keys))

    def encode_new_prompts(self, prompts: Sequence[str], *, truncate: bool = False) -> list[TextEmbedding]:
        """Run the text encoder on `prompts` (no cache)."""
        ids, attn = self.tokenizer.encode(prompts, truncate=truncate)
        feats = self.run(gc.TEXT_ENCODER, {gc.INPUT_IDS: ids, gc.ATTENTION_MASK: attn})[gc.TEXT_FEATURES]
        return [TextEmbedding(np.ascontiguousarray(feats[i]), attn[i].astype(bool)) for i in range(len(prompts))]

    def text_batch(self, prompts: Sequence[str]) -> TextBatch:
        """Embeddings of `prompts`, from the cache where possible, the text encoder otherwise."""
        keys = [normalize_prompt(p) for p in prompts]
        found = {k: e for k in set(keys) if (e := self.text_cache.get(k)) is not None}
        missing = [k for k in dict.fromkeys(keys) if k not in found]
        if missing:
            for key, emb in zip(missing, self.encode_new_prompts(missing)):
                self.text_cache.put(key, emb)
                found[key] = emb
        return TextBatch(
            np.stack([found[k].features for k in keys]).astype(np.float32, copy=False),
            np.stack([found[k].mask for k in keys]),
        )

    # -- images ------------------------------------------------------------------------
    def encode_image(self, pixel_values: np.ndarray) -> dict[str, np.ndarray]:
        """Backbone features of one preprocessed image, computed once and shared by all stages."""
        return self.run(gc.IMAGE_BACKBONE, {gc.PIXEL_VALUES: pixel_values})

    def encode_images(self, pixel_values: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Backbone features of several preprocessed images, one (1, ...) dict per image.

        With an image batch axis (`manifest.image_batch_axis`) they go through the backbone in
        one call; an export with a fixed batch of 1 runs them one after the other. Features a
        GPU backend kept on the device come back to the host to be split by image.
        """
        if len(pixel_values) == 1 or not self.manifest.image_batch_axis:
            return [self.encode_image(p) for p in pixel_values]
        out = {k: as_numpy(v) for k, v in self.encode_image(np.concatenate(list(pixel_values), axis=0)).items()}
        return [{k: v[i : i + 1] for k, v in out.items()} for i in range(len(pixel_values))]

    def detect(self, features: Mapping[str, np.ndarray], text: TextBatch) -> dict[str, np.ndarray]:
        feeds = {name: features[name] for name in gc.DET_FPN}
        feeds[gc.TEXT_FEATURES] = text.features
        feeds[gc.TEXT_MASK] = text.mask
        return self.run(gc.DETECTOR, feeds)

    def close(self) -> None:
        with self._runner_lock:
            for r in self._runners.values():
                r.close()
            self._runners.clear()
