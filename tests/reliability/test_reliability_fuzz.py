"""Property-based fuzzing of every loader and of the manifest parser (hypothesis).

The property is the same everywhere: whatever the bytes or JSON, a loader returns a valid
result or raises a `Medsam3Error` (one line, with an exit code); any other exception is a bug.
Inputs start from valid files (PNG/JPEG/BMP/TIFF, NIfTI, DICOM, prompt packs, a real
manifest) and are mutated (byte edits at interesting values, truncation, splicing, JSON
values replaced, deleted, added or retyped), plus raw random bytes.

Bounded for CI: a few hundred examples per target, no deadline, no example database on disk
(~30-60 s in all on 2 cores). Set MEDSAM3_RT_FUZZ_EXAMPLES to run more. `tests/fuzz_atheris.py`
runs the same targets under atheris (coverage-guided, outside the default suite).
"""

from __future__ import annotations

import copy
import gzip
import json
import math
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import cv2
import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import phantom
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from medsam3_rt.errors import Medsam3Error
from medsam3_rt.io import images as images_io
from medsam3_rt.io.images import declared_size, read_image
from medsam3_rt.io.volumes import read_dicom_series, read_nifti
from medsam3_rt.manifest import MANIFEST_NAME, Manifest, load_manifest, parse_manifest
from medsam3_rt.preprocess import to_rgb
from medsam3_rt.prompt_pack import PromptPack, read_prompt_pack, write_prompt_pack

EXAMPLES = int(os.environ.get("MEDSAM3_RT_FUZZ_EXAMPLES", "0")) or None
# CI replays the same 150 examples per target (derandomize: a red CI run is reproducible);
# MEDSAM3_RT_FUZZ_EXAMPLES=N explores N fresh random examples per target instead.
FUZZ = settings(
    max_examples=EXAMPLES or 150,
    derandomize=EXAMPLES is None,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
CT_SERIES = Path(pydicom.__file__).parent / "data" / "test_files" / "dicomdirtests" / "98892001" / "CT5N"

INTERESTING_INTS = [0, 1, 2, 3, 7, 8, 16, 127, 128, 255, 256, 4095, 32767, 32768, 65535, 2**31 - 1, 2**31, 2**32 - 1]
INTERESTING_FLOATS = [0.0, -0.0, 1.0, -1.0, 1e-30, 1e30, math.inf, -math.inf, math.nan]


def _packed() -> st.SearchStrategy[bytes]:
    """Byte strings a header field is likely to choke on."""
    ints = st.sampled_from(INTERESTING_INTS).flatmap(
        lambda v: st.sampled_from(
            [
                struct.pack("<B", v & 0xFF),
                struct.pack("<H", v & 0xFFFF),
                struct.pack(">H", v & 0xFFFF),
                struct.pack("<I", v & 0xFFFFFFFF),
                struct.pack(">I", v & 0xFFFFFFFF),
                struct.pack("<h", -(v & 0x7FFF)),
            ]
        )
    )
    floats = st.sampled_from(INTERESTING_FLOATS).map(lambda f: struct.pack("<f", f))
    return st.one_of(ints, floats, st.binary(min_size=1, max_size=8))


@st.composite
def mutated_bytes(draw: st.DrawFn, base: bytes, *, focus: int | None = None) -> bytes:
    """`base` with 1-4 edits: overwrite with an interesting value, flip, insert, delete, truncate."""
    data = bytearray(base)
    limit = min(len(data), focus) if focus else len(data)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        at = draw(st.integers(0, max(limit, 1) - 1)) % len(data)
        kind = draw(st.sampled_from(["value", "flip", "insert", "delete", "truncate"]))
        if kind == "value":
            blob = draw(_packed())
            data[at : at + len(blob)] = blob
        elif kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        else:
            del data[at:]
    return bytes(data)


JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(INTERESTING_INTS + [-1, -(2**63), 2**64]),
    st.integers(),
    st.sampled_from(INTERESTING_FLOATS),
    st.text(max_size=12),
    st.sampled_from(["", "..", "../x", "/etc/passwd", "float32", "int64", "P", "fp16", "detector", "a" * 300]),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3), max_leaves=6
)


