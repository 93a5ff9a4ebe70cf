"""`medsam3-rt build`: one TensorRT engine per exported graph, accuracy-gated, recorded in the manifest.

For every graph of an export directory (or those named with `--graph`):

1. the optimisation profile comes from the graph contract's symbolic axes
   (`medsam3_rt.engines.derive_profile`; defaults in `engines.AXIS_DEFAULTS`, `--axis` overrides);
2. the network is **strongly typed** (TensorRT >= 10; TensorRT 11 has nothing else): for
   fp16/bf16 the ONNX graph is first rewritten to that precision with norms, attention
   softmax and the final mask-logit producers pinned to fp32 (`mixed_precision`), and the
   pinned node names are listed in the engine entry; fp32 builds disable TF32;
3. `--int8` (image backbone only, TensorRT 10 only: TensorRT 11 removed implicit INT8
   calibration) builds that graph weakly typed with an entropy calibrator over `--calib`
   images, pinning the same layers to fp32 with precision constraints;
4. one timing cache file is read before and written after the builds (`--timing-cache`,
   default `<model>/engines/timing.cache`), so rebuilds on the same GPU are fast;
5. engines are written to a staging folder, the **accuracy gate** segments a validation
   set with the fp32 graphs (reference backend) and with the new engines and fails the
   build if the Dice drop exceeds `--max-dice-drop` (default 0.5 points);
6. only then are the engines moved into `<model>/engines/` and their entries appended to
   `manifest.json` atomically (`manifest_writer.append_engine_entries`).

Status: UNVERIFIED with real TensorRT (it cannot be installed on the machines this was
written on); tests drive this code against a named stand-in of the `tensorrt` module that
"builds" engines which run the (mixed-precision) ONNX graph with ONNX Runtime on the CPU.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from medsam3_rt import engines as eng
from medsam3_rt import graph_contract as gc
from medsam3_rt._version import __version__
from medsam3_rt.backends import BackendOptions, _cuda, resolve
from medsam3_rt.backends.tensorrt import TensorrtBackend, gpu_environment, tensorrt_module
from medsam3_rt.errors import ModelError, UsageError
from medsam3_rt.io.atomic import atomic_write_bytes
from medsam3_rt.io.images import list_images, read_image
from medsam3_rt.manifest import Manifest, load_manifest, sha256_file
from medsam3_rt.model import Model
from medsam3_rt.preprocess import pixel_values
from medsam3_rt.segmenter import Segmenter

from . import accuracy
from .manifest_writer import append_engine_entries
from .mixed_precision import convert_file, fp32_pinned_nodes

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
INT8_GRAPHS = (gc.IMAGE_BACKBONE,)  # ~95 % of the compute; the heads stay at --precision


def timing_cache_name(env: eng.GpuEnvironment) -> str:
    """engines/timing.<sm>.<gpu>.trt<version>.cache: tactic timings only hold for that GPU model and TensorRT."""
    slug = "".join(c if c.isalnum() else "-" for c in env.device_name.lower()).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    return f"{eng.ENGINE_DIR}/timing.sm{env.compute_capability.replace('.', '')}.{slug[:48]}.trt{env.tensorrt}.cache"


def calibration_cache_name(graph: str, onnx_sha256: str, batches: Sequence[np.ndarray]) -> str:
    """engines/<graph>.int8.<graph hash>.<calibration-set hash>.calib: never reused across re-exports or new images."""
    h = hashlib.sha256()
    for b in batches:
        h.update(str(b.shape).encode() + str(b.dtype).encode())
        h.update(np.ascontiguousarray(b).tobytes())
    return f"{eng.ENGINE_DIR}/{graph}.int8.{onnx_sha256[:12]}.{h.hexdigest()[:12]}.calib"


@dataclass(frozen=True)
class BuildOptions:
    precision: str = "fp16"
    int8: bool = False
    calib_dir: Path | None = None
    val_dir: Path | None = None
    prompts: tuple[str, ...] = accuracy.DEFAULT_PROMPTS
    workspace_gb: float = 4.0
    timing_cache: Path | None = None
    axes: Mapping[str, eng.AxisRange] = field(default_factory=dict)
    graphs: tuple[str, ...] = ()
    max_dice_drop: float = accuracy.DEFAULT_MAX_DICE_DROP
    reference: str = "ort-cpu"
    device_id: int = 0
    optimization_level: int = 3
    version_compatible: bool = False
    hardware_compatible: bool = False
    pin_fp32: bool = True
    calib_images: int = 64

    def __post_init__(self) -> None:
        if self.precision not in eng.PRECISIONS:
            raise UsageError(f"--precision must be one of {', '.join(eng.PRECISIONS)}, got '{self.precision}'")
        if self.int8 and self.calib_dir is None:
            raise UsageError("--int8 needs --calib DIR with representative images for calibration")
        if self.workspace_gb <= 0:
            raise UsageError(f"--workspace must be > 0 GB, got {self.workspace_gb}")
        if self.max_dice_drop < 0:
            raise UsageError(f"--max-dice-drop must be >= 0 points, got {self.max_dice_drop}")
        if not 0 <= self.optimization_level <= 5:
            raise UsageError(f"builder optimisation level must be 0..5, got {self.optimization_level}")
        if not self.prompts:
            raise UsageError("the accuracy gate needs at least one --prompt")


@dataclass(frozen=True)
class GraphPlan:
    graph: str
    onnx: str  # the export's graph file (relative)
    onnx_sha256: str
    engine_file: str  # final relative path under engines/
    strongly_typed: bool
    int8: bool
    precision: str  # the network's float type (explicit INT8: fp32 + the graph's Q/DQ)
    flags: tuple[str, ...]
    profile: eng.Profile


@dataclass(frozen=True)
class BuildPlan:
    model_dir: Path
    env: eng.GpuEnvironment
    options: BuildOptions
    graphs: tuple[GraphPlan, ...]
    timing_cache: Path

    def describe(self) -> list[str]:
        lines = [
            f"TensorRT {self.env.tensorrt} on {self.env.device_name} (sm {self.env.compute_capability}), timing cache {self.timing_cache}"
        ]
        for g in self.graphs:
            shapes = ", ".join(f"{n} {list(r.min)}..{list(r.max)}" for n, r in g.profile.items())
            lines.append(f"  {g.graph} -> {g.engine_file} [{', '.join(g.flags)}] {shapes}")
        return lines


def plan_build(model_dir: Path, manifest: Manifest, options: BuildOptions, env: eng.GpuEnvironment) -> BuildPlan:
    """What will be built, with which flags and profiles (no TensorRT call; printed by --dry-run)."""
    names = options.graphs or tuple(manifest.graphs)
    unknown = [g for g in names if g not in manifest.graphs]
    if unknown:
        raise UsageError(f"--graph {unknown[0]}: this export has {', '.join(manifest.graphs)}")
    fused = [g for g in names if manifest.graphs[g].attention == "fused"]
    if fused:
        raise UsageError(
            f"graph '{fused[0]}' of {model_dir} has fused attention (com.microsoft::MultiHeadAttention), which TensorRT's "
            "ONNX parser cannot read; export again with `medsam3-rt export ... --attention unfused` for TensorRT"
        )
    half = [g for g in names if manifest.graphs[g].weights == "fp16"]
    if half:
        raise UsageError(
            f"graph '{half[0]}' of {model_dir} stores its weights as fp16 (`medsam3-rt fp16-weights`, for CPU "
            "backends); build TensorRT engines from the fp32 export (--precision chooses the engine's types)"
        )
    ranges = eng.axis_ranges(manifest.tracker, options.axes)
    plans = []
    for name in names:
        entry = manifest.graphs[name]
        int8 = options.int8 and name in INT8_GRAPHS
        explicit = int8 and explicit_quantization(env.tensorrt)
        precision = "fp32" if explicit else options.precision  # Q/DQ INT8 over the fp32 graph (see explicit_quantization)
        if explicit:
            flags = [precision, "int8", "explicit_quantization", "strongly_typed"]
        else:
            flags = [precision] + (["int8", "obey_precision_constraints"] if int8 else ["strongly_typed"])
        if precision == "fp32":
            flags.append("tf32_disabled")
        if options.version_compatible:
            flags.append("version_compatible")
        if options.hardware_compatible:
            flags.append("hardware_compatible")
        plans.append(
            GraphPlan(
                graph=name,
                onnx=entry.file,
                onnx_sha256=manifest.files[entry.file].sha256,
                engine_file=eng.engine_file_name(name, precision, int8, env),
                strongly_typed=explicit or not int8,
                precision=precision,
                int8=int8,
                flags=tuple(flags),
                profile=eng.derive_profile(entry.spec, ranges),
            )
        )
    cache = options.timing_cache or model_dir / timing_cache_name(env)
    return BuildPlan(model_dir, env, options, tuple(plans), Path(cache))


class _Logger:
    """A TensorRT ILogger that keeps errors for the one-line failure message."""

    def __init__(self, trt: Any) -> None:
        base = trt.ILogger

        class Logger(base):  # type: ignore[misc, valid-type]
            def __init__(inner) -> None:
                base.__init__(inner)
                inner.errors: list[str] = []

            def log(inner, severity: Any, msg: str) -> None:
                if severity in (trt.ILogger.ERROR, trt.ILogger.INTERNAL_ERROR):
                    inner.errors.append(str(msg))
                    log.error("TensorRT: %s", msg)
                elif severity == trt.ILogger.WARNING:
                    log.warning("TensorRT: %s", msg)
                else:
                    log.debug("TensorRT: %s", msg)

        self.logger = Logger()

    @property
    def last_error(self) -> str:
        return self.logger.errors[-1] if self.logger.errors else "no error message (see --debug)"


def _layer_is_pinned(layer: Any, trt: Any, pinned_nodes: set[str]) -> bool:
    """Weakly typed (INT8) builds: the parser names layers after ONNX nodes; norms/softmax also by type."""
    kind = getattr(layer, "type", None)
    if kind in {getattr(trt.LayerType, n, None) for n in ("NORMALIZATION", "SOFTMAX")} - {None}:
        return True
    name = str(layer.name)
    return name in pinned_nodes or any(name.startswith(n + "_") or name.startswith(n + "/") for n in pinned_nodes)


def explicit_quantization(tensorrt_version: str) -> bool:
    """INT8 from Q/DQ nodes in a strongly typed network (True), or TensorRT's implicit calibrator (False).

    The real bindings mark `IBuilderConfig.int8_calibrator` "Deprecated in TensorRT 10.1.
    Superseded by explicit quantization." and the INT8/FP16/BF16 builder flags and per-layer
    precision "Deprecated in TensorRT 10.12. Superseded by strong typing."; TensorRT 11 has
    only the explicit path. The implicit calibrator path is kept for 10.0, where it is not
    deprecated.
    """
    return eng.tensorrt_release(tensorrt_version)[:2] >= (10, 1)


def quantize_qdq(src: Path, dst: Path, batches: Sequence[np.ndarray], keep_fp32: set[str], input_name: str) -> None:
    """Symmetric INT8 Q/DQ (what TensorRT executes) on Conv/MatMul/Gemm, entropy-calibrated on the CPU.

    Calibrated by ONNX Runtime's quantiser on the preprocessed images; the fp32-pinned nodes
    (norms, attention softmax, mask-logit producers) are excluded. Written atomically.
    """
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.it, None)
            return None if batch is None else {input_name: batch}

    tmp = dst.with_name(dst.name + f".tmp{os.getpid()}")
    try:
        quantize_static(
            str(src),
            str(tmp),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv", "MatMul", "Gemm"],
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=sorted(keep_fp32),
            calibrate_method=CalibrationMethod.Entropy,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _pin_fp32_layers(network: Any, trt: Any, pinned: set[str]) -> int:
    """Implicit INT8 only: keep the pinned layers' float outputs fp32; shape/index tensors untouched.

    TensorRT logs an error for a non-INT32/INT64 type on a shape tensor (which then became
    the build's `last_error`), so only float outputs are set, and shape layers never.
    """
    floats = {getattr(trt, n, None) for n in ("float32", "float16", "bfloat16")} - {None}
    shape_layer = getattr(trt.LayerType, "SHAPE", None)
    count = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type == shape_layer or not _layer_is_pinned(layer, trt, pinned):
            continue
        outputs = [j for j in range(layer.num_outputs) if layer.get_output(j).dtype in floats]
        if not outputs:
            continue
        layer.precision = trt.float32
        for j in outputs:
            layer.set_output_type(j, trt.float32)
        count += 1
    return count


def _calibration_batches(folder: Path, manifest: Manifest, limit: int) -> list[np.ndarray]:
    images = list_images(folder)[:limit]
    if not images:
        raise UsageError(f"--calib {folder}: no images to calibrate INT8 with")
    return [pixel_values(read_image(p), manifest.preprocess) for p in images]


def _calibrator(trt: Any, batches: Sequence[np.ndarray], cache_path: Path) -> Any:
    """An entropy calibrator over preprocessed images (TensorRT 10 implicit INT8)."""
    base = trt.IInt8EntropyCalibrator2

    class Calibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self.index = 0
            self.stream = _cuda.Stream()
            self.buffer = _cuda.DeviceBuffer(max(b.nbytes for b in batches))

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: Sequence[str]) -> list[int] | None:
            if self.index >= len(batches):
                return None
            self.buffer.upload(batches[self.index], self.stream)
            self.stream.synchronize()
            self.index += 1
            return [self.buffer.ptr]

        def read_calibration_cache(self) -> bytes | None:
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            atomic_write_bytes(cache_path, bytes(cache))

    return Calibrator()


def _build_one(
    trt: Any,
    builder: Any,
    logger: _Logger,
    plan: GraphPlan,
    network_onnx: Path,
    options: BuildOptions,
    cache: Any,
    pinned: set[str],
    calibrator: Any,
) -> bytes:
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if plan.strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger.logger)
    if not parser.parse_from_file(str(network_onnx)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ModelError(f"TensorRT cannot parse {plan.graph} ({network_onnx.name}): {errors[0] if errors else logger.last_error}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gb * (1 << 30)))
    config.builder_optimization_level = options.optimization_level
    if plan.precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32: TF32 would change results by ~1e-3
    if plan.int8 and not plan.strongly_typed:  # implicit INT8 (TensorRT 10.0 only, see explicit_quantization)
        if options.precision in ("fp16", "bf16"):
            config.set_flag(trt.BuilderFlag.FP16 if options.precision == "fp16" else trt.BuilderFlag.BF16)
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        config.int8_calibrator = calibrator
        _pin_fp32_layers(network, trt, pinned)
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if options.hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    profile = builder.create_optimization_profile()
    for name, r in plan.profile.items():
        profile.set_shape(name, r.min, r.opt, r.max)
    if config.add_optimization_profile(profile) < 0:
        raise ModelError(f"TensorRT rejected the optimisation profile of {plan.graph}: {logger.last_error}")
    if not config.set_timing_cache(cache, False):
        raise ModelError(f"TensorRT rejected the timing cache for {plan.graph}: {logger.last_error}")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelError(f"TensorRT failed to build {plan.graph}: {logger.last_error}")
    return bytes(serialized)


@dataclass
class BuildResult:
    entries: tuple[eng.EngineEntry, ...]
    report: accuracy.GateReport
    plan: BuildPlan


def build_engines(
    model_dir: str | os.PathLike[str],
    options: BuildOptions | None = None,
    *,
    progress: Progress | None = None,
    dry_run: bool = False,
) -> BuildResult | BuildPlan:
    """Build, gate and record the engines of an export directory (see the module docstring)."""
    opts = options or BuildOptions()
    say = progress or (lambda msg: log.info(msg))
    root = Path(model_dir)
    manifest = load_manifest(root)
    trt = tensorrt_module()
    env = gpu_environment(opts.device_id)
    # Build where we report: the builder, calibrator and timing cache use the current device of
    # this thread, which is 0 unless selected.
    _cuda.set_device(opts.device_id)
    plan = plan_build(root, manifest, opts, env)
    for line in plan.describe():
        say(line)
    if dry_run:
        return plan
    staging = root / eng.ENGINE_DIR / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        built = _build_all(trt, root, manifest, plan, staging, say)
        say("accuracy gate: segmenting the validation set with the fp32 graphs and the new engines")
        report = run_gate(root, manifest, built, plan)
        say(report.describe())
        accuracy.check(report)  # raises AccuracyGateError: nothing is moved or recorded
        final = []
        for e in built:
            target = root / next(g.engine_file for g in plan.graphs if g.graph == e.graph)
            os.replace(root / e.file, target)
            final.append(replace(e, file=target.relative_to(root).as_posix(), accuracy=report.to_json()))
        append_engine_entries(root, final)
        say(f"recorded {len(final)} engine(s) in {root / 'manifest.json'}")
        return BuildResult(tuple(final), report, plan)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _build_all(trt: Any, root: Path, manifest: Manifest, plan: BuildPlan, staging: Path, say: Progress) -> list[eng.EngineEntry]:
    opts = plan.options
    cache_blob = plan.timing_cache.read_bytes() if plan.timing_cache.is_file() else b""
    logger = _Logger(trt)  # one logger and builder for every graph; both must outlive the builds
    builder = trt.Builder(logger.logger)
    probe = builder.create_builder_config()
    cache = probe.create_timing_cache(cache_blob)
    if cache_blob and not probe.set_timing_cache(cache, False):
        # Measured on another GPU model or TensorRT (a --timing-cache shared between machines):
        # those timings are wrong here, so start empty (and overwrite it) instead of failing the build.
        say(f"timing cache {plan.timing_cache} was measured on another GPU or TensorRT; starting a new one")
        logger.logger.errors.clear()  # TensorRT logged the mismatch as an error; it is handled
        cache = probe.create_timing_cache(b"")
    entries = []
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    for gp in plan.graphs:
        src = root / gp.onnx
        wants_pins = opts.pin_fp32 and (opts.precision != "fp32" or gp.int8)
        pins = fp32_pinned_nodes(onnx.load(str(src), load_external_data=False)) if wants_pins else []
        pinned = {p.name for p in pins}
        network_onnx = src
        if gp.strongly_typed and not gp.int8 and gp.precision != "fp32":
            network_onnx = staging / f"{gp.graph}.{gp.precision}.onnx"
            say(f"{gp.graph}: writing the {gp.precision} graph ({len(pins)} nodes pinned to fp32)")
            convert_file(src, network_onnx, gp.precision, pinned)
        calibrator = None
        if gp.int8:
            assert opts.calib_dir is not None
            batches = _calibration_batches(opts.calib_dir, manifest, opts.calib_images)
            cache_path = root / calibration_cache_name(gp.graph, gp.onnx_sha256, batches)
            if gp.strongly_typed:
                network_onnx = cache_path.with_suffix(".qdq.onnx")
                if network_onnx.is_file():
                    say(f"{gp.graph}: reusing the Q/DQ graph calibrated on the same graph and images ({network_onnx.name})")
                else:
                    say(f"{gp.graph}: calibrating INT8 Q/DQ on {len(batches)} images ({len(pinned)} nodes kept fp32)")
                    quantize_qdq(src, network_onnx, batches, pinned, manifest.graphs[gp.graph].spec.inputs[0].name)
            else:
                calibrator = _calibrator(trt, batches, cache_path)
        say(f"building {gp.graph} ({', '.join(gp.flags)})")
        data = _build_one(trt, builder, logger, gp, network_onnx, opts, cache, pinned, calibrator)
        path = staging / Path(gp.engine_file).name
        atomic_write_bytes(path, data)
        entries.append(
            eng.EngineEntry(
                graph=gp.graph,
                file=path.relative_to(root).as_posix(),
                sha256=sha256_file(path),
                bytes=len(data),
                precision=gp.precision,
                tensorrt=plan.env.tensorrt,
                device_name=plan.env.device_name,
                compute_capability=plan.env.compute_capability,
                source_onnx=gp.onnx,
                source_onnx_sha256=gp.onnx_sha256,
                flags=gp.flags,
                profiles=(gp.profile,),
                pinned_fp32=tuple(sorted(pinned)),
                build={
                    "medsam3_rt": __version__,
                    "tensorrt_version": plan.env.tensorrt_raw or plan.env.tensorrt,  # as trt.__version__ said it
                    "created": created,
                    "workspace_gb": opts.workspace_gb,
                    "optimization_level": opts.optimization_level,
                    "timing_cache": str(plan.timing_cache),
                    "pinned_fp32_summary": _summary(pins),
                    **({"calibration": f"{opts.calib_dir} ({opts.calib_images} images max)"} if gp.int8 else {}),
                },
            )
        )
    atomic_write_bytes(plan.timing_cache, bytes(cache.serialize()))
    say(f"timing cache saved to {plan.timing_cache}")
    return entries


def _summary(pins: Sequence[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in pins:
        out[p.reason] = out.get(p.reason, 0) + 1
    return out


def run_gate(root: Path, manifest: Manifest, built: Sequence[eng.EngineEntry], plan: BuildPlan) -> accuracy.GateReport:
    """Segment the validation set with the reference backend and with the new engines; compare."""
    opts = plan.options
    engines = {e.graph: e for e in built}
    for graph in gc.DETECTOR_GRAPHS:
        if graph not in engines:
            source = manifest.files[manifest.graphs[graph].file].sha256
            found, _ = eng.select_engine(manifest.engines, graph, plan.env, opts.precision, source)
            if found is None:
                raise UsageError(
                    f"the accuracy gate runs the whole image pipeline, and '{graph}' has no {opts.precision} engine for this GPU: "
                    "build it in the same run (omit --graph)"
                )
            engines[graph] = found
    folder = opts.val_dir or opts.calib_dir
    if folder is not None:
        samples = accuracy.load_samples(folder, len(opts.prompts))
        described = f"{folder} ({len(samples)} images{', with ground truth' if any(s.labels is not None for s in samples) else ''})"
    else:
        samples = accuracy.synthetic_samples(manifest.dims.image_size)
        described = f"{len(samples)} synthetic test cards (no --val/--calib given)"
    reference_backend = resolve(opts.reference, BackendOptions(device_id=opts.device_id))
    candidate_backend = TensorrtBackend(BackendOptions(device_id=opts.device_id, keep_on_device=True), engines=engines)
    reference = Segmenter(Model(root, reference_backend, verify="none"))
    candidate = Segmenter(Model(root, candidate_backend, verify="none"))
    try:
        pairs = accuracy.mask_pairs(reference, candidate, samples, opts.prompts)
        report = accuracy.gate(
            pairs,
            max_dice_drop=opts.max_dice_drop,
            reference=f"fp32 ONNX graphs on {opts.reference}",
            candidate=f"TensorRT {plan.env.tensorrt} {opts.precision}{' + int8 backbone' if opts.int8 else ''}",
            samples=len(samples),
        )
        deltas = _graph_deltas(reference.model, candidate.model, manifest, samples[0], opts.prompts, plan)
    finally:
        reference.close()
        candidate.close()
    return replace(report, graph_deltas=deltas, validation_set=described)


def _graph_deltas(
    reference: Model, candidate: Model, manifest: Manifest, sample: accuracy.Sample, prompts: Sequence[str], plan: BuildPlan
) -> dict[str, dict[str, float]]:
    """Per built graph: max |new - fp32| per output on one real (or, for the tracker, synthetic) input."""
    ids, attn = reference.tokenizer.encode(list(prompts))
    feeds: dict[str, dict[str, Any]] = {
        gc.TEXT_ENCODER: {gc.INPUT_IDS: ids, gc.ATTENTION_MASK: attn},
        gc.IMAGE_BACKBONE: {gc.PIXEL_VALUES: pixel_values(sample.image, manifest.preprocess)},
    }
    ref_text = reference.run(gc.TEXT_ENCODER, feeds[gc.TEXT_ENCODER])
    ref_img = {k: np.asarray(v) for k, v in reference.run(gc.IMAGE_BACKBONE, feeds[gc.IMAGE_BACKBONE]).items()}
    feeds[gc.DETECTOR] = {
        **{k: ref_img[k] for k in gc.DET_FPN},
        gc.TEXT_FEATURES: ref_text[gc.TEXT_FEATURES],
        gc.TEXT_MASK: attn.astype(bool),
    }
    out = {}
    for gp in plan.graphs:
        spec = manifest.graphs[gp.graph].spec
        if gp.graph not in feeds:
            opt = {axis: r.opt for axis, r in eng.axis_ranges(manifest.tracker, plan.options.axes).items()}
            feeds[gp.graph] = accuracy.synthetic_feeds(spec, opt)
        ref = reference.run(gp.graph, feeds[gp.graph])
        new = candidate.run(gp.graph, feeds[gp.graph])
        out[gp.graph] = accuracy.output_deltas(ref, new)
    return out
