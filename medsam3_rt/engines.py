"""TensorRT engines of an export directory: optimisation-profile axes, `engines[]` entries, compatibility.

An engine is only valid for the TensorRT version and the GPU that built it, and for the
exact ONNX graph it was built from. `medsam3-rt build` records all three in an
`EngineEntry` appended to `manifest.json`; before a runtime deserialises an engine,
`check_compatible` compares the entry with the running TensorRT and GPU and the manifest's
graph hash, and refuses a mismatch with a one-line `EngineIncompatibleError` that says how
to rebuild. Engine files are not listed in the manifest's `files` (CPU users would hash GBs
they never load); each entry carries its own SHA-256, checked on the bytes that are
deserialised.

This module is torch- and TensorRT-free: the builder (`medsam3_export.tensorrt_build`), the
TensorRT runtime backend and the ONNX Runtime TensorRT provider all take their profiles
from `derive_profile`, so every path uses the same shape ranges.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import graph_contract as gc
from .errors import EngineIncompatibleError, ManifestError, UsageError

ENGINE_DIR = "engines"
PRECISIONS = ("fp32", "fp16", "bf16")
# Engine preference when several built engines fit this GPU and no precision was asked for.
PRECISION_PREFERENCE = ("fp16", "bf16", "fp32")


@dataclass(frozen=True)
class AxisRange:
    """min <= opt <= max of one symbolic axis; TensorRT tunes kernels for `opt`."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise UsageError(f"axis range needs 1 <= min <= opt <= max, got {self.min}:{self.opt}:{self.max}")


# The one place the default optimisation-profile ranges live (docs/gpu.md).
#   P  prompts per text-encoder / detector batch. `segment` takes up to 255 prompts: batches
#      above max run in chunks of max (outputs are per prompt), so max only bounds memory
#      (the detector's pred_masks are P x Q x 4s x 4s float: ~1 GB at P=16, Q=200, 288^2).
#   N  tracked objects per tracker batch, chunked the same way.
#   M  memory frames per object: SAM3 reads num_maskmem = 7 (1 conditioning + 6 recent),
#      and up to 4 conditioning frames + 6 recent with reconditioning, hence max 10.
#   K  object pointers per object: max_object_pointers_in_encoder = 16.
AXIS_DEFAULTS: dict[str, AxisRange] = {
    "P": AxisRange(1, 1, 16),
    "N": AxisRange(1, 4, 32),
    "M": AxisRange(1, 7, 10),
    "K": AxisRange(1, 16, 16),
}


def _count(tracker: Mapping[str, Any] | None, *keys: str) -> int | None:
    for key in keys:
        value = (tracker or {}).get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
    return None