@st.composite
def mutated_json(draw: st.DrawFn, base: Any) -> Any:
    """`base` with 1-4 edits at random places: value replaced, key/item deleted or added, type changed."""
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        parent: Any = None
        key: Any = None
        node = data
        while isinstance(node, (dict, list)) and node and draw(st.integers(0, 3)) > 0:
            parent, key = node, draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
            node = node[key]
        kind = draw(st.sampled_from(["replace", "delete", "add", "retype"]))
        if parent is None:
            if kind == "add" and isinstance(data, dict):
                data[draw(st.text(max_size=8))] = draw(JSON_VALUES)
            continue
        if kind == "replace":
            parent[key] = draw(JSON_VALUES)
        elif kind == "delete":
            del parent[key]
        elif kind == "add" and isinstance(node, dict):
            node[draw(st.text(max_size=8))] = draw(JSON_VALUES)
        elif kind == "add" and isinstance(node, list):
            node.append(draw(JSON_VALUES))
        else:  # retype: the same content as another JSON type
            parent[key] = draw(st.sampled_from([str(node), [node], {"value": node}, node if not isinstance(node, (int, float)) else -node]))
    return data


def _only_medsam3_errors(fn, *args, **kwargs):
    """Run a loader; a Medsam3Error is an accepted outcome (one line), anything else fails the test."""
    try:
        return fn(*args, **kwargs)
    except Medsam3Error as e:
        assert "\n" not in e.message and e.exit_code in (2, 3, 4), repr(e)
        return None


# -- image files ---------------------------------------------------------------------------


def _encoded_images() -> list[tuple[str, bytes]]:
    rgb, grey = phantom(23, 31, seed=3), phantom(19, 17, channels=1, seed=4)
    out = []
    for ext in (".png", ".jpg", ".bmp", ".tif"):
        out.append((ext, cv2.imencode(ext, rgb)[1].tobytes()))
        out.append((ext, cv2.imencode(ext, grey)[1].tobytes()))
    out.append((".png", cv2.imencode(".png", (grey.astype(np.uint16) * 257))[1].tobytes()))
    out.append((".tif", cv2.imencode(".tif", grey.astype(np.float32) / 7)[1].tobytes()))
    return out


IMAGES = _encoded_images()


@FUZZ
@given(
    pick=st.integers(0, len(IMAGES) - 1),
    data=st.data(),
    suffix=st.sampled_from([None, ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"]),
)
def test_image_loader(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, pick: int, data, suffix) -> None:
    # keep header-declared sizes small so a mutated header never makes OpenCV allocate gigabytes here
    monkeypatch.setattr(images_io, "MAX_PIXELS", 1 << 20)
    ext, base = IMAGES[pick]
    blob = data.draw(st.one_of(mutated_bytes(base), mutated_bytes(base, focus=64), st.binary(max_size=256)))
    assert declared_size(blob) is None or len(declared_size(blob)) == 2  # never raises
    path = tmp_path_factory.getbasetemp() / f"fuzz{suffix or ext}"
    path.write_bytes(blob)
    image = _only_medsam3_errors(read_image, path)
    if image is not None:
        assert image.ndim in (2, 3) and image.dtype in (np.uint8, np.uint16, np.int16, np.float32) and image.size > 0
        if image.ndim == 3:
            assert image.shape[2] == 3


@FUZZ
@given(
    image=hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64, np.bool_, np.complex64]),
        shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6),
    )
)
def test_array_rules(image: np.ndarray) -> None:
    result = _only_medsam3_errors(to_rgb, image)
    if result is not None:
        rgb, _ = result
        assert rgb.ndim == 3 and rgb.shape[2] == 3 and np.isfinite(rgb.astype(np.float64)).all()


# -- NIfTI ---------------------------------------------------------------------------------


def _nifti_bytes() -> bytes:
    arr = (np.arange(6 * 5 * 4).reshape(6, 5, 4) % 17).astype(np.int16)
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    return nib.Nifti1Image(arr, affine).to_bytes()


NIFTI = _nifti_bytes()


@FUZZ
@given(data=st.data(), gz=st.booleans(), axis=st.sampled_from(["axial", "coronal", "sagittal"]))
def test_nifti_loader(tmp_path_factory: pytest.TempPathFactory, data, gz: bool, axis: str) -> None:
    blob = data.draw(st.one_of(mutated_bytes(NIFTI, focus=352), mutated_bytes(NIFTI)))
    path = tmp_path_factory.getbasetemp() / ("fuzz.nii.gz" if gz else "fuzz.nii")
    path.write_bytes(gzip.compress(blob) if gz else blob)

    def load_all():
        vol = read_nifti(path, axis)  # type: ignore[arg-type]
        for k in range(min(vol.num_slices, 64)):
            s = vol.slice(k)
            assert s.ndim == 2 and s.dtype == np.float32 and np.isfinite(s).all()
        return vol

    _only_medsam3_errors(load_all)


# -- DICOM ---------------------------------------------------------------------------------

CT_FILES = sorted(CT_SERIES.iterdir())


