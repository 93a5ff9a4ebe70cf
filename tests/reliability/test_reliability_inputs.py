"""The bad-input table (docs/errors.md): every row through `medsam3-rt segment`.

Each case builds a broken input, runs the CLI's entry point in this process (`run`, with the
process's file descriptor 2 captured so native decoders' output counts too) and checks the
documented exit code, ONE line on stderr that starts with `error:` and names the problem,
no traceback, and no file at all in the output folder (not even a hidden temporary).

Rows already tested elsewhere are not repeated here; the docs/errors.md table names their tests.
"""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import phantom

from medsam3_rt.cli.main import run
from medsam3_rt.manifest import MANIFEST_NAME, SCHEMA_VERSION

DICOM_DATA = Path(pydicom.__file__).parent / "data" / "test_files"
CT_SERIES = DICOM_DATA / "dicomdirtests" / "98892001" / "CT5N"  # 5 CT slices, explicit VR little endian
JPEG_LS = DICOM_DATA / "MR_small_jpeg_ls_lossless.dcm"  # one MR slice, JPEG-LS lossless
NIFTI = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"


def segment(capfd: pytest.CaptureFixture[str], model: Path, source: Path, out: Path, *extra: str) -> tuple[int, str]:
    """Run `medsam3-rt segment` in this process; (exit code, stderr)."""
    capfd.readouterr()
    try:
        run(["segment", str(model), str(source), "-o", str(out), *extra])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capfd.readouterr().err


def assert_one_line_error(code: int, err: str, expected_code: int, pattern: str, out: Path) -> None:
    import re

    assert code == expected_code, err
    text = err.strip()
    assert "\n" not in text, f"more than one line on stderr:\n{err}"
    assert text.startswith("error: ") and "Traceback" not in text, err
    assert re.search(pattern, text), f"{pattern!r} not in {text!r}"
    left = sorted(p.name for p in out.rglob("*")) if out.exists() else []
    assert not left, f"partial output left behind: {left}"


# -- builders of broken inputs ---------------------------------------------------------------