def parse_axis_override(text: str) -> tuple[str, AxisRange]:
    """`P=1:4:32` (min:opt:max) or `P=8` (min 1, opt = max = 8) -> ("P", AxisRange)."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise UsageError(f"--axis '{text}': expected AXIS=MIN:OPT:MAX, e.g. P=1:4:32")
    try:
        parts = [int(v) for v in value.split(":")]
    except ValueError:
        raise UsageError(f"--axis '{text}': MIN:OPT:MAX must be integers") from None
    if len(parts) == 1:
        return name, AxisRange(1, parts[0], parts[0])
    if len(parts) != 3:
        raise UsageError(f"--axis '{text}': expected AXIS=MIN:OPT:MAX or AXIS=MAX")
    return name, AxisRange(*parts)


def axis_ranges(tracker: Mapping[str, Any] | None = None, overrides: Mapping[str, AxisRange] | None = None) -> dict[str, AxisRange]:
    """The defaults, set from the manifest's tracker settings where present, then the user's overrides.

    Tracker keys read (transformers' Sam3VideoModel config names, as the export writes them):
    num_maskmem and max_cond_frame_num -> M, max_object_pointers_in_encoder -> K.
    """
    ranges = dict(AXIS_DEFAULTS)
    maskmem = _count(tracker, "num_maskmem")
    if maskmem is not None:  # 1 conditioning + (num_maskmem - 1) recent, up to max_cond_frame_num conditioning frames
        cond = _count(tracker, "max_cond_frame_num") or 1
        ranges["M"] = AxisRange(1, maskmem, maskmem - 1 + max(cond, 1))
    pointers = _count(tracker, "max_object_pointers_in_encoder", "max_object_pointers")
    if pointers is not None:
        ranges["K"] = AxisRange(1, pointers, pointers)
    ranges.update(overrides or {})
    return ranges


Shape = tuple[int, ...]


@dataclass(frozen=True)
class ShapeRange:
    min: Shape
    opt: Shape
    max: Shape

    def to_json(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_json(cls, data: Any, where: str) -> ShapeRange:
        try:
            r = cls(*(tuple(int(v) for v in data[k]) for k in ("min", "opt", "max")))
        except (KeyError, TypeError, ValueError):
            raise ManifestError(f"{where}: profile shapes need 'min', 'opt' and 'max' lists of ints") from None
        if not len(r.min) == len(r.opt) == len(r.max) or any(not a <= b <= c for a, b, c in zip(r.min, r.opt, r.max)):
            raise ManifestError(f"{where}: profile shapes need equal ranks and min <= opt <= max, got {r.to_json()}")
        return r


Profile = dict[str, ShapeRange]


def derive_profile(spec: gc.GraphSpec, ranges: Mapping[str, AxisRange]) -> Profile:
    """The optimisation profile of one graph: static dims fixed, symbolic axes from `ranges`."""
    profile: Profile = {}
    for t in spec.inputs:
        lo, mid, hi = [], [], []
        for d in t.shape:
            if isinstance(d, int):
                lo.append(d), mid.append(d), hi.append(d)
                continue
            if d not in ranges:
                raise UsageError(f"{spec.name}: input '{t.name}' has axis '{d}' with no range; pass --axis {d}=MIN:OPT:MAX")
            r = ranges[d]
            lo.append(r.min), mid.append(r.opt), hi.append(r.max)
        profile[t.name] = ShapeRange(tuple(lo), tuple(mid), tuple(hi))
    return profile


def profile_shape_strings(profile: Mapping[str, ShapeRange]) -> tuple[str, str, str]:
    """ONNX Runtime's TensorRT provider format: 'name:1x32,other:1x3x224x224' for min, opt, max."""

    def fmt(which: str) -> str:
        return ",".join(f"{name}:{'x'.join(str(v) for v in getattr(r, which))}" for name, r in profile.items())

    return fmt("min"), fmt("opt"), fmt("max")


def batch_axis(spec: gc.GraphSpec) -> str | None:
    """The symbolic axis that leads every output and every input that has it (P or N), if any.

    Such a graph is independent per batch row, so a batch larger than the profile's max can
    run in chunks and be concatenated. M and K never qualify: they are not leading.
    """
    lead = {t.shape[0] for t in spec.outputs if t.shape and isinstance(t.shape[0], str)}
    if len(lead) != 1 or any(not t.shape or t.shape[0] not in lead for t in spec.outputs):
        return None
    axis = lead.pop()
    for t in spec.inputs:
        if axis in t.shape[1:]:
            return None
    return axis if any(t.shape and t.shape[0] == axis for t in spec.inputs) else None


# -- engine entries ----------------------------------------------------------------------


@dataclass(frozen=True)
class EngineEntry:
    """One built engine, as recorded in `manifest.json` `engines[]`.

    precision          fp32 | fp16 | bf16 (the network's float type; "int8" in flags adds INT8)
    tensorrt           TensorRT version that built it (engines are version-locked unless
                       flags has "version_compatible")
    device_name, compute_capability   the GPU that built it ("NVIDIA H100 80GB HBM3", "9.0")
    flags              builder flags in lower case, e.g. fp16, obey_precision_constraints, int8,
                       strongly_typed, version_compatible, hardware_compatible, tf32_disabled
    source_onnx(_sha256)  the graph file it was built from; must equal the manifest's
    profiles           one dict per optimisation profile: input -> min/opt/max shapes
    pinned_fp32        layers kept in float32 (norms, attention softmax, final mask logits)
    accuracy           the accuracy-gate report of the build (see medsam3_export.accuracy)
    build              medsam3-rt version, time, workspace, timing cache, optimisation level
    """

    graph: str
    file: str
    sha256: str
    bytes: int
    precision: str
    tensorrt: str
    device_name: str
    compute_capability: str
    source_onnx: str
    source_onnx_sha256: str
    flags: tuple[str, ...] = ()
    profiles: tuple[Profile, ...] = ()
    pinned_fp32: tuple[str, ...] = ()
    accuracy: dict[str, Any] = field(default_factory=dict)
    build: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, bool, str, str, str]:
        """Entries with the same key replace each other when appended."""
        return (self.graph, self.precision, "int8" in self.flags, self.compute_capability, self.device_name, self.tensorrt)

    @property
    def label(self) -> str:
        return self.precision + ("+int8" if "int8" in self.flags else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "graph": self.graph,
            "file": self.file,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "precision": self.precision,
            "tensorrt": self.tensorrt,
            "device_name": self.device_name,
            "compute_capability": self.compute_capability,
            "source_onnx": self.source_onnx,
            "source_onnx_sha256": self.source_onnx_sha256,
            "flags": list(self.flags),
            "profiles": [{name: r.to_json() for name, r in p.items()} for p in self.profiles],
            "pinned_fp32": list(self.pinned_fp32),
            "accuracy": self.accuracy,
            "build": self.build,
        }

    @classmethod
    def from_json(cls, data: Any, index: int = 0) -> EngineEntry:
        where = f"manifest engines[{index}]"
        if not isinstance(data, dict):
            raise ManifestError(f"{where} must be an object")
        required = ("graph", "file", "sha256", "precision", "tensorrt", "device_name", "compute_capability", "source_onnx_sha256")
        missing = [k for k in required if not isinstance(data.get(k), str) or not data.get(k)]
        if missing:
            raise ManifestError(f"{where} needs string fields {missing}")
        rel = Path(data["file"])
        if rel.is_absolute() or ".." in rel.parts:
            raise ManifestError(f"{where}: file '{data['file']}' must be a relative path inside the export directory")
        if data["precision"] not in PRECISIONS:
            raise ManifestError(f"{where}: precision '{data['precision']}' is not one of {', '.join(PRECISIONS)}")
        try:
            size = int(data.get("bytes", 0))
            profiles = tuple(
                {str(name): ShapeRange.from_json(r, f"{where} profile {i} input '{name}'") for name, r in p.items()}
                for i, p in enumerate(data.get("profiles", []))
            )
            flags = tuple(str(f) for f in data.get("flags", []))
            pinned = tuple(str(n) for n in data.get("pinned_fp32", []))
        except (TypeError, AttributeError, ValueError):
            raise ManifestError(f"{where}: 'bytes', 'profiles', 'flags' or 'pinned_fp32' is malformed") from None
        return cls(
            graph=data["graph"],
            file=data["file"],
            sha256=data["sha256"],
            bytes=size,
            precision=data["precision"],
            tensorrt=data["tensorrt"],
            device_name=data["device_name"],
            compute_capability=data["compute_capability"],
            source_onnx=str(data.get("source_onnx", "")),
            source_onnx_sha256=data["source_onnx_sha256"],
            flags=flags,
            profiles=profiles,
            pinned_fp32=pinned,
            accuracy=dict(data.get("accuracy") or {}),
            build=dict(data.get("build") or {}),
        )


