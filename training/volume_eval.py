"""3D evaluation: per-slice detection vs tracking through the memory, on held-out slabs (issue 16).

A slab is a stack of neighbouring slices (a held-out block of the image split, or a whole
unseen scan) with one reference mask per concept. Each concept is segmented on its own (one
text prompt) by the exported model through the runtime's volume path, three ways:

    per-slice detection      every slice on its own (`mode="detect"`)
    forward tracking         detector + tracker memory from the first slice on (`mode="track"`)
    bidirectional tracking   from the most confident slice towards both ends (`bidirectional=True`)

and scored in 3D: Dice over the slab's voxels; inter-slice consistency (mean Dice between
the masks of neighbouring slices, next to the reference's own value: anatomy changes from
slice to slice too); the number of 3D connected components (26-connectivity) next to the
reference's; and wall-clock milliseconds per slice (a bidirectional run includes its
detector scan for the anchor slice). Per concept, slab values are averaged over the slabs
where the reference shows the concept.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MODES: dict[str, tuple[str, bool]] = {
    "per-slice detection": ("detect", False),
    "forward tracking": ("track", False),
    "bidirectional tracking": ("track", True),
}


@dataclass(frozen=True)
class Slab:
    """Neighbouring slices (n, H, W) uint8 and each concept's reference mask (n, H, W) bool."""

    dataset: str
    name: str
    image: np.ndarray
    truths: dict[str, np.ndarray]