def _write(path: Path, blob: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(side: int) -> bytes:
    """A valid, decodable side x side 8-bit grey PNG of zeros, built without materialising it.

    Deflate blocks are byte-aligned and history-free after a full flush, so the compressed form
    of 1000 zero rows repeats verbatim; only the Adler-32 of all rows has to be computed.
    """
    rows = 1000
    assert side % rows == 0
    block = b"\0" * ((side + 1) * rows)  # filter byte 0 + side zero pixels, per row
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(side // rows):
        adler = zlib.adler32(block, adler)
    idat = b"\x78\xda" + body * (side // rows) + comp.flush() + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def tiff_bytes(arr: np.ndarray, sample_format: int) -> bytes:
    """A minimal uncompressed little-endian TIFF (one strip), for pixel types OpenCV will not write."""
    h, w = arr.shape[:2]
    spp = 1 if arr.ndim == 2 else arr.shape[2]
    data = np.ascontiguousarray(arr).tobytes()
    tags = [(256, 4, w), (257, 4, h), (258, 3, arr.dtype.itemsize * 8), (259, 3, 1), (262, 3, 1), (273, 4, 0),
            (277, 3, spp), (278, 4, h), (279, 4, len(data)), (284, 3, 1), (339, 3, sample_format)]  # fmt: skip
    start = 8 + 2 + 12 * len(tags) + 4
    out = bytearray(b"II*\0" + struct.pack("<IH", 8, len(tags)))
    for tag, kind, value in tags:
        value = start if tag == 273 else value
        out += struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
    return bytes(out + struct.pack("<I", 0) + data)


def png_corrupt_idat(d: Path) -> Path:
    blob = bytearray(cv2.imencode(".png", phantom(50, 50))[1].tobytes())
    blob[60] ^= 0xFF  # inside IDAT; signature and IEND intact
    blob[80] ^= 0x55
    return _write(d / "idat.png", bytes(blob))


def jpeg_corrupt_data(d: Path) -> Path:
    blob = bytearray(cv2.imencode(".jpg", phantom(64, 64))[1].tobytes())
    blob[blob.find(b"\xff\xda") + 40] ^= 0x5A  # entropy-coded data; libjpeg decodes it with a warning
    return _write(d / "grey-blocks.jpg", bytes(blob))


def jpeg_declares_huge(d: Path) -> Path:
    blob = bytearray(cv2.imencode(".jpg", phantom(32, 32))[1].tobytes())
    sof = blob.find(b"\xff\xc0")
    blob[sof + 5 : sof + 9] = struct.pack(">HH", 30000, 30000)
    return _write(d / "claims-huge.jpg", bytes(blob))


def tiff_truncated(d: Path) -> Path:
    blob = cv2.imencode(".tif", phantom(50, 50))[1].tobytes()
    return _write(d / "cut.tif", blob[: len(blob) // 2])


def image_1x1(d: Path) -> Path:
    return _write(d / "dot.png", cv2.imencode(".png", np.zeros((1, 1), np.uint8))[1].tobytes())


def _nifti(d: Path, name: str, arr: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path = d / name
    d.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, np.eye(4) if affine is None else affine), path)
    return path


def nifti_garbage_header(d: Path) -> Path:
    return _write(d / "garbage.nii", b"\x00" * 400)


def nifti_negative_dim(d: Path) -> Path:
    blob = bytearray(NIFTI.read_bytes())
    blob[42:44] = struct.pack("<h", -5)  # dim[1]
    return _write(d / "negative.nii", bytes(blob))


def nifti_header_only(d: Path) -> Path:
    return _write(d / "header-only.nii", NIFTI.read_bytes()[:352])


def nifti_truncated_gz(d: Path) -> Path:
    return _write(d / "cut.nii.gz", gzip.compress(NIFTI.read_bytes())[:2000])


def nifti_nan(d: Path) -> Path:
    arr = np.ones((8, 8, 4), np.float32)
    arr[2, 2, 3] = np.nan
    return _nifti(d, "nan.nii.gz", arr)


def nifti_inf(d: Path) -> Path:
    arr = np.ones((8, 8, 4), np.float32)
    arr[5, 1, 1] = -np.inf
    return _nifti(d, "inf.nii.gz", arr)


def nifti_4d(d: Path) -> Path:
    return _nifti(d, "series.nii.gz", np.ones((6, 6, 4, 3), np.float32))


def nifti_singular_affine(d: Path) -> Path:
    """sform with a zero row, qform off: nibabel refuses to *write* that, so the header is patched."""
    path = _nifti(d, "flat.nii", np.ones((6, 6, 4), np.float32))
    header = bytearray(path.read_bytes())
    struct.pack_into("<hh", header, 252, 0, 1)  # qform_code 0, sform_code 1 (scanner)
    struct.pack_into("<4f", header, 312, 0.0, 0.0, 0.0, 0.0)  # srow_z: every voxel at z = 0
    path.unlink()
    return _write(d / "flat.nii.gz", gzip.compress(bytes(header)))


def _series(d: Path, name: str) -> Path:
    dst = d / name
    shutil.copytree(CT_SERIES, dst)
    return dst


def _by_position(folder: Path) -> list[Path]:
    return sorted(folder.iterdir(), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))


def dicom_missing_pixels(d: Path) -> Path:
    folder = _series(d, "no-pixels")
    victim = _by_position(folder)[0]
    ds = pydicom.dcmread(victim)
    del ds.PixelData
    ds.save_as(victim)
    return folder


def _jpeg_ls_series(d: Path, name: str, syntax: str | None = None) -> Path:
    folder = d / name
    folder.mkdir(parents=True)
    for k in range(3):
        ds = pydicom.dcmread(JPEG_LS)
        ds.ImagePositionPatient = [-83.9063, -91.2, 6.6406 + 0.8 * k]
        ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{k}"
        if syntax is None:
            ds.save_as(folder / f"mr{k}.dcm", enforce_file_format=True)
        else:  # a syntax pydicom does not know: it must be told how the dataset is encoded
            ds.file_meta.TransferSyntaxUID = syntax
            ds.save_as(folder / f"mr{k}.dcm", implicit_vr=False, little_endian=True, force_encoding=True)
    return folder


def dicom_jpeg_ls(d: Path) -> Path:
    from pydicom.pixels import get_decoder

    if get_decoder(pydicom.dcmread(JPEG_LS).file_meta.TransferSyntaxUID).is_available:
        pytest.skip("a JPEG-LS decoder (pylibjpeg-libjpeg / CharLS) is installed here: the syntax is supported")
    return _jpeg_ls_series(d, "jpeg-ls")


def dicom_unknown_syntax(d: Path) -> Path:
    # JPEG XL (DICOM 2024): pydicom has no decoder for it with any plugin
    return _jpeg_ls_series(d, "jpeg-xl", syntax="1.2.840.10008.1.2.4.112")


def dicom_mixed_series(d: Path) -> Path:
    folder = _series(d, "mixed")
    other = d / "other"
    shutil.copytree(CT_SERIES, other)
    for f in other.iterdir():
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = ds.SeriesInstanceUID + ".2"
        ds.SOPInstanceUID = ds.SOPInstanceUID + ".2"
        ds.save_as(folder / f"second-{f.name}")
    return folder


def dicom_missing_slice(d: Path) -> Path:
    folder = _series(d, "gap")
    _by_position(folder)[2].unlink()
    return folder


def dicom_inconsistent_spacing(d: Path) -> Path:
    folder = _series(d, "uneven")
    f = _by_position(folder)[3]
    ds = pydicom.dcmread(f)
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    ds.ImagePositionPatient = [x, y, z + 0.9]  # 2.5 mm spacing elsewhere
    ds.save_as(f)
    return folder


def dicom_duplicate_slice(d: Path) -> Path:
    folder = _series(d, "duplicate")
    src = _by_position(folder)[1]
    ds = pydicom.dcmread(src)
    ds.SOPInstanceUID = ds.SOPInstanceUID + ".9"
    ds.save_as(folder / "copy.dcm")
    return folder


def dicom_unreadable_file(d: Path) -> Path:
    folder = _series(d, "damaged")
    victim = _by_position(folder)[4]  # the last slice: skipping it would leave no gap to notice
    blob = victim.read_bytes()
    victim.write_bytes(blob[:132] + b"\x08\x00\x05\x00CS\xff\xff" + b"\x07" * 64)  # preamble + DICM, then a broken element
    return folder


def _video(path: Path, fourcc: str, frames: int, size: tuple[int, int] = (64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, size)
    for t in range(frames):
        w.write(phantom(size[1], size[0], seed=t))
    w.release()
    return path


def video_empty(d: Path) -> Path:
    return _write(d / "empty.mp4", b"")


def video_zero_frames(d: Path) -> Path:
    return _video(d / "zero-frames.avi", "MJPG", 0)


def video_unknown_codec(d: Path) -> Path:
    path = _video(d / "codec.avi", "MJPG", 3)
    blob = path.read_bytes().replace(b"MJPG", b"QQQQ")  # stream header and frame codec: a codec nobody has
    return _write(path, blob)


def video_garbage(d: Path) -> Path:
    return _write(d / "noise.mp4", np.random.default_rng(0).bytes(5000))


def video_truncated(d: Path) -> Path:
    path = _video(d / "cut.avi", "MJPG", 12)
    blob = path.read_bytes()
    return _write(path, blob[: int(len(blob) * 0.6)])


def empty_sequence(d: Path) -> Path:
    folder = d / "frames"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("no frames here")
    return folder


# (case, model fixture, builder, extra CLI args, exit code, message pattern)
CASES: list[tuple[str, str, Callable[[Path], Path], tuple[str, ...], int, str]] = [
    ("png-corrupt-idat", "image", png_corrupt_idat, (), 3, r"idat\.png: cannot decode the image \(libpng error: IDAT"),
    ("jpeg-empty", "image", lambda d: _write(d / "empty.jpg", b""), (), 3, r"empty\.jpg: file is empty"),
    ("jpeg-corrupt-data", "image", jpeg_corrupt_data, (), 3, r"grey-blocks\.jpg: the JPEG data is corrupt \(Corrupt JPEG data"),
    ("tiff-empty", "image", lambda d: _write(d / "empty.tif", b""), (), 3, r"empty\.tif: file is empty"),
    ("tiff-truncated", "image", tiff_truncated, (), 3, r"cut\.tif: cannot decode the image \(TIFF"),
    ("image-too-small", "image", image_1x1, (), 3, r"dot\.png: image is 1 x 1 pixels; at least 2 x 2"),
    ("png-30000x30000", "image", lambda d: _write(d / "huge.png", huge_png(30000)), (), 3, r"huge\.png: .*30000 x 30000 pixels, over the"),
    ("jpeg-header-30000x30000", "image", jpeg_declares_huge, (), 3, r"claims-huge\.jpg: .*30000 x 30000 pixels"),
    (
        "tiff-float64",
        "image",
        lambda d: _write(d / "f64.tif", tiff_bytes(np.linspace(0, 1, 48).reshape(6, 8), 3)),
        (),
        3,
        r"f64\.tif: pixel type float64 is not supported",
    ),
    (
        "tiff-int32",
        "image",
        lambda d: _write(d / "i32.tif", tiff_bytes(np.zeros((6, 8), np.int32), 2)),
        (),
        3,
        r"i32\.tif: pixel type int32 is not supported",
    ),
    (
        "tiff-5-channels",
        "image",
        lambda d: _write(d / "c5.tif", tiff_bytes(np.zeros((6, 8, 5), np.uint8), 1)),
        (),
        3,
        r"c5\.tif: (cannot decode|5-channel)",
    ),
    (
        "prompt-over-32-tokens",
        "image",
        lambda d: _write(d / "scan.png", cv2.imencode(".png", phantom(40, 40))[1].tobytes()),
        ("-p", " ".join(["hepatic"] * 40)),
        2,
        r"is \d+ tokens; the model reads at most 32",
    ),
    ("nifti-bad-header", "video", nifti_garbage_header, (), 3, r"garbage\.nii: not a readable NIfTI file"),
    ("nifti-negative-dim", "video", nifti_negative_dim, (), 3, r"negative\.nii: the header declares invalid dimensions"),
    ("nifti-header-only", "video", nifti_header_only, (), 3, r"header-only\.nii: cannot read slice \d+: the file is truncated"),
    ("nifti-truncated-gz", "video", nifti_truncated_gz, (), 3, r"cut\.nii\.gz: (cannot read slice|not a readable)"),
    ("nifti-4d", "video", nifti_4d, (), 3, r"series\.nii\.gz: expected a 3D volume, got shape \[6, 6, 4, 3\]"),
    ("nifti-nan", "video", nifti_nan, (), 3, r"nan\.nii\.gz: slice \d+ contains NaN or infinite values"),
    ("nifti-inf", "video", nifti_inf, (), 3, r"inf\.nii\.gz: slice \d+ contains NaN or infinite values"),
    ("nifti-singular-affine", "video", nifti_singular_affine, (), 3, r"flat\.nii\.gz: the header's voxel-to-world transform is invalid"),
    ("dicom-missing-pixel-data", "video", dicom_missing_pixels, (), 3, r"cannot decode pixel data \(transfer syntax .*no 'Pixel Data'"),
    ("dicom-jpeg-ls-unsupported", "video", dicom_jpeg_ls, (), 3, r"mr\d\.dcm: cannot decode pixel data \(transfer syntax JPEG-LS"),
    (
        "dicom-unknown-transfer-syntax",
        "video",
        dicom_unknown_syntax,
        (),
        3,
        r"mr\d\.dcm: cannot decode pixel data \(transfer syntax .*1\.2\.840\.10008\.1\.2\.4\.112",
    ),
    ("dicom-mixed-series", "video", dicom_mixed_series, (), 3, r"mixed: the folder mixes 2 DICOM series"),
    ("dicom-missing-slice", "video", dicom_missing_slice, (), 3, r"gap: slice spacing is inconsistent .* missing slices"),
    ("dicom-inconsistent-spacing", "video", dicom_inconsistent_spacing, (), 3, r"uneven: slice spacing is inconsistent"),
    ("dicom-duplicate-slice", "video", dicom_duplicate_slice, (), 3, r"duplicate: two slices share a position"),
    ("dicom-unreadable-slice", "video", dicom_unreadable_file, (), 3, r"a DICOM file whose header cannot be read"),
    ("video-empty", "video", video_empty, (), 3, r"empty\.mp4: file is empty"),
    ("video-zero-frames", "video", video_zero_frames, (), 3, r"zero-frames\.avi: the video has no decodable frames"),
    ("video-unreadable-codec", "video", video_unknown_codec, (), 3, r"codec\.avi: cannot open the video .*decoder"),
    ("video-garbage", "video", video_garbage, (), 3, r"noise\.mp4: cannot open the video .*moov atom not found"),
    ("video-truncated", "video", video_truncated, (), 3, r"cut\.avi: decoding stopped after \d+ of the 12 frames"),
    ("sequence-without-frames", "video", empty_sequence, ("--as-sequence",), 3, r"frames: folder has no images"),
]


@pytest.mark.parametrize(("case", "model", "build", "extra", "code", "pattern"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(request, capfd, tmp_path: Path, case, model, build, extra, code: int, pattern: str) -> None:
    export = request.getfixturevalue("tiny_export" if model == "image" else "tiny_video_export")
    source = build(tmp_path / "in")
    args = extra if "-p" in extra else ("-p", "liver", *extra)
    got, err = segment(capfd, export, source, tmp_path / "out", *args)
    assert_one_line_error(got, err, code, pattern, tmp_path / "out")


# -- export directories ----------------------------------------------------------------------


def _tamper(root: Path) -> None:
    path = root / "detector.onnx"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))


def _newer(root: Path) -> None:
    path = root / MANIFEST_NAME
    data = json.loads(path.read_text())
    data["schema_version"] = SCHEMA_VERSION + 1
    path.write_text(json.dumps(data))


EXPORT_CASES = [
    ("missing-graph", lambda root: (root / "detector.onnx").unlink(), r"'detector\.onnx' is listed in manifest\.json but missing"),
    ("tampered-graph", _tamper, r"'detector\.onnx' has SHA-256 [0-9a-f]{12}\.\.\., manifest\.json records .* tampered"),
    ("newer-manifest", _newer, rf"manifest schema v{SCHEMA_VERSION + 1} was written by a newer medsam3-rt"),
    (
        "truncated-tokenizer",
        lambda root: (root / "tokenizer" / "tokenizer.json").write_text("{"),
        r"'tokenizer/tokenizer\.json' is 1 bytes",
    ),
]


@pytest.mark.parametrize(("case", "change", "pattern"), EXPORT_CASES, ids=[c[0] for c in EXPORT_CASES])
def test_broken_export_directory(tiny_export: Path, capfd, tmp_path: Path, case, change, pattern: str) -> None:
    root = tmp_path / "model"
    shutil.copytree(tiny_export, root)
    change(root)
    image = _write(tmp_path / "in" / "scan.png", cv2.imencode(".png", phantom(40, 40))[1].tobytes())
    got, err = segment(capfd, root, image, tmp_path / "out", "-p", "liver")
    assert_one_line_error(got, err, 4, pattern, tmp_path / "out")


@pytest.fixture()
def standin(monkeypatch: pytest.MonkeyPatch):
    """The named stand-ins of TensorRT and the CUDA runtime (tests/fakes), as test_tensorrt_standins.py uses them."""
    from fakes import cudart_standin, tensorrt_standin

    from medsam3_rt.backends import _cuda

    cudart_standin.reset()
    tensorrt_standin.reset()
    monkeypatch.setitem(sys.modules, "tensorrt", tensorrt_standin)
    monkeypatch.setattr(_cuda, "_module", cudart_standin)
    return tensorrt_standin, cudart_standin


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (
            {"device_name": "NVIDIA A10", "compute_capability": "8.6"},
            r"it was built for NVIDIA A10 \(sm 8\.6\), this machine has Stand-in GPU",
        ),
        ({"tensorrt": "9.9.0"}, r"it was built with TensorRT 9\.9\.0, this machine has TensorRT 10\.8\.0\.43"),
    ],
    ids=["another-gpu", "another-tensorrt"],
)
def test_engines_built_elsewhere(tiny_export: Path, standin, capfd, tmp_path: Path, change: dict, pattern: str) -> None:
    """An engine entry for another GPU / TensorRT: refused before any engine byte is read (exit 4)."""
    trt, cuda = standin
    root = tmp_path / "model"
    shutil.copytree(tiny_export, root)
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    entry = {
        "graph": "image_backbone",
        "file": "engines/image_backbone.fp16.sm90.trt10.engine",
        "sha256": "ab" * 32,
        "bytes": 10,
        "precision": "fp16",
        "tensorrt": trt.__version__,
        "device_name": cuda.DEVICE_NAME,
        "compute_capability": "{}.{}".format(*cuda.COMPUTE_CAPABILITY),
        "source_onnx": "image_backbone.onnx",
        "source_onnx_sha256": manifest["files"]["image_backbone.onnx"]["sha256"],
        "flags": ["fp16", "strongly_typed"],
        **change,
    }
    manifest["engines"] = [entry]
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    image = _write(tmp_path / "in" / "scan.png", cv2.imencode(".png", phantom(40, 40))[1].tobytes())
    got, err = segment(capfd, root, image, tmp_path / "out", "-p", "liver", "--backend", "tensorrt")
    assert_one_line_error(got, err, 4, r"no TensorRT engine for graph 'image_backbone' fits .*" + pattern, tmp_path / "out")
    assert "medsam3-rt build" in err and len(trt.Runtime.deserialized) == 0


# -- inputs that must work -------------------------------------------------------------------


def test_non_ascii_prompts_and_paths_work(tiny_export: Path, capfd, tmp_path: Path) -> None:
    """CLIP's byte-level BPE takes any Unicode: non-ASCII prompts segment, and are written back verbatim."""
    image = _write(tmp_path / "Schädel ü" / "Gehirn-ß.png", cv2.imencode(".png", phantom(48, 56))[1].tobytes())
    out = tmp_path / "Ergebnis é"
    prompts = ["Leber", "肝臓", "foie é", "Niere (links) – ✓"]
    code, err = segment(capfd, tiny_export, image, out, *(a for p in prompts for a in ("-p", p)))
    assert code == 0, err
    data = json.loads((out / "Gehirn-ß.json").read_text(encoding="utf-8"))
    assert [p["prompt"] for p in data["prompts"]] == prompts
    assert cv2.imread(str(out / "Gehirn-ß.mask.png"), cv2.IMREAD_UNCHANGED).shape == (48, 56)
    assert cv2.imread(str(out / "Gehirn-ß.overlay.png")).shape == (48, 56, 3)


def test_int16_and_two_channel_tiffs_are_read(tiny_export: Path, capfd, tmp_path: Path) -> None:
    """Signed 16-bit (CT in HU) and grey+alpha TIFFs are valid inputs, not 'wrong dtype/channels'."""
    hu = (phantom(40, 44, channels=1).astype(np.int16) * 8 - 1000).astype(np.int16)
    _write(tmp_path / "in" / "ct.tif", tiff_bytes(hu, 2))
    _write(tmp_path / "in" / "grey-alpha.tif", tiff_bytes(np.dstack([phantom(40, 44, channels=1), np.full((40, 44), 255, np.uint8)]), 1))
    code, err = segment(capfd, tiny_export, tmp_path / "in", tmp_path / "out", "-p", "liver", "--window", "abdomen")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.json")) == ["ct.json", "grey-alpha.json"]