def parse_engines(data: Any, graphs: Iterable[str] | None = None) -> tuple[EngineEntry, ...]:
    """The manifest's `engines` list as typed entries (validated; unknown graphs refused)."""
    if data is None:
        return ()
    if not isinstance(data, list):
        raise ManifestError("manifest 'engines' must be a list")
    entries = tuple(EngineEntry.from_json(e, i) for i, e in enumerate(data))
    known = set(graphs) if graphs is not None else None
    for i, e in enumerate(entries):
        if known is not None and e.graph not in known:
            raise ManifestError(f"manifest engines[{i}] is for graph '{e.graph}', which this export does not have")
    return entries


# -- compatibility ----------------------------------------------------------------------


@dataclass(frozen=True)
class GpuEnvironment:
    """What the running process offers: TensorRT version and the selected GPU.

    `tensorrt` is the normalised release (`normalize_tensorrt_version`), `tensorrt_raw` the
    string the library reported (`trt.__version__`), kept for the record.
    """

    tensorrt: str
    device_name: str
    compute_capability: str
    tensorrt_raw: str = ""


def _version_tuple(v: str) -> tuple[int, ...]:
    out = []
    for part in v.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def tensorrt_release(version: str) -> tuple[int, ...]:
    """The numeric TensorRT release in a version string: major.minor.patch[.build].

    `trt.__version__` varies by release: `10.3.0`, `10.7.0.post1` (a Python packaging
    post-release of the same library), `10.8.0.43` (with the build number); the C library
    reports major.minor.patch (getInferLibVersion) plus NV_TENSORRT_BUILD. Suffixes that are
    not a plain number (`post1`, `+cuda12`, `rc1`) are packaging, not the library, and dropped.
    """
    out: list[int] = []
    for part in version.strip().split(".")[:4]:
        digits = part[: len(part) - len(part.lstrip("0123456789"))]
        if not digits:
            break
        out.append(int(digits))
        if digits != part:  # "0+cuda12", "0rc1": a local or pre-release tag ends the number
            break
    return tuple(out)