@FUZZ
@given(data=st.data(), victim=st.integers(0, len(CT_FILES) - 1), axis=st.sampled_from(["axial", "coronal"]))
def test_dicom_loader(tmp_path_factory: pytest.TempPathFactory, data, victim: int, axis: str) -> None:
    folder = tmp_path_factory.getbasetemp() / "fuzz-dicom"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(CT_SERIES, folder)
    target = folder / CT_FILES[victim].name
    base = target.read_bytes()
    target.write_bytes(data.draw(st.one_of(mutated_bytes(base, focus=1200), mutated_bytes(base))))

    def load_all():
        vol = read_dicom_series(folder, axis)  # type: ignore[arg-type]
        for k in range(vol.num_slices):
            s = vol.slice(k)
            assert s.ndim == 2 and np.isfinite(s).all()
        return vol

    _only_medsam3_errors(load_all)


# -- prompt packs --------------------------------------------------------------------------


def _pack_bytes(tmp: Path) -> bytes:
    rng = np.random.default_rng(0)
    pack = PromptPack("ab" * 32, ("Liver", "left kidney"), ("liver", "left kidney"), (3, 4),
                      rng.normal(size=(2, 4, 8)).astype(np.float32), rng.random((2, 4)) > 0.5)  # fmt: skip
    write_prompt_pack(tmp / "base.m3pack", pack)
    return (tmp / "base.m3pack").read_bytes()


@pytest.fixture(scope="module")
def pack_base(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, dict, bytes]:
    blob = _pack_bytes(tmp_path_factory.mktemp("pack"))
    (hlen,) = struct.unpack_from("<I", blob, 12)
    header = json.loads(blob[16 : 16 + hlen])
    start = 16 + hlen + (-(16 + hlen) % 64)
    return blob, header, blob[start:]


@FUZZ
@given(data=st.data())
def test_prompt_pack_loader(tmp_path_factory: pytest.TempPathFactory, pack_base, data) -> None:
    blob, header, payload = pack_base
    if data.draw(st.booleans()):
        candidate = data.draw(st.one_of(mutated_bytes(blob, focus=400), mutated_bytes(blob), st.binary(max_size=128)))
    else:  # a well-formed container around a mutated header
        h = json.dumps(data.draw(mutated_json(header))).encode()
        head = b"M3RTPACK" + struct.pack("<II", 1, len(h)) + h
        candidate = head + b"\0" * (-len(head) % 64) + payload
    path = tmp_path_factory.getbasetemp() / "fuzz.m3pack"
    path.write_bytes(candidate)
    pack = _only_medsam3_errors(read_prompt_pack, path)
    if pack is not None:
        n = len(pack.prompts)
        assert pack.features.ndim == 3 and pack.features.shape[0] == n == len(pack.keys) == pack.mask.shape[0]
        pack.embeddings()


# -- manifest ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifest_base(tiny_export: Path) -> dict:
    data = json.loads((tiny_export / MANIFEST_NAME).read_text())
    graph = "image_backbone"
    data["engines"] = [
        {
            "graph": graph,
            "file": f"engines/{graph}.fp16.sm90.trt10.3.0.engine",
            "sha256": "ab" * 32,
            "bytes": 10,
            "precision": "fp16",
            "tensorrt": "10.3.0",
            "device_name": "NVIDIA H100 80GB HBM3",
            "compute_capability": "9.0",
            "source_onnx": data["graphs"][graph]["file"],
            "source_onnx_sha256": data["files"][data["graphs"][graph]["file"]]["sha256"],
            "flags": ["fp16"],
            "profiles": [{"pixel_values": {"min": [1, 3, 224, 224], "opt": [1, 3, 224, 224], "max": [1, 3, 224, 224]}}],
        }
    ]
    assert isinstance(parse_manifest(data), Manifest)  # the base itself is valid
    return data


@FUZZ
@given(data=st.data())
def test_manifest_parser(manifest_base: dict, data) -> None:
    manifest = _only_medsam3_errors(parse_manifest, data.draw(mutated_json(manifest_base)))
    if manifest is not None:
        assert manifest.text_encoder_sha256 and manifest.graphs and manifest.dims.image_size > 0
        json.dumps(manifest.to_json(), default=str)


@FUZZ
@given(data=st.data())
def test_manifest_file(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory, data) -> None:
    """manifest.json bytes (JSON syntax, encoding) through load_manifest; the graph files are real."""
    root = tmp_path_factory.getbasetemp() / "fuzz-export"
    if not root.exists():
        shutil.copytree(tiny_export, root)
        (root / "base.json").write_bytes((root / MANIFEST_NAME).read_bytes())
    base = (root / "base.json").read_bytes()
    (root / MANIFEST_NAME).write_bytes(data.draw(st.one_of(mutated_bytes(base), mutated_bytes(base, focus=200))))
    _only_medsam3_errors(load_manifest, root, verify="size")
