"""Static int8 quantisation of an export, calibrated on the user's images and gated by Dice.

`medsam3-rt quantize MODEL_DIR CALIB_DIR --output OUT` splits CALIB_DIR into a calibration part
and a hold-out part, quantises the image backbone with ONNX Runtime (QDQ, U8 activations, S8
per-channel weights, MinMax) on the calibration part, then segments the hold-out images with
the fp32 export and the int8 candidate and compares the masks per prompt (Dice). Only
MatMul/Conv/Gemm are quantised: LayerNorm, Softmax and everything else stay fp32 (mixed
precision). When the Dice drop exceeds the bound nothing is written; otherwise the candidate,
built in a temp folder next to OUT, is renamed into place in one step.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsam3_rt import graph_contract as gc
from medsam3_rt.errors import AccuracyGateError, InputError, OutputExistsError
from medsam3_rt.io.images import list_images, read_image
from medsam3_rt.manifest import MANIFEST_NAME, load_manifest

from .accuracy import DEFAULT_PROMPTS, GateReport, Sample, gate, mask_pairs, output_deltas
from .manifest_writer import file_entry

DEFAULT_MAX_DICE_DROP = 1.0  # points
QUANTISED_OPS = ("MatMul", "Conv", "Gemm")  # LayerNorm, Softmax, GELU... stay fp32
QUANTISED_GRAPHS = (gc.IMAGE_BACKBONE,)


@dataclass(frozen=True)
class QuantizeOptions:
    prompts: tuple[str, ...] = ()
    holdout: float = 0.25  # fraction of CALIB_DIR kept out of calibration for the gate
    max_dice_drop: float = DEFAULT_MAX_DICE_DROP
    overwrite: bool = False
    threads: int | None = None


@dataclass(frozen=True)
class QuantizeResult:
    output: Path
    report: GateReport
    graph_errors: dict[str, dict[str, float]]
    per_prompt_dice: dict[str, float]


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


class _Reader:
    """CalibrationDataReader over backbone inputs of the calibration images."""

    def __init__(self, images: Sequence[Path], preprocess: Any) -> None:
        from medsam3_rt.preprocess import pixel_values

        self._feeds = [{gc.PIXEL_VALUES: pixel_values(read_image(p), preprocess)} for p in images]
        self._it = iter(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._feeds)


def _quantize_graph(src: Path, dst: Path, reader: _Reader, work: Path) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = work / "pre.onnx"
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True, save_as_external_data=True)
    quantize_static(
        str(pre),
        str(dst),
        reader,
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=list(QUANTISED_OPS),
        calibrate_method=CalibrationMethod.MinMax,
        use_external_data_format=True,
    )


def _replace_graph(out: Path, name: str, new_file: Path) -> None:
    """Swap one graph of the export copy `out` for `new_file` (+ its .data), refreshing file hashes."""
    man_path = out / MANIFEST_NAME
    data = json.loads(man_path.read_text())
    entry = data["graphs"][name]
    for f in [entry["file"], *entry.get("external_data", [])]:
        (out / f).unlink(missing_ok=True)
        data["files"].pop(f, None)
    entry["file"] = new_file.name
    shutil.copy(new_file, out / entry["file"])
    externals = []
    for extra in new_file.parent.glob(new_file.name + ".data"):
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
    man = load_manifest(src, verify="hash")
    if options.max_dice_drop < 0:
        raise InputError(f"--max-dice-drop must be >= 0, got {options.max_dice_drop}")
    calib, held = split_calibration(Path(calib_dir), options.holdout)
    prompts = options.prompts or default_prompts(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        work = tmp / "work"
        work.mkdir()
        cand_dir = tmp / "model"
        shutil.copytree(src, cand_dir)
        reader = _Reader(calib, man.preprocess)
        graph_errors: dict[str, dict[str, float]] = {}
        for name in QUANTISED_GRAPHS:
            progress(f"calibrating {name} on {len(calib)} images")
            q = work / f"{Path(man.graph(name).file).stem}.int8.onnx"
            _quantize_graph(src / man.graph(name).file, q, reader, work)
            _replace_graph(cand_dir, name, q)
            graph_errors[name] = _graph_error(src / man.graph(name).file, q, reader, options.threads)
        progress(f"accuracy gate on {len(held)} hold-out images x {len(prompts)} prompts")
        samples = [Sample(p.stem, read_image(p)) for p in held]
        reference = medsam3_rt.load(src, "ort-cpu", threads=options.threads, verify="none")
        candidate = medsam3_rt.load(cand_dir, "ort-cpu", threads=options.threads, verify="none")
        try:
            pairs = mask_pairs(reference, candidate, samples, prompts)
        finally:
            candidate.close()
            reference.close()
        report = gate(
            pairs, max_dice_drop=options.max_dice_drop, reference="fp32 ort-cpu", candidate="int8 QDQ ort-cpu", samples=len(samples)
        )
        from medsam3_rt.metrics import dice

        per_prompt = {p: float(np.mean([dice(m.candidate, m.reference) for m in pairs if m.prompt == p])) for p in prompts}
        if not report.passed:
            raise AccuracyGateError(report.describe() + "; nothing written (raise --max-dice-drop deliberately to accept it)")
        _record(
            cand_dir,
            {
                "int8_graphs": list(QUANTISED_GRAPHS),
                "method": "onnxruntime static QDQ, U8 activations (MinMax), S8 per-channel weights",
                "quantised_ops": list(QUANTISED_OPS),
                "calibration": {
                    "folder": str(Path(calib_dir).resolve()),
                    "images": [p.name for p in calib],
                    "holdout": [p.name for p in held],
                },
                "prompts": list(prompts),
                "gate": report.to_json(),
                "per_prompt_dice": per_prompt,
                "graph_errors": graph_errors,
            },
        )
        load_manifest(cand_dir, verify="hash")  # the result is a valid export before it appears
        if out.exists():
            shutil.rmtree(out)
        os.replace(cand_dir, out)
        return QuantizeResult(out, report, graph_errors, per_prompt)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _graph_error(fp32: Path, int8: Path, reader: _Reader, threads: int | None) -> dict[str, float]:
    """Per-output error of the int8 graph vs fp32 on the first calibration input."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    reader.rewind()
    feeds = reader.get_next()
    assert feeds is not None
    ref_s = ort.InferenceSession(str(fp32), so, providers=["CPUExecutionProvider"])
    new_s = ort.InferenceSession(str(int8), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in ref_s.get_outputs()]
    ref = dict(zip(names, ref_s.run(names, feeds), strict=True))
    new = dict(zip(names, new_s.run(names, feeds), strict=True))
    reader.rewind()
    return output_deltas(ref, new)