def normalize_tensorrt_version(version: str) -> str:
    """`10.7.0.post1` -> `10.7.0`, `10.8.0.43` -> `10.8.0.43` (what compatibility is decided on)."""
    release = tensorrt_release(version)
    return ".".join(str(v) for v in release) if release else version.strip()


def same_tensorrt_release(built: str, here: str) -> bool:
    """TensorRT's rule for plain engines: the same major.minor.patch (and build, where both know it).

    A plain engine only deserialises in the TensorRT release that built it. The build number
    is compared only when both sides record one: the Python wheels of 10.0-10.7 report no
    build, so `10.3.0` (Python) and `10.3.0.26` (the C library) are the same release.
    """
    a, b = tensorrt_release(built), tensorrt_release(here)
    if len(a) < 3 or len(b) < 3 or a[:3] != b[:3]:
        return False
    return len(a) < 4 or len(b) < 4 or a[3] == b[3]


def _cc_tuple(cc: str) -> tuple[int, int]:
    major, _, minor = cc.partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        return (0, 0)


def incompatibility(entry: EngineEntry, env: GpuEnvironment) -> str | None:
    """Why `entry` cannot run under `env` (one phrase), or None if it can.

    Engines are tied to the TensorRT release (`same_tensorrt_release`) and GPU model unless
    built with version compatibility (same major, runtime not older) or hardware
    compatibility (Ampere or newer).
    """
    if "version_compatible" in entry.flags:
        built, here = tensorrt_release(entry.tensorrt)[:3], tensorrt_release(env.tensorrt)[:3]
        if not built or not here or built[0] != here[0] or here < built:
            return f"it was built version-compatible with TensorRT {entry.tensorrt}, which TensorRT {env.tensorrt} cannot load"
    elif not same_tensorrt_release(entry.tensorrt, env.tensorrt):
        return f"it was built with TensorRT {entry.tensorrt}, this machine has TensorRT {env.tensorrt}"
    if "hardware_compatible" in entry.flags:
        if _cc_tuple(env.compute_capability) < (8, 0):
            return f"it was built hardware-compatible (Ampere or newer), this GPU {env.device_name} is sm {env.compute_capability}"
    elif entry.compute_capability != env.compute_capability or entry.device_name != env.device_name:
        return (
            f"it was built for {entry.device_name} (sm {entry.compute_capability}), "
            f"this machine has {env.device_name} (sm {env.compute_capability})"
        )
    return None


