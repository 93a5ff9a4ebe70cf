"""Which CPU levers pay off, graph by graph: runtime settings, graph rewrites, int8 backbones.

Every comparison runs its variants interleaved round by round in one process on the same
feeds, and reports the median of per-round ratios to the first variant (the default
`ort-cpu` session), so load from other processes on a shared machine cancels out.

    # ONNX Runtime optimisation level, threads, spinning; OpenVINO's CPU plugin
    python -m benchmarks.cpu_levers runtime MODEL_DIR [--graph detector ...] [--rounds 5] [--json out.json]
    # the same graph from two exports of the same weights (e.g. before/after a graph rewrite)
    python -m benchmarks.cpu_levers graphs OLD_DIR NEW_DIR --graph tracker_step [--rounds 5]
    # int8 image backbone (dynamic and static quantisation) behind the accuracy gate
    python -m benchmarks.cpu_levers int8 MODEL_DIR [--images 6] [--rounds 5] [--work DIR]

Feeds are synthetic (`medsam3_export.accuracy.synthetic_feeds`) at P=2 prompts, N=2 objects,
M=7 memory frames, K=16 pointers (a full SAM3 memory bank), except that the tracker step gets
one padded memory slot and pointer on its second object, as the runtime's batching produces.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from medsam3_export.manifest_writer import file_entry

from medsam3_rt import graph_contract as gc
from medsam3_rt.manifest import MANIFEST_NAME, load_manifest
from medsam3_rt.profiling import machine_info

AXES = {"P": 2, "N": 2, "M": 7, "K": 16}
GRAPHS = (gc.IMAGE_BACKBONE, gc.DETECTOR, gc.TRACKER_STEP, gc.MEMORY_ENCODER, gc.TEXT_ENCODER)
Runner = Callable[[Mapping[str, np.ndarray]], Any]


def feeds_for(spec: gc.GraphSpec, seed: int = 0) -> dict[str, np.ndarray]:
    from medsam3_export.accuracy import synthetic_feeds

    feeds = synthetic_feeds(spec, AXES, seed)
    if spec.name == gc.TRACKER_STEP:
        feeds[gc.MEM_TPOS] = np.broadcast_to(np.array([6, 0, 1, 2, 3, 4, 5], np.int64)[: AXES["M"]], feeds[gc.MEM_TPOS].shape).copy()
        feeds[gc.PTR_TPOS] = np.broadcast_to(np.arange(AXES["K"], dtype=np.float32) / 15, feeds[gc.PTR_TPOS].shape).copy()
        feeds[gc.MEM_VALID][1, -1] = False
        feeds[gc.PTR_VALID][1, -1] = False
    if spec.name == gc.TEXT_ENCODER:
        feeds[gc.INPUT_IDS] = np.full(feeds[gc.INPUT_IDS].shape, 320, np.int64)
        feeds[gc.INPUT_IDS][:, 0], feeds[gc.INPUT_IDS][:, 3] = 49406, 49407
        feeds[gc.ATTENTION_MASK] = (np.arange(feeds[gc.INPUT_IDS].shape[1]) < 4).astype(np.int64)[None].repeat(AXES["P"], 0)
    return feeds


def ort_runner(path: Path, *, level: str = "all", threads: int | None = 2, spinning: bool = True) -> Runner:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    if threads:
        so.intra_op_num_threads = threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return lambda feeds: dict(zip(names, sess.run(names, dict(feeds))))


def ov_runner(path: Path, *, threads: int | None = 2) -> Runner:
    import openvino as ov

    core = ov.Core()
    cfg: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = threads
    compiled = core.compile_model(core.read_model(str(path)), "CPU", cfg)
    request = compiled.create_infer_request()
    outs = [(next(iter(o.get_names())), o) for o in compiled.outputs]

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        request.infer(dict(feeds))
        return {name: np.array(request.get_tensor(o).data) for name, o in outs}

    return run


RUNTIME_VARIANTS: dict[str, Callable[[Path, int], Runner]] = {
    "ort (all, {t} threads)": lambda p, t: ort_runner(p, threads=t),
    "ort extended": lambda p, t: ort_runner(p, level="extended", threads=t),
    "ort basic": lambda p, t: ort_runner(p, level="basic", threads=t),
    "ort 1 thread": lambda p, t: ort_runner(p, threads=1),
    "ort no spinning": lambda p, t: ort_runner(p, threads=t, spinning=False),
    "openvino": lambda p, t: ov_runner(p, threads=t),
}


def interleave(runners: Mapping[str, Runner], feeds: Mapping[str, np.ndarray], rounds: int, warmup: int = 1) -> dict[str, Any]:
    """Time each runner `rounds` times, round-robin; median ms and median ratio to the first runner."""
    names = list(runners)
    for _ in range(warmup):
        for r in runners.values():
            r(feeds)
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(rounds):
        for n in names:
            time.sleep(0.05)
            t0 = time.perf_counter()
            runners[n](feeds)
            times[n].append((time.perf_counter() - t0) * 1e3)
    ref = times[names[0]]
    return {
        n: {
            "median_ms": statistics.median(t),
            "min_ms": min(t),
            "ratio_to_first": statistics.median([a / b for a, b in zip(t, ref)]),
            "samples_ms": [round(x, 2) for x in t],
        }
        for n, t in times.items()
    }


def deltas(ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    out = {}
    for k, r in ref.items():
        r64, g64 = np.asarray(r, np.float64), np.asarray(got[k], np.float64)
        scale = float(np.abs(r64).max()) if r64.size else 0.0
        err = float(np.abs(g64 - r64).max()) if r64.size else 0.0
        out[k] = {"max_abs": err, "max_ref": scale, "within_export_tolerance": bool(err <= 1e-4 * scale + 1e-5)}
    return out


def cmd_runtime(args: argparse.Namespace) -> dict[str, Any]:
    man = load_manifest(args.model_dir, verify="none")
    result: dict[str, Any] = {}
    for g in args.graph or GRAPHS:
        if g not in man.graphs:
            continue
        path = args.model_dir / man.graph(g).file
        feeds = feeds_for(man.graph(g).spec)
        variants = {k.format(t=args.threads): f(path, args.threads) for k, f in RUNTIME_VARIANTS.items() if k.split(" ")[0] in args.use}
        print(f"{g}: {', '.join(variants)}", flush=True)
        timing = interleave(variants, feeds, args.rounds)
        ref = next(iter(variants.values()))(feeds)
        result[g] = {"timing": timing, "deltas_vs_first": {n: deltas(ref, v(feeds)) for n, v in list(variants.items())[1:]}}
        for n, t in timing.items():
            print(f"  {n:24s} median {t['median_ms']:9.1f} ms  ratio {t['ratio_to_first']:.3f}", flush=True)
        del variants
    return result


def cmd_graphs(args: argparse.Namespace) -> dict[str, Any]:
    old, new = load_manifest(args.old_dir, verify="none"), load_manifest(args.new_dir, verify="none")
    result = {}
    for g in args.graph:
        feeds = feeds_for(old.graph(g).spec)
        runners = {
            f"{args.old_dir.name}/{g}": ort_runner(args.old_dir / old.graph(g).file, threads=args.threads),
            f"{args.new_dir.name}/{g}": ort_runner(args.new_dir / new.graph(g).file, threads=args.threads),
        }
        r_old, r_new = (r(feeds) for r in runners.values())
        timing = interleave(runners, feeds, args.rounds)
        result[g] = {"timing": timing, "deltas": deltas(r_old, r_new)}
        for n, t in timing.items():
            print(f"  {n:32s} median {t['median_ms']:9.1f} ms  ratio {t['ratio_to_first']:.3f}", flush=True)
        for k, d in result[g]["deltas"].items():
            print(f"  {k}: max|d| {d['max_abs']:.2e} (max|ref| {d['max_ref']:.2e})", flush=True)
    return result


class _Calibration:
    """Backbone inputs of synthetic CT-like slices for static quantisation."""

    def __init__(self, manifest: Any, n: int) -> None:
        from medsam3_bench import synthetic_slice

        from medsam3_rt.preprocess import pixel_values

        self.items = iter(
            [{gc.PIXEL_VALUES: pixel_values(synthetic_slice(100 + 7 * i, (512, 512)), manifest.preprocess)} for i in range(n)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.items, None)

    def rewind(self) -> None:  # pragma: no cover - API of CalibrationDataReader
        pass


def _copy_export_with(model_dir: Path, graph_file: Path, work: Path, name: str) -> Path:
    """A copy of the export with its backbone replaced (manifest file entries refreshed)."""
    out = work / name
    shutil.copytree(model_dir, out)
    man_path = out / MANIFEST_NAME
    data = json.loads(man_path.read_text())
    entry = data["graphs"][gc.IMAGE_BACKBONE]
    for f in [entry["file"], *entry.get("external_data", [])]:
        (out / f).unlink(missing_ok=True)
        data["files"].pop(f, None)
    shutil.copy(graph_file, out / entry["file"])
    for extra in graph_file.parent.glob(graph_file.name + ".data"):
        shutil.copy(extra, out / extra.name)
    entry["external_data"] = [p.name for p in out.glob(entry["file"] + ".data")]
    for f in [entry["file"], *entry["external_data"]]:
        fe = file_entry(out, f)
        data["files"][f] = {"sha256": fe.sha256, "bytes": fe.bytes}
    man_path.write_text(json.dumps(data, indent=2))
    return out


def cmd_int8(args: argparse.Namespace) -> dict[str, Any]:
    from medsam3_bench import synthetic_slice
    from medsam3_export.accuracy import gate, mask_pairs, output_deltas
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    import medsam3_rt
    from medsam3_rt.preprocess import pixel_values

    man = load_manifest(args.model_dir, verify="none")
    src = args.model_dir / man.graph(gc.IMAGE_BACKBONE).file
    work = Path(args.work or tempfile.mkdtemp(prefix="medsam3-int8-"))
    work.mkdir(parents=True, exist_ok=True)
    pre = work / "backbone.pre.onnx"
    t0 = time.perf_counter()
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True, save_as_external_data=True)
    files = {"fp32": src}
    dyn = work / "backbone.int8-dynamic.onnx"
    quantize_dynamic(str(pre), str(dyn), weight_type=QuantType.QInt8, per_channel=True, use_external_data_format=True)
    files["int8 dynamic (weights QInt8 per channel)"] = dyn
    sta = work / "backbone.int8-static.onnx"
    quantize_static(
        str(pre),
        str(sta),
        _Calibration(man, args.calibration),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        calibrate_method=CalibrationMethod.MinMax,
        use_external_data_format=True,
    )
    files["int8 static QDQ (U8 activations, S8 weights, MinMax)"] = sta
    print(f"quantised in {time.perf_counter() - t0:.0f} s", flush=True)
    feeds = {gc.PIXEL_VALUES: pixel_values(synthetic_slice(3, (512, 512)), man.preprocess)}
    runners = {name: ort_runner(p, threads=args.threads) for name, p in files.items()}
    ref = runners["fp32"](feeds)
    timing = interleave(runners, feeds, args.rounds)
    out: dict[str, Any] = {"timing": timing, "variants": {}}
    reference = medsam3_rt.load(args.model_dir, "ort-cpu", threads=args.threads, verify="none")
    images = [synthetic_slice(200 + 11 * i, (512, 512)) for i in range(args.images)]
    from medsam3_export.accuracy import Sample

    samples = [Sample(f"slice-{i}", im) for i, im in enumerate(images)]
    for name, p in files.items():
        if name == "fp32":
            continue
        export = _copy_export_with(args.model_dir, p, work, name.split(" (")[0].replace(" ", "-"))
        cand = medsam3_rt.load(export, "ort-cpu", threads=args.threads, verify="none")
        report = gate(mask_pairs(reference, cand, samples, args.prompts), reference="fp32 ort-cpu", candidate=name, samples=len(samples))
        out["variants"][name] = {
            "graph_deltas": output_deltas(ref, runners[name](feeds)),
            "gate": report.to_json(),
            "file_bytes": sum(f.stat().st_size for f in p.parent.glob(p.name + "*")),
        }
        print(f"  {name}: {report.describe()}", flush=True)
        cand.close()
    for n, t in timing.items():
        print(f"  {n:52s} median {t['median_ms']:9.1f} ms  ratio {t['ratio_to_first']:.3f}", flush=True)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("runtime", "graphs", "int8"):
        p = sub.add_parser(name)
        if name == "graphs":
            p.add_argument("old_dir", type=Path)
            p.add_argument("new_dir", type=Path)
            p.add_argument("--graph", action="append", required=True)
        else:
            p.add_argument("model_dir", type=Path)
        if name == "runtime":
            p.add_argument("--graph", action="append")
            p.add_argument("--use", nargs="+", default=["ort", "openvino"], help="variant families: ort, openvino")
        if name == "int8":
            p.add_argument("--images", type=int, default=6)
            p.add_argument("--calibration", type=int, default=8)
            p.add_argument("--prompts", nargs="+", default=["liver", "left kidney"])
            p.add_argument("--work", type=Path)
        p.add_argument("--rounds", type=int, default=5)
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    result = {"cmd": args.cmd, "started": started, "machine": machine_info(), "axes": AXES}
    result["results"] = {"runtime": cmd_runtime, "graphs": cmd_graphs, "int8": cmd_int8}[args.cmd](args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
