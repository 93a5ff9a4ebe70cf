"""What `medsam3-rt bench` measures: the `Candidate` interface, medsam3-rt backends as candidates, the registry.

Two kinds of candidate:

- every medsam3-rt backend (`RuntimeCandidate`), found through the runtime's backend registry,
  which includes backends other packages register in `medsam3_rt.backends` (the torch backend);
- baselines, registered by other packages in the `medsam3_bench.candidates` entry-point group
  (the transformers baseline of `medsam3_export.bench_baseline`). An entry names a `Candidate`
  class built as `cls(model_dir, manifest, checkpoint=..., threads=...)`; the group entry may
  name its extra (`... [export]`) for the message when it cannot load.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from medsam3_rt import graph_contract as gc
from medsam3_rt.backends import BackendOptions
from medsam3_rt.errors import MissingDependencyError, UsageError
from medsam3_rt.manifest import Manifest
from medsam3_rt.postprocess import sigmoid
from medsam3_rt.preprocess import pixel_values
from medsam3_rt.profiling import gpu_memory_used_bytes

from .memory import MeteredStopwatch, StageMemory

CANDIDATE_GROUP = "medsam3_bench.candidates"
BASELINE_NAME = "transformers"


@dataclass(frozen=True)
class StreamPolicy:
    """What both sides of a streaming comparison are told to do, so they do the same work.

    transformers' Sam3VideoModel runs detection NMS and hole filling only with an optional hub
    kernel (CUDA); without it both are skipped. The comparison switches them off on both sides.
    `max_objects` caps tracked objects on both sides; thresholds apply to both.
    """

    detection_threshold: float
    new_object_threshold: float
    max_objects: int
    nms: bool = False
    fill_holes: bool = False
    thresholds_from: str = "model"


@dataclass
class ImageOutput:
    masks: np.ndarray  # (P, H, W) bool
    scores: np.ndarray  # (P,)


@dataclass
class StreamOutput:
    label_map: np.ndarray  # (H, W) uint8
    objects: int  # tracked objects after this slice


# -- candidates -----------------------------------------------------------------------------
class StreamHandle(ABC):
    @abstractmethod
    def push(self, frame: np.ndarray) -> tuple[dict[str, float], StreamOutput]: ...

    @abstractmethod
    def tracker_step(self) -> tuple[float, dict[str, int]] | None:
        """Time one tracker step alone on the current memory (nothing is changed); None without objects."""

    def state_bytes(self) -> int | None:
        return None

    def close(self) -> None:  # noqa: B027 - optional
        pass


class Candidate(ABC):
    """One thing being measured: the baseline or one medsam3-rt backend."""

    name: str
    kind: str  # "baseline" | "medsam3-rt"
    memory: StageMemory | None = None  # set by the runner: stopwatch laps then record peak RSS per stage

    def stopwatch(self) -> MeteredStopwatch:
        """A stopwatch whose laps also record this candidate's peak RSS per stage."""
        return MeteredStopwatch(self.memory, self.name)

    @abstractmethod
    def load(self) -> None: ...

    @abstractmethod
    def describe(self) -> dict[str, Any]: ...

    @abstractmethod
    def detection_probs(self, image: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
        """(P, Q) detection probabilities (sigmoid(logit) x sigmoid(presence)) of one image."""

    @abstractmethod
    def text_miss(self, prompts: Sequence[str]) -> dict[str, float]:
        """Milliseconds of tokenize and text_encoder for `prompts` with nothing cached."""

    @abstractmethod
    def segment(self, image: np.ndarray, prompts: Sequence[str]) -> tuple[dict[str, float], ImageOutput]:
        """One 2D segmentation with the prompts' text embeddings cached; ms per stage."""

    @abstractmethod
    def stream(self, prompts: Sequence[str], hw: tuple[int, int], policy: StreamPolicy) -> StreamHandle: ...

    def gpu_memory_bytes(self) -> int | None:
        return gpu_memory_used_bytes()

    def close(self) -> None:  # noqa: B027 - optional
        pass


class RuntimeCandidate(Candidate):
    """medsam3-rt on one backend: `medsam3_rt.load(...)`, stage by stage as `Segmenter.segment` runs them."""

    kind = "medsam3-rt"

    def __init__(self, model_dir: Path, backend: str, options: BackendOptions, *, name: str | None = None, detect_every: int = 1) -> None:
        self.model_dir = model_dir
        self.name = name or backend
        self.backend = backend
        self.options = options
        self.detect_every = detect_every  # streams: the detector on every k-th slice (a bench variant's lever)
        self.variant = name is not None  # another export or stream setting, measured next to the main model
        self.seg: Any = None

    def load(self) -> None:
        from medsam3_rt.segmenter import load

        self.seg = load(self.model_dir, self.backend, options=self.options, verify="size")

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "backend": self.backend,
            "description": getattr(self.seg.model.backend, "description", self.backend) if self.seg else self.backend,
            "threads": self.options.intra_op_threads,
            **({"model_dir": str(self.model_dir), "detect_every": self.detect_every} if self.variant else {}),
        }

    def detection_probs(self, image: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
        m = self.seg.model
        out = m.detect(m.encode_image(pixel_values(image, m.manifest.preprocess)), m.text_batch(list(prompts)))
        return sigmoid(out[gc.PRED_LOGITS]) * sigmoid(out[gc.PRESENCE_LOGITS])

    def text_miss(self, prompts: Sequence[str]) -> dict[str, float]:
        m = self.seg.model
        sw = self.stopwatch()
        ids, attn = m.tokenizer.encode(list(prompts))
        sw.lap("tokenize")
        m.run(gc.TEXT_ENCODER, {gc.INPUT_IDS: ids, gc.ATTENTION_MASK: attn})
        sw.lap("text_encoder")
        return sw.ms

    def segment(self, image: np.ndarray, prompts: Sequence[str]) -> tuple[dict[str, float], ImageOutput]:
        seg, m = self.seg, self.seg.model
        sw = self.stopwatch()
        text = m.text_batch(list(prompts))
        sw.lap("text")
        pixels = pixel_values(image, m.manifest.preprocess)
        sw.lap("preprocess")
        sync = getattr(m.backend, "synchronize", None) or (lambda: None)  # GPU backends queue work: a lap must wait for it
        features = m.encode_image(pixels)
        sync()
        sw.lap("backbone")
        out = m.detect(features, text)
        sync()
        sw.lap("detector")
        res = seg._postprocess(list(prompts), out, image.shape[:2], 0.0)
        sw.lap("postprocess")
        return sw.ms, ImageOutput(res["masks"], res["scores"])

    def stream(self, prompts: Sequence[str], hw: tuple[int, int], policy: StreamPolicy) -> StreamHandle:
        from medsam3_rt.tracker.settings import StreamOptions

        opts = StreamOptions(
            nms=policy.nms,
            fill_holes=policy.fill_holes,
            max_objects=policy.max_objects,
            detection_threshold=policy.detection_threshold,
            new_object_threshold=policy.new_object_threshold,
            detect_every=self.detect_every,
        )
        return _RuntimeStream(self.seg.stream(list(prompts), options=opts))

    def close(self) -> None:
        if self.seg is not None:
            self.seg.close()
            self.seg = None


class _RuntimeStream(StreamHandle):
    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self._last: np.ndarray | None = None

    def push(self, frame: np.ndarray) -> tuple[dict[str, float], StreamOutput]:
        res = self.stream.push(frame)
        self._last = frame
        ms = {("merge_memory" if k == "merge+memory" else k): v for k, v in res.timings_ms.items()}
        return ms, StreamOutput(res.label_map, self.stream.num_objects)

    def tracker_step(self) -> tuple[float, dict[str, int]] | None:
        from medsam3_rt.tracker.memory import gather

        st = self.stream
        tracks = list(st._tracks.values())
        if not tracks or self._last is None:
            return None
        m = st.model
        feats = m.encode_image(pixel_values(self._last, m.manifest.preprocess, st.window))
        trk = {k: feats[k] for k in gc.TRK_FEATURES}
        s = st.settings
        t0 = time.perf_counter()
        feeds = gather(
            tracks,
            st.frame_index,
            num_maskmem=s.num_maskmem,
            max_pointers=s.max_object_pointers_in_encoder,
            hw=st._hw,
            mem_dim=st._mem,
            channels=st._c,
            selection=st.memory_selection,  # the frames the stream itself reads (Meta's selection on meta exports)
        )
        m.run(gc.TRACKER_STEP, {**trk, **feeds})
        ms = (time.perf_counter() - t0) * 1e3
        n, mm = feeds[gc.MEM_FEATS].shape[:2]
        return ms, {"objects": int(n), "memories": int(mm), "pointers": int(feeds[gc.OBJ_PTRS].shape[1])}

    def state_bytes(self) -> int | None:
        return int(self.stream.state_nbytes())


def registered_candidates() -> dict[str, metadata.EntryPoint]:
    """Baselines other packages register (metadata only: nothing is imported)."""
    return {ep.name: ep for ep in metadata.entry_points(group=CANDIDATE_GROUP)}


def load_baseline(
    name: str, model_dir: Path, manifest: Manifest, *, checkpoint: Path | None, threads: int, device: str = "auto"
) -> Candidate:
    """Build the registered baseline `name`; a missing package or extra is a `MissingDependencyError`.

    `device` ("auto", "cpu", "cuda", "cuda:N") goes to candidates that take one: on a GPU machine
    the fair baseline is the eager model on that GPU, not on the host's cores.
    """
    ep = registered_candidates().get(name)
    if ep is None:
        raise MissingDependencyError(f"no bench candidate '{name}' is installed (the full install registers '{BASELINE_NAME}')")
    extra = ep.extras[0] if ep.extras else "export"
    try:
        cls = ep.load()
    except ImportError as e:
        raise MissingDependencyError(
            f"the {name} baseline needs the '{extra}' extra ({e.name or e} is not installed): pip install 'medsam3-rt[{extra}]'"
        ) from None
    if device != "auto":
        return cls(model_dir, manifest, checkpoint=checkpoint, threads=threads, device=device)
    return cls(model_dir, manifest, checkpoint=checkpoint, threads=threads)


def expand_backends(names: Sequence[str], manifest: Manifest) -> list[str]:
    """`available` -> every backend that runs here, those of other packages (torch) included when they load."""
    from medsam3_rt.backends import BACKENDS, backend_class, plugin_backends

    out: list[str] = []
    for name in names:
        if name != "available":
            out.append(name)
            continue
        for cand, cls in BACKENDS.items():
            if cls.probe().ok and cls.supports(manifest).ok:
                out.append(cand)
        for cand in plugin_backends():
            try:
                if backend_class(cand) is not None:
                    out.append(cand)
            except Exception:  # a plugin whose package or extra is missing is simply not available here
                continue
    return list(dict.fromkeys(out))


__all__ = [
    "BASELINE_NAME",
    "CANDIDATE_GROUP",
    "Candidate",
    "ImageOutput",
    "RuntimeCandidate",
    "StreamHandle",
    "StreamOutput",
    "StreamPolicy",
    "UsageError",
    "expand_backends",
    "load_baseline",
    "registered_candidates",
]