def rebuild_hint(model_dir: str | os.PathLike[str], entry: EngineEntry) -> str:
    extra = " --int8 --calib DIR" if "int8" in entry.flags else ""
    return f"rebuild it here with `medsam3-rt build {model_dir} --precision {entry.precision}{extra}`"


def check_compatible(
    entry: EngineEntry, env: GpuEnvironment, model_dir: str | os.PathLike[str], source_onnx_sha256: str | None = None
) -> None:
    """Refuse an engine built elsewhere or from another graph, before anything deserialises it."""
    why = incompatibility(entry, env)
    if why is None and source_onnx_sha256 is not None and entry.source_onnx_sha256 != source_onnx_sha256:
        why = (
            f"it was built from a {entry.graph} graph with SHA-256 {entry.source_onnx_sha256[:12]}..., "
            f"the export's graph is {source_onnx_sha256[:12]}... (re-exported since)"
        )
    if why is None and not (Path(model_dir) / entry.file).is_file():
        why = "the file is missing"
    if why is not None:
        raise EngineIncompatibleError(f"engine '{entry.file}' ({entry.graph}, {entry.label}): {why}; {rebuild_hint(model_dir, entry)}")


def verify_engine_bytes(entry: EngineEntry, data: bytes, model_dir: str | os.PathLike[str]) -> None:
    """The exact bytes about to be deserialised must be the ones the build recorded."""
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != entry.bytes or digest != entry.sha256:
        raise EngineIncompatibleError(
            f"engine '{entry.file}' has SHA-256 {digest[:12]}... ({len(data)} bytes), the manifest records "
            f"{entry.sha256[:12]}... ({entry.bytes} bytes): the file was modified or truncated; {rebuild_hint(model_dir, entry)}"
        )


def select_engine(
    entries: Sequence[EngineEntry], graph: str, env: GpuEnvironment, precision: str | None = None, source_onnx_sha256: str | None = None
) -> tuple[EngineEntry | None, list[str]]:
    """The best engine of `graph` that runs under `env` (and was built from this graph file), and why each other one does not."""
    reasons: list[str] = []
    fitting: list[EngineEntry] = []
    for e in entries:
        if e.graph != graph:
            continue
        if precision is not None and e.label != precision and e.precision != precision:
            reasons.append(f"{e.file}: {e.label}, {precision} was asked for")
            continue
        why = incompatibility(e, env)
        if why is None and source_onnx_sha256 is not None and e.source_onnx_sha256 != source_onnx_sha256:
            why = "built from another version of the graph (re-exported since)"
        if why is None:
            fitting.append(e)
        else:
            reasons.append(f"{e.file}: {why}")
    if not fitting:
        return None, reasons
    order = {p: i for i, p in enumerate(PRECISION_PREFERENCE)}
    # Among fitting engines: preferred precision first, plain before INT8, then the newest build.
    fitting.sort(key=lambda e: (order.get(e.precision, 99), "int8" in e.flags))
    best = fitting[0]
    same = [e for e in fitting if (e.precision, "int8" in e.flags) == (best.precision, "int8" in best.flags)]
    return max(same, key=lambda e: str(e.build.get("created", ""))), reasons


def engine_file_name(graph: str, precision: str, int8: bool, env: GpuEnvironment) -> str:
    """engines/<graph>.<precision>[+int8].sm<cc>.trt<version>.engine"""
    cc = env.compute_capability.replace(".", "")
    label = precision + ("-int8" if int8 else "")
    return f"{ENGINE_DIR}/{graph}.{label}.sm{cc}.trt{env.tensorrt}.engine"


def with_accuracy(entry: EngineEntry, accuracy: Mapping[str, Any]) -> EngineEntry:
    return replace(entry, accuracy=dict(accuracy))
