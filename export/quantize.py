"""Static int8 quantisation of an export, calibrated on the user's images and gated by Dice.

`medsam3-rt quantize MODEL_DIR CALIB_DIR --output OUT` splits CALIB_DIR into a calibration part
and a hold-out part and quantises the image backbone and/or the detector:

- `--engine ort`: ONNX Runtime static QDQ (U8 activations, S8 per-channel weights; MinMax,
  Percentile or Entropy ranges), written as ONNX: every backend that reads ONNX runs it;
- `--engine openvino`: NNCF's post-training quantisation of the OpenVINO model (smooth-quant,
  OpenVINO's own quantiser placement), written as OpenVINO IR (`.xml` + `.bin`): the
  `openvino` backend runs it, ONNX Runtime cannot.

The backbone is calibrated on the calibration images, the detector on the fp32 backbone's
features of the same images and the prompts' text embeddings (`quantize_calib`). Only
MatMul/Conv/Gemm with a weight are quantised; the detector's score and box heads stay fp32
(`quantize_scopes`). Each quantised graph gets an error report (max |int8 - fp32| per output on
the hold-out inputs) and a speed report (fp32 vs int8, interleaved runs on the engine). Then the
hold-out images are segmented with the fp32 export and the int8 candidate on the same engine and
the masks compared per prompt (Dice). When the drop exceeds the bound nothing is written;
otherwise the candidate, built in a temp folder next to OUT, is renamed into place in one step.

Without `--graphs`, the graphs whose int8 runs faster than fp32 here are quantised, and if
that set fails the gate, the largest passing subset by time saved is taken.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from medsam3_rt import graph_contract as gc
from medsam3_rt.errors import AccuracyGateError, InputError, OutputExistsError, UsageError
from medsam3_rt.io.images import list_images, read_image
from medsam3_rt.manifest import MANIFEST_NAME, load_manifest

from .accuracy import DEFAULT_PROMPTS, GateReport, MaskPair, gate, output_deltas
from .manifest_writer import file_entry
from .quantize_calib import Feeds, graph_feeds
from .quantize_ort import METHODS, OrtRecipe, quantize_onnx
from .quantize_scopes import DEFAULT_KEEP_FP32, QUANTISED_OPS, activation_matmuls, nodes_to_keep_fp32, quantisable_nodes

DEFAULT_MAX_DICE_DROP = 1.0  # points
ENGINES = ("ort", "openvino")
BACKEND_OF_ENGINE = {"ort": "ort-cpu", "openvino": "openvino"}
GRAPH_NAMES = {"backbone": gc.IMAGE_BACKBONE, gc.IMAGE_BACKBONE: gc.IMAGE_BACKBONE, "detector": gc.DETECTOR}
QUANTISABLE = (gc.IMAGE_BACKBONE, gc.DETECTOR)
TIMING_ROUNDS = 5


@dataclass(frozen=True)
class QuantizeOptions:
    prompts: tuple[str, ...] = ()
    holdout: float = 0.25  # fraction of CALIB_DIR kept out of calibration for the gate
    max_dice_drop: float = DEFAULT_MAX_DICE_DROP
    overwrite: bool = False
    threads: int | None = None
    graphs: tuple[str, ...] = ()  # () = automatic: what measures best within the gate
    engine: str = "ort"
    method: str = "minmax"  # ort engine: activation range calibration
    per_channel: bool = True
    keep_fp32: tuple[str, ...] | None = None  # module-path fragments kept fp32; None = DEFAULT_KEEP_FP32


@dataclass(frozen=True)
class GraphReport:
    """One quantised graph: how far its outputs move and how its speed changes, on this engine."""

    graph: str
    errors: dict[str, float]
    fp32_ms: float
    int8_ms: float
    quantised_nodes: int
    kept_fp32_nodes: int

    @property
    def worst_rel(self) -> float:
        return max((v for k, v in self.errors.items() if k.endswith(".max_rel")), default=0.0)

    @property
    def speed_ratio(self) -> float:
        return self.int8_ms / max(self.fp32_ms, 1e-9)

    def to_json(self) -> dict[str, Any]:
        return {
            "errors": self.errors,
            "fp32_ms": self.fp32_ms,
            "int8_ms": self.int8_ms,
            "int8_over_fp32": self.speed_ratio,
            "quantised_nodes": self.quantised_nodes,
            "kept_fp32_nodes": self.kept_fp32_nodes,
        }


@dataclass(frozen=True)
class QuantizeResult:
    output: Path
    report: GateReport
    graphs: tuple[str, ...]
    graph_reports: dict[str, GraphReport]
    per_prompt_dice: dict[str, float]
    tried: list[dict[str, Any]] = field(default_factory=list)

    @property
    def graph_errors(self) -> dict[str, dict[str, float]]:
        return {g: r.errors for g, r in self.graph_reports.items()}


def split_calibration(calib_dir: Path, holdout: float) -> tuple[list[Path], list[Path]]:
    """Calibration images and hold-out images (deterministic: every k-th image is held out)."""
    if not calib_dir.is_dir():
        raise InputError(f"{calib_dir}: calibration folder not found")
    images = list_images(calib_dir)
    if len(images) < 2:
        raise InputError(f"{calib_dir}: needs at least 2 images (calibration + hold-out), found {len(images)}")
    if not 0.0 < holdout < 1.0:
        raise InputError(f"--holdout must be between 0 and 1, got {holdout}")
    n_hold = min(len(images) - 1, max(1, round(len(images) * holdout)))
    step = len(images) / n_hold
    hold_idx = {int(i * step) for i in range(n_hold)}
    calib = [p for i, p in enumerate(images) if i not in hold_idx]
    held = [p for i, p in enumerate(images) if i in hold_idx]
    return calib, held


def default_prompts(model_dir: Path) -> tuple[str, ...]:
    """Prompts of the export's prompt packs (what the model is deployed for), else the gate's defaults."""
    from medsam3_rt.model import PROMPT_PACK_DIR
    from medsam3_rt.prompt_pack import SUFFIX, read_prompt_pack

    prompts: list[str] = []
    for pack in sorted((model_dir / PROMPT_PACK_DIR).glob(f"*{SUFFIX}")):
        prompts += [p for p in read_prompt_pack(pack).prompts if p not in prompts]
    return tuple(prompts) or DEFAULT_PROMPTS


def parse_graphs(names: Sequence[str]) -> tuple[str, ...]:
    """`backbone,detector` (or repeated options) -> contract graph names, in pipeline order."""
    wanted: set[str] = set()
    for item in names:
        for name in filter(None, (s.strip() for s in item.split(","))):
            if name not in GRAPH_NAMES:
                raise UsageError(f"--graphs: '{name}' is not one of backbone, detector")
            wanted.add(GRAPH_NAMES[name])
    return tuple(g for g in QUANTISABLE if g in wanted)


def _check_options(options: QuantizeOptions) -> None:
    if options.max_dice_drop < 0:
        raise InputError(f"--max-dice-drop must be >= 0, got {options.max_dice_drop}")
    if options.engine not in ENGINES:
        raise UsageError(f"--engine '{options.engine}' is not one of {', '.join(ENGINES)}")
    if options.method not in METHODS:
        raise UsageError(f"--method '{options.method}' is not one of {', '.join(METHODS)}")
    if options.engine == "openvino" and (options.method != "minmax" or not options.per_channel):
        raise UsageError("--method and --per-tensor apply to --engine ort; NNCF chooses its own ranges")
    for g in options.graphs:
        if g not in QUANTISABLE:
            raise UsageError(f"graph '{g}' cannot be quantised (only {', '.join(QUANTISABLE)})")


def _replace_graph(out: Path, name: str, new_file: Path) -> None:
    """Swap one graph of the export copy `out` for `new_file` (+ its .data / .bin), refreshing file hashes."""
    man_path = out / MANIFEST_NAME
    data = json.loads(man_path.read_text())
    entry = data["graphs"][name]
    for f in [entry["file"], *entry.get("external_data", [])]:
        (out / f).unlink(missing_ok=True)
        data["files"].pop(f, None)
    entry["file"] = new_file.name
    shutil.copy(new_file, out / entry["file"])
    externals = []
    for extra in (new_file.parent / (new_file.name + ".data"), new_file.with_suffix(".bin")):
        if extra.is_file():
            externals.append(extra.name)
            shutil.copy(extra, out / extra.name)
    entry["external_data"] = externals
    for f in [entry["file"], *externals]:
        fe = file_entry(out, f)
        data["files"][f] = {"sha256": fe.sha256, "bytes": fe.bytes}
    man_path.write_text(json.dumps(data, indent=2))


def _record(out: Path, info: dict[str, Any]) -> None:
    man_path = out / MANIFEST_NAME
    data = json.loads(man_path.read_text())
    data["quantization"] = info
    man_path.write_text(json.dumps(data, indent=2))


def _quantize_graph(src: Path, name: str, feeds: Sequence[Feeds], options: QuantizeOptions, work: Path) -> tuple[Path, int]:
    """The int8 file of one graph in `work`, and how many quantisable nodes were kept fp32."""
    fragments = DEFAULT_KEEP_FP32.get(name, ()) if options.keep_fp32 is None else options.keep_fp32
    keep = list(dict.fromkeys(nodes_to_keep_fp32(src, fragments) + activation_matmuls(src)))
    if options.engine == "openvino":
        from .quantize_nncf import quantize_openvino

        dst = work / f"{src.stem}.int8.xml"
        quantize_openvino(src, dst, feeds, keep)
    else:
        dst = work / f"{src.stem}.int8.onnx"
        quantize_onnx(src, dst, feeds, OrtRecipe(options.method, options.per_channel), keep, work)
    return dst, len(keep)


def _candidate(src: Path, tmp: Path, files: dict[str, Path], graphs: Sequence[str]) -> Path:
    """A copy of the export with `graphs` replaced by their int8 files."""
    d = tmp / ("model-" + "-".join(graphs))
    if not d.exists():
        shutil.copytree(src, d)
        for g in graphs:
            _replace_graph(d, g, files[g])
    return d


def _median_ms(fn: Callable[[], Any], rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append(1e3 * (time.perf_counter() - t0))
    return out


def graph_report(
    reference: Any, candidate: Any, name: str, feeds: Sequence[Feeds], rounds: int = TIMING_ROUNDS
) -> tuple[dict[str, float], float, float]:
    """Worst per-output error over `feeds` and interleaved median times of one graph (Model objects)."""
    errors: dict[str, float] = {}
    for f in feeds:
        ref = {k: np.asarray(v) for k, v in reference.run(name, f).items()}
        new = {k: np.asarray(v) for k, v in candidate.run(name, f).items()}
        for k, v in output_deltas(ref, new).items():
            errors[k] = max(errors.get(k, 0.0), v)
    ref_ms: list[float] = []
    new_ms: list[float] = []
    for _ in range(rounds):  # interleaved, so load from other processes hits both alike
        ref_ms += _median_ms(lambda: reference.run(name, feeds[0]), 1)
        new_ms += _median_ms(lambda: candidate.run(name, feeds[0]), 1)
    return errors, float(np.median(ref_ms)), float(np.median(new_ms))


def _pairs(reference: list[Any], candidate: Any, images: Sequence[tuple[str, np.ndarray]], prompts: Sequence[str]) -> list[MaskPair]:
    pairs = []
    for (name, image), ref in zip(images, reference, strict=True):
        new = candidate.segment(image, list(prompts))
        pairs += [MaskPair(name, p, ref.masks[k], new.masks[k]) for k, p in enumerate(prompts)]
    return pairs


def _per_prompt(pairs: Sequence[MaskPair], prompts: Sequence[str]) -> dict[str, float]:
    from medsam3_rt.metrics import dice

    return {p: float(np.mean([dice(m.candidate, m.reference) for m in pairs if m.prompt == p])) for p in prompts}


def _subsets(reports: dict[str, GraphReport], explicit: bool) -> list[tuple[str, ...]]:
    """Graph sets to gate, best first: explicit -> exactly that; auto -> faster graphs, largest saving first."""
    names = tuple(g for g in QUANTISABLE if g in reports)
    if explicit:
        return [names]
    faster = [g for g in names if reports[g].speed_ratio < 1.0]
    saving = {g: reports[g].fp32_ms - reports[g].int8_ms for g in faster}
    subsets = [s for k in range(len(faster), 0, -1) for s in combinations(faster, k)]
    subsets.sort(key=lambda s: (-len(s), -sum(saving[g] for g in s)))
    return [tuple(g for g in QUANTISABLE if g in s) for s in subsets]


def quantize_export(
    model_dir: str | os.PathLike[str],
    calib_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: QuantizeOptions = QuantizeOptions(),
    progress: Callable[[str], None] = lambda _m: None,
) -> QuantizeResult:
    """Quantise, gate, and (only if the gate passes) write OUT atomically."""
    import medsam3_rt

    src, out = Path(model_dir), Path(output)
    if out.exists() and not options.overwrite:
        raise OutputExistsError(f"{out} exists (use --force to replace it)")
    _check_options(options)
    man = load_manifest(src, verify="hash")
    calib, held = split_calibration(Path(calib_dir), options.holdout)
    prompts = options.prompts or default_prompts(src)
    backend = BACKEND_OF_ENGINE[options.engine]
    if options.engine == "openvino":
        from .quantize_nncf import require_nncf

        require_nncf()
    wanted = options.graphs or QUANTISABLE
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        work = tmp / "work"
        work.mkdir()
        progress(f"calibration inputs: {len(calib)} images, {len(held)} hold-out images, {len(prompts)} prompts")
        calib_feeds = graph_feeds(src, calib, prompts, options.threads)
        held_feeds = graph_feeds(src, held, prompts, options.threads)
        files: dict[str, Path] = {}
        kept: dict[str, int] = {}
        for name in wanted:
            progress(f"quantising {name} ({options.engine}) on {len(calib)} calibration inputs")
            files[name], kept[name] = _quantize_graph(src / man.graph(name).file, name, calib_feeds[name], options, work)
        all_int8 = _candidate(src, tmp, files, wanted)
        reference = medsam3_rt.load(src, backend, threads=options.threads, verify="none")
        try:
            candidate = medsam3_rt.load(all_int8, backend, threads=options.threads, verify="none")
            try:
                reports: dict[str, GraphReport] = {}
                for name in wanted:
                    progress(f"{name}: int8 vs fp32 outputs and speed on {len(held)} hold-out inputs ({backend})")
                    errors, fp32_ms, int8_ms = graph_report(reference.model, candidate.model, name, held_feeds[name])
                    total = quantisable_nodes(src / man.graph(name).file)
                    reports[name] = GraphReport(name, errors, fp32_ms, int8_ms, total - kept[name], kept[name])
            finally:
                candidate.close()
            images = [(p.stem, read_image(p)) for p in held]
            ref_results = [reference.segment(im, list(prompts)) for _, im in images]
        finally:
            reference.close()
        subsets = _subsets(reports, explicit=bool(options.graphs))
        if not subsets:
            slow = ", ".join(f"{g} int8 {r.speed_ratio:.2f}x the fp32 time" for g, r in reports.items())
            raise AccuracyGateError(f"no graph runs faster in int8 on {backend} here ({slow}); nothing written (pick one with --graphs)")
        tried: list[dict[str, Any]] = []
        chosen: tuple[str, ...] | None = None
        report: GateReport | None = None
        per_prompt: dict[str, float] = {}
        for subset in subsets:
            progress(f"accuracy gate: int8 {' + '.join(subset)} on {len(held)} hold-out images x {len(prompts)} prompts")
            cand_dir = _candidate(src, tmp, files, subset)
            cand = medsam3_rt.load(cand_dir, backend, threads=options.threads, verify="none")
            try:
                pairs = _pairs(ref_results, cand, images, prompts)
            finally:
                cand.close()
            report = gate(
                pairs,
                max_dice_drop=options.max_dice_drop,
                reference=f"fp32 {backend}",
                candidate=f"int8 {'+'.join(subset)} {backend}",
                samples=len(images),
            )
            per_prompt = _per_prompt(pairs, prompts)
            tried.append({"graphs": list(subset), "dice_drop_points": report.dice_drop_points, "passed": report.passed})
            if report.passed:
                chosen = subset
                break
        assert report is not None
        if chosen is None:
            what = "; ".join(f"{'+'.join(t['graphs'])}: drop {t['dice_drop_points']:.3f}" for t in tried)
            raise AccuracyGateError(
                report.describe() + f" (tried {what}); nothing written (raise --max-dice-drop deliberately to accept it)"
            )
        cand_dir = _candidate(src, tmp, files, chosen)
        method = OrtRecipe(options.method, options.per_channel).describe() if options.engine == "ort" else _nncf_method()
        _record(
            cand_dir,
            {
                "int8_graphs": list(chosen),
                "engine": options.engine,
                "runs_on": [backend] if options.engine == "openvino" else ["ort-cpu", "openvino", "any ONNX backend"],
                "method": method,
                "quantised_ops": list(QUANTISED_OPS),
                "kept_fp32": {
                    "attention": "MatMuls of two activations (attention scores and weighted sums)",
                    "scopes": {g: list(DEFAULT_KEEP_FP32.get(g, ()) if options.keep_fp32 is None else options.keep_fp32) for g in wanted},
                },
                "calibration": {
                    "folder": str(Path(calib_dir).resolve()),
                    "images": [p.name for p in calib],
                    "holdout": [p.name for p in held],
                },
                "prompts": list(prompts),
                "gate": report.to_json(),
                "tried": tried,
                "per_prompt_dice": per_prompt,
                "graph_errors": {g: r.errors for g, r in reports.items()},
                "graphs": {g: r.to_json() for g, r in reports.items()},
            },
        )
        load_manifest(cand_dir, verify="hash")  # the result is a valid export before it appears
        if out.exists():
            shutil.rmtree(out)
        os.replace(cand_dir, out)
        return QuantizeResult(out, report, chosen, reports, per_prompt, tried)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _nncf_method() -> str:
    from .quantize_nncf import describe

    return describe()
