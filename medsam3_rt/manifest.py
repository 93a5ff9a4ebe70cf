"""`manifest.json`: the contract between an export directory and every runtime that reads it.

An export directory holds the ONNX graphs (and their external-data files), the tokenizer,
optional prompt packs and engines, and this manifest. The manifest records what produced
the graphs, how to preprocess images, the tensor contract of every graph
(`graph_contract`), the SHA-256 of every file, and the parity report of the export.
`load_manifest` validates all of that and raises a one-line `ManifestError` naming what is
wrong.

The document's shape is the JSON Schema `schemas/manifest.v1.json` (shipped in the package,
read by the C++ library too, described in docs/manifest.md): `parse_manifest` validates
against it first and reports the schema's own `x-message` for the failing place, then checks
what a schema cannot state (graph I/O for the model's dimensions, files listed, tracker
graphs and settings together). This module only reads manifests; `medsam3_export` writes them.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from . import graph_contract as gc
from . import hash_cache
from ._version import __version__
from .engines import EngineEntry, parse_engines
from .errors import IntegrityError, ManifestError, ManifestVersionError, first_line
from .hash_cache import sha256_file as sha256_file  # re-exported for writers and tests

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
SCHEMA = "medsam3-rt/manifest"
SCHEMA_VERSION = 1
SCHEMA_FILE = Path(__file__).parent / "schemas" / f"manifest.v{SCHEMA_VERSION}.json"
INTENDED_USE = "Research use only. Not a medical device; not for diagnostic or treatment decisions."
_TOP_LEVEL_KEYS = {
    "schema",
    "schema_version",
    "model",
    "producer",
    "dims",
    "preprocess",
    "tokenizer",
    "graphs",
    "files",
    "postprocess",
    "tracker",
    "engines",
    "parity",
    "quantization",  # written by `medsam3-rt quantize`
    "weight_storage",  # written by `medsam3-rt fp16-weights`
}

Verify = Literal["hash", "size", "none"]


@dataclass(frozen=True)
class FileEntry:
    path: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class GraphEntry:
    name: str
    file: str
    spec: gc.GraphSpec
    external_data: tuple[str, ...] = ()
    # "fused": attention as com.microsoft::MultiHeadAttention nodes; "unfused": MatMul/Softmax/MatMul
    attention: str = "unfused"
    # "fp16": large weights stored as fp16, each Cast to fp32 before use (`medsam3-rt fp16-weights`); "fp32": as exported
    weights: str = "fp32"

    def to_json(self) -> dict[str, Any]:
        out = {"file": self.file, "external_data": list(self.external_data), "attention": self.attention, **self.spec.to_json()}
        if self.weights != "fp32":
            out["weights"] = self.weights
        return out


@dataclass(frozen=True)
class Preprocess:
    """How an RGB image becomes `pixel_values`, mirroring transformers' Sam3ImageProcessor.

    Stretch-resize to image_size x image_size with antialiased bilinear filtering (width pass,
    then height pass; uint8 images in torch's int16 fixed-point arithmetic with a uint8
    result after each pass, bit-exact with its uint8 kernel; other images in float), then
    (x * rescale_factor - mean) / std per channel.
    """

    image_size: int
    rescale_factor: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resize: str = "stretch"
    interpolation: str = "bilinear"
    antialias: bool = True
    channel_order: str = "RGB"

    def to_json(self) -> dict[str, Any]:
        return {
            "image_size": [self.image_size, self.image_size],
            "resize": self.resize,
            "interpolation": self.interpolation,
            "antialias": self.antialias,
            "uint8_arithmetic": "int16 fixed-point weights, uint8 after the width pass and after the height pass (torch)",
            "channel_order": self.channel_order,
            "layout": "NCHW",
            "rescale_factor": self.rescale_factor,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Preprocess:
        try:
            size = data["image_size"]
            side = int(size[0]) if isinstance(size, list) else int(size)
            if isinstance(size, list) and (len(size) != 2 or size[0] != size[1]):
                raise ValueError("only square image sizes are supported")
            pre = cls(
                image_size=side,
                rescale_factor=float(data["rescale_factor"]),
                mean=tuple(float(v) for v in data["mean"]),  # type: ignore[arg-type]
                std=tuple(float(v) for v in data["std"]),  # type: ignore[arg-type]
                resize=str(data.get("resize", "stretch")),
                interpolation=str(data.get("interpolation", "bilinear")),
                antialias=bool(data.get("antialias", True)),
                channel_order=str(data.get("channel_order", "RGB")),
            )
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise ManifestError(f"manifest 'preprocess' is malformed: {e}") from None
        if len(pre.mean) != 3 or len(pre.std) != 3 or min(pre.std) <= 0:
            raise ManifestError("manifest 'preprocess': mean and std need 3 values, std > 0")
        if (pre.resize, pre.interpolation, pre.channel_order) != ("stretch", "bilinear", "RGB"):
            raise ManifestError(
                f"manifest 'preprocess': resize={pre.resize} interpolation={pre.interpolation} "
                f"channel_order={pre.channel_order} is not supported by medsam3-rt {__version__}"
            )
        return pre


@dataclass(frozen=True)
class TokenizerInfo:
    file: str
    context_length: int
    pad_id: int
    bos_id: int
    eos_id: int
    vocab_size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "kind": "clip-bpe",
            "context_length": self.context_length,
            "pad_id": self.pad_id,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
            "vocab_size": self.vocab_size,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TokenizerInfo:
        try:
            return cls(
                file=str(data["file"]),
                context_length=int(data["context_length"]),
                pad_id=int(data["pad_id"]),
                bos_id=int(data["bos_id"]),
                eos_id=int(data["eos_id"]),
                vocab_size=int(data["vocab_size"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestError(f"manifest 'tokenizer' is malformed: missing or bad {e}") from None


@dataclass(frozen=True)
class Postprocess:
    """Paper protocol (Sec. 4.2): top-1 query per prompt, pixel-wise max confidence across prompts."""

    mask_threshold: float = 0.5

    def to_json(self) -> dict[str, Any]:
        return {
            "score": "sigmoid(pred_logits) * sigmoid(presence_logits)",
            "per_prompt": "top1",
            "mask_upsample": "bilinear (align_corners=False) on sigmoid(pred_masks), then > mask_threshold",
            "mask_threshold": self.mask_threshold,
            "multi_class": "pixelwise_max_probability",
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Postprocess:
        try:
            return cls(mask_threshold=float(data.get("mask_threshold", 0.5)))
        except (TypeError, ValueError) as e:
            raise ManifestError(f"manifest 'postprocess' is malformed: {e}") from None


@dataclass(frozen=True)
class Manifest:
    model: dict[str, Any]
    producer: dict[str, Any]
    dims: gc.ModelDims
    preprocess: Preprocess
    tokenizer: TokenizerInfo
    graphs: dict[str, GraphEntry]
    files: dict[str, FileEntry]
    postprocess: Postprocess = field(default_factory=Postprocess)
    tracker: dict[str, Any] | None = None
    engines: tuple[EngineEntry, ...] = ()  # TensorRT engines, see medsam3_rt.engines
    parity: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def has_tracker(self) -> bool:
        return all(name in self.graphs for name in gc.TRACKER_GRAPHS)

    @property
    def image_batch_axis(self) -> bool:
        """Whether the backbone takes several images per call (exports made with `--batch-axis`)."""
        return gc.image_batch_axis(self.graph(gc.IMAGE_BACKBONE).spec)

    @property
    def text_encoder_sha256(self) -> str:
        """Identifies the text embeddings this model produces; prompt packs are keyed by it."""
        return self.files[self.graphs[gc.TEXT_ENCODER].file].sha256

    def graph(self, name: str) -> GraphEntry:
        try:
            return self.graphs[name]
        except KeyError:
            raise ManifestError(f"this export has no '{name}' graph (it has: {', '.join(self.graphs)})") from None

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "schema_version": self.schema_version,
            "model": self.model,
            "producer": self.producer,
            "dims": self.dims.to_json(),
            "preprocess": self.preprocess.to_json(),
            "tokenizer": self.tokenizer.to_json(),
            "graphs": {name: g.to_json() for name, g in self.graphs.items()},
            "files": {p: {"sha256": f.sha256, "bytes": f.bytes} for p, f in sorted(self.files.items())},
            "postprocess": self.postprocess.to_json(),
            "tracker": self.tracker,
            "engines": [e.to_json() for e in self.engines],
            "parity": self.parity,
        }


# file stamp (path, device, inode, size, mtime, ctime) -> sha256 verified in this process;
# across processes `hash_cache` remembers digests in the user's cache directory.
_VERIFIED: dict[hash_cache.FileStamp, str] = {}


def verify_files(root: Path, files: Mapping[str, FileEntry], verify: Verify = "hash") -> None:
    """Check every recorded file exists with its size and (unless verify='size') its SHA-256."""
    if verify == "none":
        return
    for rel, entry in files.items():
        path = root / rel
        try:
            st = path.stat()
        except FileNotFoundError:
            raise IntegrityError(f"{root}: '{rel}' is listed in {MANIFEST_NAME} but missing; re-run `medsam3-rt export`") from None
        if st.st_size != entry.bytes:
            raise IntegrityError(
                f"{root}: '{rel}' is {st.st_size} bytes, {MANIFEST_NAME} records {entry.bytes}; "
                "the file was modified or truncated; re-run `medsam3-rt export`"
            )
        if verify == "size":
            continue
        key = hash_cache.FileStamp.of(path, st)
        if _VERIFIED.get(key) == entry.sha256:
            continue
        digest = hash_cache.file_sha256(path, st, expected=entry.sha256)
        if digest != entry.sha256:
            raise IntegrityError(
                f"{root}: '{rel}' has SHA-256 {digest[:12]}..., {MANIFEST_NAME} records {entry.sha256[:12]}...; "
                "the file was tampered with or corrupted; re-run `medsam3-rt export`"
            )
        _VERIFIED[key] = digest


@functools.lru_cache(maxsize=1)
def _schema_validator() -> Any:
    import jsonschema

    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _schema_message(schema: Mapping[str, Any], error: Any) -> str:
    """The `x-message` of the innermost schema place that failed (see docs/manifest.md), with `{path[N]}` filled in."""
    node: Any = schema
    message = schema.get("x-message", "manifest does not match its schema")
    for step in error.schema_path:
        if not isinstance(node, Mapping) or step not in node:
            break
        node = node[step]
        if isinstance(node, Mapping) and "x-message" in node:
            message = node["x-message"]
    if error.validator == "required":  # the missing property's own message, when it has one
        props = error.schema.get("properties", {})
        missing = next((k for k in error.schema["required"] if k not in error.instance), None)
        message = props.get(missing, {}).get("x-message", message)
    return message.format(path=[str(p) for p in error.absolute_path])


def check_schema(data: Any) -> None:
    """Validate `data` against `schemas/manifest.v1.json`; a `ManifestError` with the schema's message if it fails.

    Of several failures the one reported is under the first top-level property in the order
    of the schema's `required` list, then its `properties` (the C++ reader picks the same).
    """
    validator = _schema_validator()
    errors = list(validator.iter_errors(data))
    if not errors:
        return
    schema = validator.schema
    order = list(dict.fromkeys([*schema.get("required", []), *schema.get("properties", {})]))

    def rank(e: Any) -> tuple[int, int]:
        if e.absolute_path:
            key = e.absolute_path[0]
        elif e.validator == "required":
            key = next((k for k in schema["required"] if k not in e.instance), "")
        else:
            return (-1, 0)
        return (order.index(key) if key in order else len(order), len(e.absolute_path))

    raise ManifestError(_schema_message(schema, min(errors, key=rank)))


def parse_manifest(data: Any) -> Manifest:
    """Validate a decoded manifest.json against the schema this runtime reads."""
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ManifestError(f'not a medsam3-rt manifest (expected "schema": "{SCHEMA}")')
    version = data.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise ManifestError(f"manifest has an invalid schema_version {version!r}")
    if version > SCHEMA_VERSION:
        raise ManifestVersionError(
            f"manifest schema v{version} was written by a newer medsam3-rt; this is {__version__}, which reads "
            f"up to v{SCHEMA_VERSION}: pip install -U medsam3-rt"
        )
    # The shape (sections present and of the right type, graph and file entries, list-typed fields) is the
    # schema's job; what follows are the rules it cannot state: graph names and I/O against this runtime,
    # cross-references between sections, value conversions.
    check_schema(data)
    unknown = set(data) - _TOP_LEVEL_KEYS
    if unknown:
        log.warning("manifest has unknown top-level keys %s (ignored)", sorted(unknown))
    dims = gc.ModelDims.from_json(data["dims"])
    expected = gc.expected_specs(dims)
    graphs: dict[str, GraphEntry] = {}
    for name, entry in data["graphs"].items():
        if name not in expected:
            raise ManifestError(f"manifest lists graph '{name}', which this runtime does not know (or the model has no tracker)")
        lists = {key: entry.get(key, []) for key in ("inputs", "outputs", "external_data")}
        spec = gc.GraphSpec(
            name,
            tuple(gc.TensorSpec.from_json(t, f"graph '{name}'") for t in lists["inputs"]),
            tuple(gc.TensorSpec.from_json(t, f"graph '{name}'") for t in lists["outputs"]),
        )
        if name == gc.IMAGE_BACKBONE and spec != expected[name] and spec == gc.backbone_spec(dims, "B"):
            pass  # an export with an image batch axis (several images per backbone call)
        elif spec != expected[name]:
            raise ManifestError(f"manifest graph '{name}' declares I/O {_describe(spec)}, this runtime expects {_describe(expected[name])}")
        graphs[name] = GraphEntry(
            name, entry["file"], spec, tuple(lists["external_data"]), entry.get("attention", "unfused"), entry.get("weights", "fp32")
        )
    missing = [g for g in gc.DETECTOR_GRAPHS if g not in graphs]
    if missing:
        raise ManifestError(f"manifest has no {', '.join(missing)} graph(s); every export needs {', '.join(gc.DETECTOR_GRAPHS)}")
    present_trk = [g for g in gc.TRACKER_GRAPHS if g in graphs]
    if present_trk and len(present_trk) != len(gc.TRACKER_GRAPHS):
        raise ManifestError(f"manifest has tracker graphs {present_trk} but needs all of {list(gc.TRACKER_GRAPHS)}")
    files: dict[str, FileEntry] = {}
    for rel, entry in data["files"].items():
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise ManifestError(f"manifest file entry '{rel}' must be a relative path inside the export directory")
        try:
            files[rel] = FileEntry(rel, str(entry["sha256"]), int(entry["bytes"]))
        except (KeyError, TypeError, ValueError):
            raise ManifestError(f"manifest file entry '{rel}' needs 'sha256' and 'bytes'") from None
    tokenizer = TokenizerInfo.from_json(data["tokenizer"])
    for g in graphs.values():
        for rel in (g.file, *g.external_data):
            if rel not in files:
                raise ManifestError(f"graph '{g.name}' file '{rel}' has no entry in the manifest's 'files'")
    if tokenizer.file not in files:
        raise ManifestError(f"tokenizer file '{tokenizer.file}' has no entry in the manifest's 'files'")
    preprocess = Preprocess.from_json(data["preprocess"])
    if preprocess.image_size != dims.image_size:
        raise ManifestError(f"manifest preprocess image size {preprocess.image_size} != dims.image_size {dims.image_size}")
    tracker = data.get("tracker")
    if bool(present_trk) != isinstance(tracker, dict):
        raise ManifestError("manifest 'tracker' settings and tracker graphs must come together")
    engines = parse_engines(data.get("engines", []), graphs)
    return Manifest(
        model=data["model"],
        producer=data["producer"],
        dims=dims,
        preprocess=preprocess,
        tokenizer=tokenizer,
        graphs=graphs,
        files=files,
        postprocess=Postprocess.from_json(data.get("postprocess") or {}),
        tracker=tracker,
        engines=engines,
        parity=data.get("parity") or {},
        schema_version=version,
    )


def _describe(spec: gc.GraphSpec) -> str:
    fmt = lambda ts: ", ".join(f"{t.name}:{t.dtype}{list(t.shape)}" for t in ts)  # noqa: E731
    return f"({fmt(spec.inputs)}) -> ({fmt(spec.outputs)})"


def load_manifest(model_dir: str | os.PathLike[str], verify: Verify = "hash") -> Manifest:
    """Read, validate and integrity-check the manifest of an export directory."""
    root = Path(model_dir)
    if not root.exists():
        raise ManifestError(f"model directory '{root}' does not exist")
    if not root.is_dir():
        raise ManifestError(f"'{root}' is not a directory; pass the folder written by `medsam3-rt export`")
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"'{root}' has no {MANIFEST_NAME}; is it an export directory? Create one with `medsam3-rt export`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:  # RecursionError: absurdly deep nesting
        raise ManifestError(f"{path} is not valid JSON ({first_line(e)}); re-run `medsam3-rt export`") from None
    manifest = parse_manifest(data)
    verify_files(root, manifest.files, verify)
    return manifest