def dice3d(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice over all voxels; nan when both are empty (nothing to score)."""
    total = int(pred.sum()) + int(truth.sum())
    return float("nan") if total == 0 else 2.0 * int(np.logical_and(pred, truth).sum()) / total


def neighbour_dice(mask: np.ndarray) -> float:
    """Mean Dice between the masks of neighbouring slices (pairs where either shows something); nan if none."""
    vals = [dice3d(mask[i], mask[i + 1]) for i in range(len(mask) - 1)]
    vals = [v for v in vals if not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def components3d(mask: np.ndarray) -> int:
    """Connected components of a 3D mask (26-connectivity)."""
    from scipy import ndimage as ndi

    return int(ndi.label(mask, structure=np.ones((3, 3, 3), bool))[1])


def _mean(xs: Sequence[float]) -> float | None:
    vals = [x for x in xs if not math.isnan(x)]
    return float(np.mean(vals)) if vals else None


def evaluate_slabs(
    model_dir: str | Path,
    slabs: Sequence[Slab],
    *,
    concepts: Sequence[str] | None = None,
    detect_options: Any = None,
    track_options: Any = None,
    backend: str = "ort-cpu",
    threads: int | None = 1,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Score every mode on every slab and concept (see the module docstring); plain data for a report.

    `detect_options` / `track_options` are the `StreamOptions` of per-slice detection and of
    tracking. An export without tracker graphs is scored per slice only (`tracker: false`).
    """
    import medsam3_rt

    seg = medsam3_rt.load(model_dir, backend, threads=threads)
    has_tracker = seg.manifest.has_tracker
    modes = {k: v for k, v in MODES.items() if has_tracker or v[0] == "detect"}
    per: dict[str, dict[str, dict[str, Any]]] = {}  # dataset -> concept -> accumulators
    names: dict[str, list[str]] = {}
    slices: dict[str, int] = {}
    try:
        for slab in slabs:
            names.setdefault(slab.dataset, []).append(slab.name)
            slices[slab.dataset] = slices.get(slab.dataset, 0) + len(slab.image)
            for concept, truth in slab.truths.items():
                if (concepts is not None and concept not in concepts) or not truth.any():
                    continue
                acc = per.setdefault(slab.dataset, {}).setdefault(
                    concept, {"slabs": 0, "ref_consistency": [], "ref_components": [], "modes": {m: {} for m in modes}}
                )
                acc["slabs"] += 1
                acc["ref_consistency"].append(neighbour_dice(truth))
                acc["ref_components"].append(components3d(truth))
                for mode, (how, bidirectional) in modes.items():
                    options = detect_options if how == "detect" else track_options
                    t0 = time.perf_counter()
                    res = seg.segment_volume(slab.image, [concept], window=(0, 255), mode=how, bidirectional=bidirectional, options=options)
                    ms = 1000 * (time.perf_counter() - t0) / len(slab.image)
                    pred = res.labels == 1
                    m = acc["modes"][mode]
                    for key, value in (
                        ("dice", dice3d(pred, truth)),
                        ("consistency", neighbour_dice(pred)),
                        ("components", components3d(pred)),
                        ("ms_per_slice", ms),
                    ):
                        m.setdefault(key, []).append(float(value))
                if progress is not None:
                    progress(f"{slab.dataset} / {slab.name} / {concept}")
    finally:
        seg.close()
    out: dict[str, Any] = {"tracker": has_tracker, "modes": list(modes), "datasets": {}}
    for ds, by_concept in per.items():
        rows = {}
        for concept, acc in by_concept.items():
            rows[concept] = {
                "slabs": acc["slabs"],
                "reference": {"consistency": _mean(acc["ref_consistency"]), "components": _mean(acc["ref_components"])},
                "modes": {mode: {k: _mean(v) for k, v in m.items()} for mode, m in acc["modes"].items()},
            }
        summary = {mode: _mean([r["modes"][mode]["dice"] for r in rows.values() if r["modes"][mode]["dice"] is not None]) for mode in modes}
        wins = {
            mode: sum(
                1
                for r in rows.values()
                if r["modes"][mode]["dice"] is not None and r["modes"][mode]["dice"] > (r["modes"]["per-slice detection"]["dice"] or 0.0)
            )
            for mode in modes
            if mode != "per-slice detection"
        }
        out["datasets"][ds] = {"slabs": names[ds], "slices": slices[ds], "concepts": rows, "mean_dice": summary, "beats_per_slice": wins}
    return out


def markdown_3d(result: dict[str, Any], title: str) -> list[str]:
    """The 3D table(s) as markdown lines: one row per concept, Dice / consistency / components / ms per mode."""

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}"

    def num(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.1f}"

    modes = result["modes"]
    short = {"per-slice detection": "per-slice", "forward tracking": "forward", "bidirectional tracking": "bidirectional"}
    lines: list[str] = []
    for ds, d in result["datasets"].items():
        lines += [f"### {title}: {ds}, {len(d['slabs'])} slab(s), {d['slices']} slices", ""]
        head = ["concept", "slabs"]
        head += [f"Dice {short[m]}" for m in modes]
        head += ["consistency ref"] + [f"consistency {short[m]}" for m in modes]
        head += ["components ref"] + [f"components {short[m]}" for m in modes]
        head += [f"ms/slice {short[m]}" for m in modes]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for concept, r in d["concepts"].items():
            dices = {m: r["modes"][m]["dice"] for m in modes}
            best = max((v for v in dices.values() if v is not None), default=None)
            cells = [concept, str(r["slabs"])]
            cells += [f"**{pct(v)}**" if v is not None and v == best else pct(v) for v in dices.values()]
            cells += [pct(r["reference"]["consistency"])] + [pct(r["modes"][m]["consistency"]) for m in modes]
            cells += [num(r["reference"]["components"])] + [num(r["modes"][m]["components"]) for m in modes]
            cells += [f"{r['modes'][m]['ms_per_slice']:.0f}" for m in modes]
            lines.append("| " + " | ".join(cells) + " |")
        means = d["mean_dice"]
        lines.append("| **mean** | | " + " | ".join(pct(means[m]) for m in modes) + " |" + " |" * (len(head) - 2 - len(modes)))
        lines.append("")
        if d["beats_per_slice"]:
            n = len(d["concepts"])
            said = "; ".join(f"{m} beats per-slice detection on {k} of {n} concept(s)" for m, k in d["beats_per_slice"].items())
            lines += [f"Dice: {said}.", ""]
    return lines
