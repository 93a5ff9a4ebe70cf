"""fp32 export -> the same graphs with their weights stored as fp16 and computed in fp32 (issue 21).

Why: on CPU backends that compute in fp32, the weights are the largest part of a process that
segments with the full SAM3 geometry (848 M parameters, 3.4 GB as fp32). Stored as fp16 they take
half the disk and half the mapped memory; each weight goes through a `Cast` to fp32 right before the
node that reads it, so the arithmetic is unchanged and only the weights' rounding differs.

What changes in a graph: every fp32 initializer with at least `MIN_ELEMENTS` values (MatMul/Conv
weights, embeddings) is stored as fp16 under `<name>.fp16` and a `Cast(to=float)` node produces the
original name, so every consumer (subgraphs included) reads the same tensor name as before.
Small tensors (biases, norm scales) stay fp32: they save nothing worth a node. A tensor with values
beyond fp16's range (|x| > 65504) stays fp32.

ONNX Runtime would undo this at load: its constant folding and its
FuseFp16InitializerToFp32NodeTransformer turn every Cast of an initializer back into an fp32
initializer (measured: the same resident memory as the fp32 graph). The runtime therefore opens
graphs the manifest marks `"weights": "fp16"` with those two optimizers disabled
(medsam3_rt/backends/ort.py); see `store_fp16` for the node order that makes each Cast run next
to its consumer.

The result is checked against the source export on ONNX Runtime (the exporter's parity inputs,
chained through the fp32 graphs' outputs) and recorded in the manifest (`weight_storage`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from medsam3_rt import graph_contract as gc
from medsam3_rt.errors import InputError, OutputExistsError, ParityError
from medsam3_rt.manifest import MANIFEST_NAME, GraphEntry, Manifest, load_manifest
from medsam3_rt.model import PROMPT_PACK_DIR

from . import parity
from .manifest_writer import file_entry

MIN_ELEMENTS = 1024  # fp32 initializers with fewer values stay fp32 (biases, norms: no saving worth a Cast)
FP16_MAX = 65504.0
FP16_SUFFIX = ".fp16"
PARITY_FILE = "weights-fp16-parity.json"
# fp16 rounds each weight by up to 2^-11 relative; after ~30 layers outputs move by ~1e-3 of their range.
TOLERANCE = parity.Tolerance(rel=1e-2, abs=1e-4, sign_agreement=0.99)


@dataclass(frozen=True)
class GraphStorage:
    """What `store_fp16` did to one graph."""

    converted: int  # initializers now stored as fp16
    kept_fp32: int  # float32 initializers left as they were (small, or out of fp16 range)
    fp32_bytes: int  # bytes of the converted initializers before
    fp16_bytes: int  # and after


def store_fp16(model: onnx.ModelProto, min_elements: int = MIN_ELEMENTS) -> GraphStorage:
    """Rewrite `model` in place: large fp32 initializers stored as fp16, one Cast to fp32 each."""
    graph = model.graph
    casts: list[onnx.NodeProto] = []
    kept = converted = before = after = 0
    for i, init in enumerate(graph.initializer):
        if init.data_type != TensorProto.FLOAT:
            continue
        arr = numpy_helper.to_array(init)
        if arr.size < min_elements or (arr.size and float(np.max(np.abs(arr))) > FP16_MAX):
            kept += 1
            continue
        name = init.name
        half = numpy_helper.from_array(arr.astype(np.float16), name + FP16_SUFFIX)
        graph.initializer[i].CopyFrom(half)  # `init` is this element: read its name before
        casts.append(helper.make_node("Cast", [half.name], [name], to=TensorProto.FLOAT, name=f"{name}{FP16_SUFFIX}_to_fp32"))
        converted += 1
        before += arr.nbytes
        after += arr.size * 2
    # All Casts first, i.e. with the lowest node indices: ONNX Runtime's default execution order
    # (a reverse depth-first walk from the outputs that visits a node's higher-index inputs first)
    # then runs each Cast right before its consumer, so one fp32 weight is alive at a time. Placed
    # next to their consumers instead, they would all run at the start (measured: all weights fp32).
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return GraphStorage(converted, kept, before, after)


def _convert_graph(src: Path, dst: Path, min_elements: int, external: bool) -> GraphStorage:
    model = onnx.load(str(src), load_external_data=True)
    info = store_fp16(model, min_elements)
    if external:
        onnx.save_model(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True, location=dst.name + ".data")
    else:
        onnx.save_model(model, str(dst))
    del model
    return info


def _graph_outputs(model_dir: Path, entry: GraphEntry, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import medsam3_rt.backends as backends

    backend = backends.resolve("ort-cpu", backends.OrtCpuOptions(lean=True))
    runner = backend.open(entry, model_dir)
    try:
        return {k: np.asarray(backends.as_numpy(v)) for k, v in runner.run(feeds).items()}
    finally:
        runner.close()


def compare_exports(
    reference_dir: Path, candidate_dir: Path, man: Manifest, tol: parity.Tolerance = TOLERANCE
) -> list[parity.OutputParity]:
    """Every graph of `candidate_dir` vs `reference_dir` on ONNX Runtime, on the exporter's parity inputs.

    Inputs that chain (detector <- backbone, tracker <- backbone) come from the reference
    export's outputs, so both exports see identical feeds.
    """
    from medsam3_rt.preprocess import pixel_values
    from medsam3_rt.tokenizer import ClipTokenizer

    from .exporter import PARITY_PROMPTS, parity_image, parity_inputs

    ids, attn = ClipTokenizer(reference_dir / man.tokenizer.file, man.tokenizer).encode(PARITY_PROMPTS)
    pixels = pixel_values(parity_image(man.dims.image_size), man.preprocess)
    if man.image_batch_axis:
        pixels = np.concatenate([pixels, pixel_values(parity_image(man.dims.image_size, seed=1), man.preprocess)])
    num_maskmem = int((man.tracker or {}).get("num_maskmem", 7))
    refs: dict[str, dict[str, np.ndarray]] = {}
    results: list[parity.OutputParity] = []
    for name in (n for n in (*gc.DETECTOR_GRAPHS, *gc.TRACKER_GRAPHS) if n in man.graphs):
        feeds = {k: v.numpy() for k, v in parity_inputs(name, man.dims, ids, attn, pixels, refs, num_maskmem).items()}
        refs[name] = _graph_outputs(reference_dir, man.graph(name), feeds)
        cand = load_manifest(candidate_dir, verify="none").graph(name)
        results += parity.compare(name, refs[name], _graph_outputs(candidate_dir, cand, feeds), tol)
    return results


def store_export_fp16(
    model_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    min_elements: int = MIN_ELEMENTS,
    progress: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Write a copy of an export with fp16 weight storage, checked against the source; returns the record.

    Written atomically: OUTPUT appears only once every graph passed parity.
    """
    src, out = Path(model_dir), Path(output)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"output '{out}' already exists; choose another folder or pass --force to replace it")
    man = load_manifest(src, verify="hash")
    if any(g.weights == "fp16" for g in man.graphs.values()):
        raise InputError(f"{src} already stores its weights as fp16")
    if "quantization" in json.loads((src / MANIFEST_NAME).read_text()):
        raise InputError(f"{src} is an int8 export (`medsam3-rt quantize`); store the fp32 export's weights as fp16 instead")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        stage = tmp / "model"
        graph_files = {f for g in man.graphs.values() for f in (g.file, *g.external_data)}
        skip = graph_files | {PROMPT_PACK_DIR}  # packs are keyed by the text encoder's hash: re-encoded below
        shutil.copytree(src, stage, ignore=lambda d, names: [n for n in names if Path(d) == src and n in skip])
        data = json.loads((src / MANIFEST_NAME).read_text())
        per_graph: dict[str, dict[str, Any]] = {}
        for name, entry in man.graphs.items():
            progress(f"storing {name} weights as fp16")
            t0 = time.perf_counter()
            info = _convert_graph(src / entry.file, stage / entry.file, min_elements, external=bool(entry.external_data))
            externals = [entry.file + ".data"] if entry.external_data else []
            for f in (*entry.external_data, *externals):
                data["files"].pop(f, None)
            data["graphs"][name]["external_data"] = externals
            data["graphs"][name]["weights"] = "fp16"
            for f in (entry.file, *externals):
                fe = file_entry(stage, f)
                data["files"][f] = {"sha256": fe.sha256, "bytes": fe.bytes}
            per_graph[name] = {
                "converted_initializers": info.converted,
                "kept_fp32_initializers": info.kept_fp32,
                "converted_fp32_bytes": info.fp32_bytes,
                "converted_fp16_bytes": info.fp16_bytes,
                "seconds": round(time.perf_counter() - t0, 2),
            }
        (stage / MANIFEST_NAME).write_text(json.dumps(data, indent=2))
        progress("comparing every graph with the fp32 export (ONNX Runtime)")
        results = compare_exports(src, stage, man)
        report = parity.report(results, TOLERANCE, f"the fp32 export {src.name} on ONNX Runtime CPU")
        (stage / PARITY_FILE).write_text(json.dumps(report, indent=2))
        for r in results:
            progress(("ok    " if r.passed else "FAIL  ") + r.describe())
        failed = [r for r in results if not r.passed]
        if failed:
            raise ParityError("fp16 weight storage changes the outputs beyond the bound, nothing written: " + failed[0].describe())
        fe = file_entry(stage, PARITY_FILE)
        data["files"][PARITY_FILE] = {"sha256": fe.sha256, "bytes": fe.bytes}
        record = {
            "weights": "fp16",
            "compute": "fp32 (a Cast per weight, next to its consumer)",
            "min_elements": min_elements,
            "source": {"name": man.model.get("name", src.name), "manifest_sha256": _sha256_text((src / MANIFEST_NAME).read_text())},
            "graphs": per_graph,
            "parity": {
                "passed": True,
                "tolerance": TOLERANCE.describe(),
                "report": PARITY_FILE,
                "worst": {f"{r.graph}.{r.output}": {"max_abs": r.max_abs, "max_rel": r.max_rel} for r in results},
            },
        }
        data["weight_storage"] = record
        (stage / MANIFEST_NAME).write_text(json.dumps(data, indent=2))
        load_manifest(stage, verify="hash")  # the result is a valid export before it appears
        packs = _reencode_prompt_packs(src, stage)
        if packs:
            progress(f"re-encoded {len(packs)} prompt pack(s) with the fp16-weight text encoder")
        if out.exists():
            shutil.rmtree(out)
        os.replace(stage, out)
        return record
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _reencode_prompt_packs(src: Path, stage: Path) -> list[Path]:
    """The source's bundled prompt packs, same prompts, encoded by the new text encoder (a pack
    is valid only for the text-encoder file it was made with)."""
    from medsam3_rt.model import Model
    from medsam3_rt.prompt_pack import SUFFIX, PromptPack, read_prompt_pack, write_prompt_pack

    files = sorted((src / PROMPT_PACK_DIR).glob(f"*{SUFFIX}"))
    if not files:
        return []
    model = Model(stage, "ort-cpu", verify="none")
    try:
        for f in files:
            old = read_prompt_pack(f)
            embs = model.encode_new_prompts(list(old.prompts))
            new = PromptPack(
                text_encoder_sha256=model.manifest.text_encoder_sha256,
                prompts=old.prompts,
                keys=old.keys,
                tokens=old.tokens,
                features=np.stack([e.features for e in embs]),
                mask=np.stack([e.mask for e in embs]),
            )
            (stage / PROMPT_PACK_DIR).mkdir(exist_ok=True)
            write_prompt_pack(stage / PROMPT_PACK_DIR / f.name, new)
    finally:
        model.close()
    return files


def _sha256_text(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()
