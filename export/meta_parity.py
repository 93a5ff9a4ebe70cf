"""The exported graphs vs Meta's own code (`export --parity-reference meta|both`).

Why a second reference: transformers is the PyTorch definition the graphs are traced from, so
comparing with it proves the export, not the model; Meta's `sam3` package is what the model's
authors run. Covered graphs: text encoder, image backbone (detector FPN levels and, for a video
checkpoint, the tracker's features), detector (only with Meta's prompt semantics: with
`--prompt-semantics transformers` the detector differs from Meta's by design, and the report
says so). Tracker graphs keep the transformers reference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medsam3_rt import graph_contract as gc
from medsam3_rt.backends.ort import OrtCpuBackend
from medsam3_rt.errors import MissingDependencyError, UsageError
from medsam3_rt.manifest import GraphEntry

from . import parity
from .checkpoint import LoadedCheckpoint, read_state_dict
from .meta_code import MetaGeometry, load_meta_image_model, meta_reference_outputs, meta_unavailable_reason, meta_version

COVERED = (gc.TEXT_ENCODER, gc.IMAGE_BACKBONE, gc.DETECTOR)
TEXT_VALID = "text_valid_tokens"  # which tokens are real (not padding): Meta's tokenizer vs ours


@dataclass
class MetaParity:
    reference: str  # "Meta's sam3 <version>", on every row compared with Meta's code
    detail: str = "build_sam3_image_model with the checkpoint's weights, fp32, CPU"
    results: list[parity.OutputParity] = field(default_factory=list)
    graphs: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # graph -> why it was not compared with Meta's code


def check_meta_reference(source: object, ckpt: LoadedCheckpoint | None = None) -> None:
    """Fail fast (before a long export) when Meta's code cannot be the reference."""
    reason = meta_unavailable_reason()
    if reason is not None:
        raise MissingDependencyError(f"--parity-reference meta: {reason}")
    if not isinstance(source, (str, Path)) or not Path(source).is_file():
        raise UsageError("--parity-reference meta needs Meta's sam3.pt file as the checkpoint (Meta's code cannot load other formats)")
    if ckpt is not None and ckpt.source.get("format") != "sam3.pt":
        raise UsageError(f"--parity-reference meta needs a checkpoint in Meta's sam3.pt layout; '{source}' is {ckpt.source.get('format')}")


def meta_parity(
    source: str | Path,
    ckpt: LoadedCheckpoint,
    stage: Path,
    graphs: Mapping[str, GraphEntry],
    pixels: np.ndarray,
    ids: np.ndarray,
    attn: np.ndarray,
    *,
    prompts: tuple[str, ...],
    prompt_semantics: str,
    tolerance: parity.Tolerance,
    say: Callable[[str], None],
) -> MetaParity:
    """Build Meta's model from `source`, run it, and compare the written graphs in `stage`."""
    check_meta_reference(source, ckpt)
    out = MetaParity(f"Meta's sam3 {meta_version()}")
    with_tracker = gc.TRACKER_STEP in graphs
    geometry = MetaGeometry.from_config(ckpt.detector.config)
    say(f"building the parity reference with {out.reference}")
    state = read_state_dict(Path(source))
    if not any(k.startswith("detector.") for k in state):  # an image model's state dict: Meta's loader wants the prefix
        state = {f"detector.{k}": v for k, v in state.items()}
    model = load_meta_image_model(state, geometry, with_tracker=with_tracker)
    del state
    detector = prompt_semantics == "meta"
    if not detector:
        out.skipped[gc.DETECTOR] = "prompt semantics 'transformers' differ from Meta's text-only path by design"
    say("running Meta's reference")
    valid = attn.astype(bool)
    inputs, refs = meta_reference_outputs(model, pixels[:1], prompts, valid, with_tracker=with_tracker, detector=detector)
    del model
    backend = OrtCpuBackend()

    def run(name: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        runner = backend.open(graphs[name], stage)
        try:
            return runner.run(dict(feeds))
        finally:
            runner.close()

    text = run(gc.TEXT_ENCODER, {gc.INPUT_IDS: ids, gc.ATTENTION_MASK: attn})
    got = {
        gc.TEXT_ENCODER: {gc.TEXT_FEATURES: text[gc.TEXT_FEATURES] * valid[..., None], TEXT_VALID: valid.astype(np.float32)},
        gc.IMAGE_BACKBONE: run(gc.IMAGE_BACKBONE, {gc.PIXEL_VALUES: pixels[:1]}),
    }
    if detector:
        got[gc.DETECTOR] = run(gc.DETECTOR, inputs[gc.DETECTOR])
    for name in COVERED:
        if name in refs:
            out.results += parity.compare(name, refs[name], {k: got[name][k] for k in refs[name]}, tolerance, reference=out.reference)
            out.graphs.append(name)
    return out
