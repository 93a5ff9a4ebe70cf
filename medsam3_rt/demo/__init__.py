"""The bundled demo: a small SAM3 trained on real brain MRI, a sample slice and a sample volume.

    import medsam3_rt
    seg = medsam3_rt.load(medsam3_rt.demo_model_dir())     # the runtime only: no torch
    seg.segment(slice_png, ["brain", "lateral ventricle", "thalamus"])

`medsam3-rt demo` runs `run_demo`: it segments the sample slice (2D) and the sample volume
(the 3D path, slice by slice) with text prompts, writes overlays, label maps and a JSON
summary, and scores the masks against the atlas masks shipped next to the samples.

The model (`model/`, an ordinary export directory) was trained by
`training/recipes/demo_brain.py` on Colin27 T1 slices with atlas-derived concepts; its
held-out and second-source Dice are in `report.md` / `report.json` here, with a 3D table of
per-slice detection vs tracking on held-out slabs. Its tracker was trained by the recipe's
`tracker` stage on the frozen detector: the demo tracks the sample volume through the memory,
one prompt at a time, next to per-slice detection of the same slices (an export without
tracker graphs runs per-slice detection only, and says so). The
samples are held-out slices of the training subject, derived from Debian's mricron-data
(see `LICENSE.md`). Research use only: not a medical device.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError

DEMO_DIR = Path(__file__).resolve().parent
MODEL_DIR = DEMO_DIR / "model"
SAMPLES_DIR = DEMO_DIR / "samples"
REPORT_MD = DEMO_DIR / "report.md"
REPORT_JSON = DEMO_DIR / "report.json"
NO_TRACKER_NOTE = "the demo model has no tracker (it was not trained): every slice is segmented on its own (per-slice detection)"
TRACKED_NOTE = (
    "each prompt's top detection on the first slice is tracked through the memory (tracked rows), "
    "next to per-slice detection of the same slices (per-slice rows)"
)


def demo_model_dir() -> Path:
    """The bundled demo export directory (`medsam3_rt.load(demo_model_dir())`)."""
    if not (MODEL_DIR / "manifest.json").is_file():
        raise ModelError(f"the bundled demo model is missing from this installation ({MODEL_DIR}); reinstall medsam3-rt")
    return MODEL_DIR


def sample_info() -> dict[str, Any]:
    """What `samples/samples.json` says: files, prompts, provenance."""
    path = SAMPLES_DIR / "samples.json"
    if not path.is_file():
        raise ModelError(f"the demo samples are missing from this installation ({path}); reinstall medsam3-rt")
    return json.loads(path.read_text(encoding="utf-8"))


def report_summary() -> dict[str, Any] | None:
    """Held-out and second-source mean Dice of the demo model, from its report (None if absent)."""
    if not REPORT_JSON.is_file():
        return None
    rep = json.loads(REPORT_JSON.read_text(encoding="utf-8"))
    held = rep["heldout"]["predictors"]["exported"]["datasets"]
    second = rep["second_source"]["predictors"]["exported"]["datasets"]
    return {
        "heldout": {ds: d["dice"] for ds, d in held.items()},
        "second_source": {ds: d["dice"] for ds, d in second.items()},
    }


@dataclass(frozen=True)
class DemoRow:
    input: str
    kind: str  # "slice" | "volume" (tracked with a tracker, else per-slice) | "volume-detect" (per-slice, next to tracking)
    prompt: str
    score: float | None  # 2D: the detection score; 3D: None (per-slice scores vary)
    dice: float
    iou: float
    predicted: int  # pixels or voxels
    truth: int


@dataclass
class DemoResult:
    rows: list[DemoRow]
    files: list[Path]
    volume_mode: str
    text_encoder_runs: int
    cache_hits: int
    backend: str
    seconds: float
    timings_ms: dict[str, float] = field(default_factory=dict)


def _key(concept: str) -> str:
    return concept.replace(" ", "_")


def run_demo(output: str | Path, *, backend: str = "auto", threads: int | None = None, model_dir: str | Path | None = None) -> DemoResult:
    """Segment the sample slice and volume, write overlays into `output`, score against the atlas masks.

    With a tracker in the model, the volume is also segmented per slice, so the two modes are
    compared on the same slices. Files the demo writes in `output` are rewritten on every run.
    """
    import nibabel as nib

    from .. import load, metrics
    from ..io.atomic import atomic_path, atomic_write_text
    from ..io.images import read_image, write_png
    from ..io.volumes import read_nifti, write_label_volume
    from ..overlay import draw_overlay
    from ..preprocess import IntensityWindow
    from ..tracker.settings import StreamOptions

    t0 = time.perf_counter()
    info = sample_info()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    model_path = Path(model_dir) if model_dir is not None else demo_model_dir()
    seg = load(model_path, backend, threads=threads)
    rows: list[DemoRow] = []
    files: list[Path] = []
    try:
        # 2D: the sample slice, every prompt at once (masks may overlap: each is scored on its own)
        s = info["slice"]
        image = read_image(SAMPLES_DIR / s["image"])
        prompts = list(s["prompts"])
        res = seg.segment(image, prompts)
        stem = Path(s["image"]).stem
        for k, p in enumerate(prompts):
            truth = read_image(SAMPLES_DIR / s["masks"][p]) > 0
            rows.append(
                DemoRow(
                    s["image"],
                    "slice",
                    p,
                    float(res.scores[k]),
                    metrics.dice(res.masks[k], truth),
                    metrics.iou(res.masks[k], truth),
                    int(res.masks[k].sum()),
                    int(truth.sum()),
                )
            )
        for name, arr in ((f"{stem}.overlay.png", draw_overlay(image, res.label_map, prompts)), (f"{stem}.mask.png", res.label_map)):
            with atomic_path(out / name) as tmp:
                write_png(tmp, arr)
            files.append(out / name)

        # 3D: the sample volume through segment_volume; "auto" detects per slice when the export has no tracker
        v = info["volume"]
        vprompts = list(v["prompts"])
        window = IntensityWindow(*v["window"])
        vol_path = SAMPLES_DIR / v["image"]
        # per-slice detection keeps a prompt's mask from this threshold on (calibrated by the recipe on training slices)
        options = StreamOptions(detection_threshold=v["detection_threshold"]) if "detection_threshold" in v else None
        mode = "track" if seg.manifest.has_tracker else "detect"  # said in the summary, no warning needed
        vstem = v["image"].removesuffix(".nii.gz")
        truths = {p: np.asanyarray(nib.load(str(SAMPLES_DIR / v["masks"][p])).dataobj) > 0 for p in vprompts}
        if mode == "detect":
            vres = seg.segment_volume(vol_path, vprompts, axis=v["axis"], window=window, mode=mode, options=options)
            preds = {"volume": {p: vres.labels == k + 1 for k, p in enumerate(vprompts)}}
        else:
            # With a tracker, each prompt runs alone (the recipe's 3D protocol, `tracking` in
            # samples.json: its top detection on the first slice starts one object that the
            # memory carries), then per slice on the same slices for comparison.
            track = StreamOptions(**v["tracking"]) if "tracking" in v else options
            preds = {"volume": {}, "volume-detect": {}}
            labels: np.ndarray | None = None
            timings: dict[str, float] = {}
            for k, p in enumerate(vprompts):
                r = seg.segment_volume(vol_path, [p], axis=v["axis"], window=window, mode="track", options=track)
                preds["volume"][p] = r.labels == 1
                labels = np.zeros_like(r.labels) if labels is None else labels
                labels[(r.labels == 1) & (labels == 0)] = k + 1
                timings = {s: timings.get(s, 0.0) + ms for s, ms in r.timings_ms.items()}
                d = seg.segment_volume(vol_path, [p], axis=v["axis"], window=window, mode="detect", options=options)
                preds["volume-detect"][p] = d.labels == 1
            vres = replace(r, labels=labels, prompts=tuple(vprompts), timings_ms=timings)
        for kind, by_prompt in preds.items():
            for p in vprompts:
                truth, pred = truths[p], by_prompt[p]
                dice, iou = metrics.dice(pred, truth), metrics.iou(pred, truth)
                rows.append(DemoRow(v["image"], kind, p, None, dice, iou, int(pred.sum()), int(truth.sum())))
        volume = read_nifti(vol_path, v["axis"])
        labels_path = out / f"{vstem}.labels.nii.gz"
        write_label_volume(labels_path, vres.labels, volume)
        files.append(labels_path)
        picks = np.unique(np.linspace(0, volume.num_slices - 1, min(4, volume.num_slices)).round().astype(int))
        tiles = []
        for i in picks:
            idx: list[Any] = [slice(None)] * 3
            idx[volume.slice_axis] = int(i)
            tiles.append(draw_overlay(volume.slice(int(i)), volume.to_display(vres.labels[tuple(idx)]), vprompts, window=window))
        with atomic_path(out / f"{vstem}.overlay.png") as tmp:
            write_png(tmp, np.concatenate(tiles, axis=1))
        files.append(out / f"{vstem}.overlay.png")

        cache = seg.model.text_cache
        result = DemoResult(
            rows=rows,
            files=files,
            volume_mode=vres.mode,
            text_encoder_runs=cache.misses,
            cache_hits=cache.hits,
            backend=seg.backend_name,
            seconds=time.perf_counter() - t0,
            timings_ms={**{f"slice.{k}": v for k, v in res.timings_ms.items()}, **{f"volume.{k}": v for k, v in vres.timings_ms.items()}},
        )
        summary = {
            "model": str(model_path),
            "backend": result.backend,
            "volume_mode": result.volume_mode,
            "note": NO_TRACKER_NOTE if result.volume_mode != "tracker" else TRACKED_NOTE,
            "text_encoder_runs": result.text_encoder_runs,
            "prompt_cache_hits": result.cache_hits,
            "results": [r.__dict__ for r in rows],
            "samples": info,
            "seconds": round(result.seconds, 2),
            "timings_ms": {k: round(v, 1) for k, v in result.timings_ms.items()},
        }
        atomic_write_text(out / "demo.json", json.dumps(summary, indent=2))
        files.append(out / "demo.json")
        return result
    finally:
        seg.close()
