"""Recover a detector's PyTorch weights from its ONNX export (issue 16).

The bundled demo model ships as ONNX only; its PyTorch checkpoint was not kept. To train a
tracker on top of that exact detector (instead of retraining it, which costs an hour and
changes its 2D scores), its weights are read back from the graphs:

- an initializer named after a parameter (`detector.<key>`) is that parameter;
- the others (the exporter stores Linear weights transposed, under generated names) are
  identified by exporting a *reference* model of the same architecture whose weights are
  known and pairwise distinct (`distinct_weights`: the exporter merges initializers of equal
  value, so a fresh initialisation, whose LayerNorms are all ones, would not name them all):
  in the reference export, each such initializer equals exactly one parameter, as it is,
  transposed or reshaped. The target export has the same graph (same initializer names and
  shapes, checked), so the same initializer holds the same parameter there.

Parameters the graphs do not contain (modules an exported text-prompted detector never runs:
the geometry encoder, the unused FPN level, the text projection) keep the reference model's
values, which is what training leaves them at when they receive no gradient. The result is
checked by exporting the recovered model again and comparing every initializer with the
target (`compare_exports`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medsam3_rt.errors import InputError

GRAPHS = ("image_backbone", "text_encoder", "detector")
PREFIX = "detector."


@dataclass
class Recovery:
    """What was recovered: parameter -> (graph, initializer), and parameters no graph holds."""

    sources: dict[str, tuple[str, str]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


def _initializers(path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))  # external data (if any) next to the graph loads with it
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _identify(x: np.ndarray, params: dict[str, np.ndarray], by_size: dict[int, list[str]]) -> list[tuple[str, str]]:
    """Every (parameter, transform) whose value equals `x` exactly."""
    hits = []
    for key in by_size.get(x.size, []):
        p = params[key]
        if p.shape == x.shape and np.array_equal(p, x):
            hits.append((key, "same"))
        elif p.ndim == 2 and p.T.shape == x.shape and np.array_equal(p.T, x):
            hits.append((key, "transposed"))
        elif np.array_equal(p.reshape(-1), x.reshape(-1)):
            hits.append((key, "reshaped"))
    return hits


def distinct_weights(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A copy of `model` whose every floating-point parameter and buffer is fresh Gaussian noise (no two alike)."""
    import copy

    ref = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in ref.state_dict().values():
            if t.is_floating_point():
                t.copy_(0.05 * torch.randn(t.shape, generator=gen, dtype=torch.float32).to(t.dtype))
    return ref


def recover_state_dict(
    reference: torch.nn.Module, reference_export: Path, target_export: Path, base: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], Recovery]:
    """`base` (a state dict of the architecture) with every parameter the target export holds replaced by its value there.

    `reference_export` must be an export of `reference` (`distinct_weights`), made by the same
    exporter as the target's graphs (same initializer names and shapes; checked).
    """
    state = {k: v.detach().clone() for k, v in base.items()}
    params = {k: v.detach().cpu().numpy() for k, v in reference.state_dict().items()}
    by_size: dict[int, list[str]] = {}
    for k, v in params.items():
        by_size.setdefault(v.size, []).append(k)
    rec = Recovery()
    for graph in GRAPHS:
        ref = _initializers(Path(reference_export) / f"{graph}.onnx")
        tgt = _initializers(Path(target_export) / f"{graph}.onnx")
        if {k: v.shape for k, v in ref.items()} != {k: v.shape for k, v in tgt.items()}:
            raise InputError(
                f"{graph}.onnx: the reference export's initializers differ from the target's "
                "(another exporter version or architecture); the weights cannot be matched"
            )
        for name, x in ref.items():
            if x.dtype != np.float32:
                continue
            key = name[len(PREFIX) :] if name.startswith(PREFIX) and name[len(PREFIX) :] in params else None
            if key is None and x.size <= 1:
                continue  # a scalar constant: too small to identify by value
            hits = [(key, "same")] if key is not None else _identify(x, params, by_size)
            if not hits:
                continue  # a constant the exporter computed (positional encodings, RoPE tables)
            keys = {k for k, _ in hits}
            if len(keys) > 1:
                raise InputError(f"{graph}.onnx: initializer {name} matches several parameters ({sorted(keys)[:3]}...)")
            key, how = hits[0]
            value = tgt[name]
            value = value.T if how == "transposed" else value.reshape(params[key].shape)
            previous = rec.sources.get(key)
            if previous is not None and not torch.equal(state[key], torch.from_numpy(np.array(value, copy=True))):
                raise InputError(f"parameter {key} differs between {previous} and {(graph, name)} in the target export")
            state[key] = torch.from_numpy(np.array(value, copy=True)).to(state[key].dtype)
            rec.sources[key] = (graph, name)
    rec.missing = [k for k, v in params.items() if k not in rec.sources and v.dtype.kind == "f"]
    return state, rec


def compare_exports(a: Path, b: Path) -> float:
    """Largest absolute difference between the float initializers of two exports' detector graphs (same names)."""
    worst = 0.0
    for graph in GRAPHS:
        x, y = _initializers(Path(a) / f"{graph}.onnx"), _initializers(Path(b) / f"{graph}.onnx")
        if x.keys() != y.keys():
            raise InputError(f"{graph}.onnx: the two exports have different initializers")
        for name, v in x.items():
            if v.dtype.kind == "f" and v.size:
                worst = max(worst, float(np.max(np.abs(v.astype(np.float64) - y[name].astype(np.float64)))))
    return worst


__all__ = ["GRAPHS", "Recovery", "compare_exports", "distinct_weights", "recover_state_dict"]
