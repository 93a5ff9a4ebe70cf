"""cpp_bindings/ (libmedsam3rt): built once per checkout in cpp_bindings/build-ci, then compared
with the Python runtime step by step and end to end on the tiny export.

* internal steps (medsam3rt_internal): SHA-256, graph contract, manifest rules and messages,
  preprocessing (bit-exact) and post-processing on identical inputs;
* the C API through ctypes: masks, scores, boxes and label maps vs `medsam3_rt.load(...).segment`
  on the same backend (OpenVINO) and on ort-cpu;
* the C example (examples/segment_image.c), the C++ RAII wrapper, the C API's bad-argument
  cases (tests/test_c_api.c), and the example and those cases again under AddressSanitizer.

Skips, with the reason, where the openvino wheel, CMake, a C/C++ compiler, nlohmann-json
(Debian: nlohmann-json3-dev) or valijson (Debian: libvalijson-dev) is missing.
"""

from __future__ import annotations

import ctypes
import fcntl
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from conftest import REPO, cli, phantom

SRC = REPO / "cpp_bindings"
BUILD = SRC / "build-ci"
PROMPTS = ["liver", "Fetal head", "polyp"]

sys.path.insert(0, str(REPO / "cpp_bindings" / "python"))
from medsam3rt_ctypes import BGR, BGRA, GRAY, OK, RGB, RGBA, UINT8, UINT16  # noqa: E402 - the one ctypes copy of the C structs
from medsam3rt_ctypes import ERROR_MODEL as MODEL  # noqa: E402
from medsam3rt_ctypes import Image as _Image  # noqa: E402
from medsam3rt_ctypes import Object as _Object  # noqa: E402
from medsam3rt_ctypes import SegmentOptions as _SegmentOptions  # noqa: E402
from medsam3rt_ctypes import StreamOptions as _StreamOptions  # noqa: E402


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)


def _asan_works(tmp: Path) -> bool:
    src = tmp / "asan_probe.c"
    src.write_text("int main(void) { return 0; }\n")
    return _run(["cc", "-fsanitize=address", str(src), "-o", str(tmp / "asan_probe")]).returncode == 0


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Configure and build cpp_bindings (cached; concurrent test runs share it under a lock)."""
    if importlib.util.find_spec("openvino") is None:
        pytest.skip("the openvino wheel is not installed: pip install 'medsam3-rt[openvino]'")
    for tool, why in (("cmake", "CMake"), ("cc", "a C compiler"), ("c++", "a C++ compiler")):
        if shutil.which(tool) is None:
            pytest.skip(f"{why} ('{tool}') is not installed")
    import openvino

    ov_cmake = Path(openvino.__file__).parent / "cmake"
    asan = _asan_works(tmp_path_factory.mktemp("asan"))
    BUILD.mkdir(exist_ok=True)
    with open(BUILD / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        configure = ["cmake", "-S", SRC, "-B", BUILD, "-DCMAKE_BUILD_TYPE=Release", f"-DOpenVINO_DIR={ov_cmake}"]
        configure += [f"-DMEDSAM3RT_PYTHON={sys.executable}", f"-DMEDSAM3RT_ASAN={'ON' if asan else 'OFF'}"]
        if not (BUILD / "CMakeCache.txt").exists() and shutil.which("ninja"):
            configure += ["-G", "Ninja"]
        proc = _run(configure)
        if proc.returncode != 0:
            if "nlohmann_json" in proc.stdout + proc.stderr:
                pytest.skip("nlohmann-json is not installed (Debian/Ubuntu: apt-get install nlohmann-json3-dev)")
            if "valijson" in proc.stdout + proc.stderr:
                pytest.skip("valijson is not installed (Debian/Ubuntu: apt-get install libvalijson-dev)")
            pytest.fail(f"cmake configure failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        proc = _run(["cmake", "--build", BUILD, "-j", "2"])
        assert proc.returncode == 0, f"build failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    return BUILD


def _internal(build: Path, *args: object) -> subprocess.CompletedProcess[str]:
    return _run([build / "medsam3rt_internal", *args])


@pytest.fixture(scope="session")
def pack(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("packs") / "abdomen.m3pack"
    args = ["prompts", "pack", str(tiny_export), "-o", str(out)]
    for p in PROMPTS:
        args += ["-p", p]
    cli(*args, check=True)
    return out


@pytest.fixture(scope="session")
def other_pack(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid pack whose embeddings belong to another text encoder."""
    from medsam3_rt.prompt_pack import PromptPack, write_prompt_pack

    out = tmp_path_factory.mktemp("packs") / "other.m3pack"
    t, c = 32, 64
    write_prompt_pack(out, PromptPack("0" * 64, ("liver",), ("liver",), (3,), np.zeros((1, t, c), np.float32), np.ones((1, t), bool)))
    return out


@pytest.fixture(scope="session")
def python_segmenters(tiny_export: Path):
    import medsam3_rt

    segs = {b: medsam3_rt.load(tiny_export, b) for b in ("openvino", "ort-cpu")}
    yield segs
    for s in segs.values():
        s.close()


# -- the build and its own tests ------------------------------------------------------------


def test_ctest_passes(build: Path) -> None:
    proc = _run(["ctest", "--test-dir", build, "--output-on-failure"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "100% tests passed" in proc.stdout


def test_sha256_matches_hashlib(build: Path, tiny_export: Path) -> None:
    import hashlib

    files = sorted(p for p in tiny_export.rglob("*") if p.is_file())
    proc = _internal(build, "sha256", *files)
    assert proc.returncode == 0, proc.stderr
    got = dict(reversed(line.split("  ", 1)) for line in proc.stdout.splitlines())
    for p in files:
        assert got[str(p)] == hashlib.sha256(p.read_bytes()).hexdigest(), p


@pytest.mark.parametrize("tracker", [False, True])
def test_graph_contract_matches_python(build: Path, tracker: bool) -> None:
    from medsam3_rt import graph_contract as gc

    dims = gc.ModelDims(1008, 14, 256, 32, 200, *((64, 128, 64) if tracker else (0, 0, 0)))
    proc = _internal(build, "specs", *dims.to_json().values())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    want = {name: spec.to_json() for name, spec in gc.expected_specs(dims).items()}
    got = json.loads(proc.stdout)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name] == want[name], f"cpp_bindings/src/contract.cpp differs from graph_contract.py for '{name}'"


# -- manifest.json: the same rules and messages -----------------------------------------------


def _mutations(manifest: dict) -> dict[str, dict]:
    """Broken (and a few valid) variants of a real manifest, each named for what it changes."""

    def edit(fn):
        m = json.loads(json.dumps(manifest))
        fn(m)
        return m

    graph = "detector"
    return {
        "valid": manifest,
        "schema": edit(lambda m: m.update(schema="other")),
        "version-newer": edit(lambda m: m.update(schema_version=2)),
        "version-string": edit(lambda m: m.update(schema_version="1")),
        "version-missing": edit(lambda m: m.pop("schema_version")),
        "unknown-key": edit(lambda m: m.update(extra=1)),
        "dims-missing": edit(lambda m: m.pop("dims")),
        "dims-list": edit(lambda m: m.update(dims=[1])),
        "dims-multiple": edit(lambda m: m["dims"].update(image_size=225)),
        "dims-changed": edit(lambda m: m["dims"].update(num_queries=21)),
        "graph-unknown": edit(lambda m: m["graphs"].update(segmenter={"file": "x.onnx"})),
        "graph-no-file": edit(lambda m: m["graphs"][graph].pop("file")),
        "graph-missing": edit(lambda m: m["graphs"].pop("text_encoder")),
        "tensor-no-name": edit(lambda m: m["graphs"][graph]["inputs"][0].pop("name")),
        "tensor-dtype": edit(lambda m: m["graphs"][graph]["inputs"][0].update(dtype="float64")),
        "tensor-shape": edit(lambda m: m["graphs"][graph]["inputs"][0].update(shape=[1.5])),
        "tensor-renamed": edit(lambda m: m["graphs"][graph]["outputs"][0].update(name="logits")),
        "tensor-dim": edit(lambda m: m["graphs"]["image_backbone"]["inputs"][0].update(shape=[1, 3, 224, 225])),
        "tracker-partial": edit(lambda m: m["graphs"].update(tracker_init={"file": "t.onnx"})),
        "files-missing": edit(lambda m: m.pop("files")),
        "file-absolute": edit(lambda m: m["files"].update({"/etc/passwd": {"sha256": "x", "bytes": 1}})),
        "file-dotdot": edit(lambda m: m["files"].update({"a/../../b": {"sha256": "x", "bytes": 1}})),
        "file-no-bytes": edit(lambda m: m["files"]["detector.onnx"].pop("bytes")),
        "file-unlisted": edit(lambda m: m["files"].pop("detector.onnx")),
        "tokenizer-missing": edit(lambda m: m.pop("tokenizer")),
        "tokenizer-no-file": edit(lambda m: m["tokenizer"].pop("file")),
        "tokenizer-unlisted": edit(lambda m: m["tokenizer"].update(file="tok.json")),
        "preprocess-missing": edit(lambda m: m.pop("preprocess")),
        "preprocess-rect": edit(lambda m: m["preprocess"].update(image_size=[224, 200])),
        "preprocess-mean": edit(lambda m: m["preprocess"].update(mean=[0.5, 0.5])),
        "preprocess-std": edit(lambda m: m["preprocess"].update(std=[0.5, 0.0, 0.5])),
        "preprocess-resize": edit(lambda m: m["preprocess"].update(resize="letterbox")),
        "preprocess-size": edit(lambda m: m["preprocess"].update(image_size=[448, 448])),
        "preprocess-int-size": edit(lambda m: m["preprocess"].update(image_size=224)),
        "tracker-without-graphs": edit(lambda m: m.update(tracker={"num_maskmem": 7})),
        "engines-dict": edit(lambda m: m.update(engines={})),
        "engines-null": edit(lambda m: m.update(engines=None)),
        "engine-not-object": edit(lambda m: m.update(engines=[1])),
        "engine-fields": edit(lambda m: m.update(engines=[{"graph": "detector", "file": "e.engine"}])),
        "model-missing": edit(lambda m: m.pop("model")),
        "producer-list": edit(lambda m: m.update(producer=[])),
        "postprocess-bad": edit(lambda m: m.update(postprocess={"mask_threshold": "high"})),
        "postprocess-null": edit(lambda m: m.update(postprocess=None)),
        # shapes only the schema (medsam3_rt/schemas/manifest.v1.json) states: both readers take its messages
        "graph-file-int": edit(lambda m: m["graphs"][graph].update(file=3)),
        "external-data-int": edit(lambda m: m["graphs"][graph].update(external_data=[3])),
        "inputs-dict": edit(lambda m: m["graphs"][graph].update(inputs={})),
        "file-entry-list": edit(lambda m: m["files"].update({"x.onnx": []})),
        "source-string": edit(lambda m: m["model"].update(source="hf")),
        "source-extra-field": edit(lambda m: m["model"]["source"].update(prompt_semantics={"cls": True})),
        "parity-list": edit(lambda m: m.update(parity=[])),
        "two-sections-missing": edit(lambda m: (m.pop("model"), m.pop("files"))),
    }


def _python_wording(message: str) -> str:
    """The library names itself and its upgrade path where the Python runtime names the package."""
    message = re.sub(r"\d+\.\d+\.\d+", "<version>", message)
    for c_words, py_words in (
        ("this is libmedsam3rt <version>", "this is <version>"),
        ("upgrade libmedsam3rt", "pip install -U medsam3-rt"),
        ("supported by libmedsam3rt", "supported by medsam3-rt"),
    ):
        message = message.replace(c_words, py_words)
    return message


def test_manifest_rules_and_messages_match_python(build: Path, tiny_export: Path, tmp_path: Path) -> None:
    from medsam3_rt.errors import Medsam3Error
    from medsam3_rt.manifest import parse_manifest

    base = json.loads((tiny_export / "manifest.json").read_text())
    cases = _mutations(base)
    paths = []
    for name, m in cases.items():
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(m))
        paths.append(p)
    (tmp_path / "not-json.json").write_text('{"schema": ')
    proc = _internal(build, "manifest", *paths)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(cases)
    for (name, m), line in zip(cases.items(), lines):
        try:
            parse_manifest(m)
            want = "OK"
        except Medsam3Error as e:
            want = f"ERR {e.exit_code} {e}"
        assert _python_wording(line) == _python_wording(want), f"{name}: C++ says {line!r}, Python {want!r}"
    bad = _internal(build, "manifest", tmp_path / "not-json.json").stdout
    assert bad.startswith(f"ERR 4 {tmp_path / 'not-json.json'} is not valid JSON (") and bad.rstrip().endswith("re-run `medsam3-rt export`")


# -- preprocessing: bit-exact with the Python runtime ------------------------------------------


def _layout(img: np.ndarray, fmt: int) -> np.ndarray:
    """The array as the C caller stores it: BGR(A) orders are reversed colour channels."""
    if fmt in (BGR, BGRA):
        return np.concatenate([img[..., 2::-1], img[..., 3:]], axis=-1)
    return img


PRE_CASES = [
    # (height, width, format, dtype, S, antialias, window, pad bytes per row)
    (200, 300, RGB, np.uint8, 224, True, None, 0),
    (97, 131, GRAY, np.uint8, 224, True, None, 3),
    (2, 2, GRAY, np.uint8, 224, True, None, 0),
    (224, 224, RGB, np.uint8, 224, True, None, 0),
    (224, 301, BGR, np.uint8, 224, True, None, 7),
    (700, 1000, RGB, np.uint8, 1008, True, None, 0),
    (50, 4000, GRAY, np.uint8, 224, True, None, 0),
    (3001, 17, RGBA, np.uint8, 37, True, None, 1),
    (480, 640, BGRA, np.uint8, 224, True, None, 0),
    (150, 170, GRAY, np.uint16, 224, True, None, 1),
    (300, 200, RGB, np.uint16, 224, True, (-1000.1, 400.3), 0),
    (300, 200, BGR, np.uint16, 1008, True, None, 6),
    (120, 90, RGB, np.uint8, 224, True, (20.0, 180.0), 0),
    (120, 90, GRAY, np.uint8, 224, False, None, 0),
    (333, 77, RGB, np.uint16, 64, False, (100.0, 60000.0), 2),
]


@pytest.mark.parametrize("case", PRE_CASES, ids=[f"{c[0]}x{c[1]}-f{c[2]}-{np.dtype(c[3]).name}-S{c[4]}" for c in PRE_CASES])
def test_preprocessing_is_bit_exact(build: Path, tmp_path: Path, case) -> None:
    from medsam3_rt.manifest import Preprocess
    from medsam3_rt.preprocess import IntensityWindow, pixel_values

    h, w, fmt, dtype, size, antialias, window, pad = case
    channels = {GRAY: 1, RGB: 3, BGR: 3, RGBA: 4, BGRA: 4}[fmt]
    img = phantom(h, w, channels=1 if channels == 1 else 3, dtype=dtype, seed=h + w)
    if channels == 4:
        alpha = np.random.default_rng(1).integers(0, 256, (h, w, 1)).astype(dtype)
        img = np.concatenate([img, alpha], axis=-1)
    stored = np.ascontiguousarray(_layout(img, fmt))
    rows = stored.reshape(h, -1).view(np.uint8)
    raw = np.zeros((h, rows.shape[1] + pad), np.uint8)
    raw[:, : rows.shape[1]] = rows
    raw.tofile(tmp_path / "in.raw")
    win = (1, *window) if window else (0, 0, 0)
    t = 2 if dtype == np.uint16 else 1
    proc = _internal(build, "preprocess", size, int(antialias), fmt, t, w, h, raw.shape[1], *win, tmp_path / "in.raw", tmp_path / "out.f32")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = np.fromfile(tmp_path / "out.f32", np.float32).reshape(1, 3, size, size)
    want = pixel_values(img, Preprocess(image_size=size, antialias=antialias), IntensityWindow(*window) if window else None)
    diff = got != want
    assert not diff.any(), f"{int(diff.sum())} of {diff.size} values differ, max |d| {float(np.abs(got - want).max()):.3g}"


# -- post-processing on identical detector outputs --------------------------------------------


@pytest.mark.parametrize(("hw", "min_score"), [((200, 300), 0.0), ((64, 64), 0.0), ((50, 30), 0.5), ((731, 1000), 0.45)])
def test_postprocessing_matches_python(build: Path, tmp_path: Path, hw: tuple[int, int], min_score: float) -> None:
    from medsam3_rt import graph_contract as gc
    from medsam3_rt.segmenter import Segmenter

    rng = np.random.default_rng(hw[0])
    p, q, m = 4, 20, 64
    out = {
        gc.PRED_LOGITS: rng.normal(0, 2, (p, q)).astype(np.float32),
        gc.PRED_BOXES: rng.uniform(0, 1, (p, q, 4)).astype(np.float32),
        gc.PRESENCE_LOGITS: rng.normal(0, 1, (p, 1)).astype(np.float32),
        gc.PRED_MASKS: (rng.normal(0, 1, (p, q, m, m)) * 4).astype(np.float32),
    }
    out[gc.PRED_LOGITS][1, 3] = out[gc.PRED_LOGITS][1, 7] = 9.0  # a tie: the lower query wins
    for k in out:  # prompt 3 repeats prompt 2: label-map ties go to the lower prompt
        out[k][3] = out[k][2]
    names = ("logits", "boxes", "presence", "masks")
    keys = (gc.PRED_LOGITS, gc.PRED_BOXES, gc.PRESENCE_LOGITS, gc.PRED_MASKS)
    for n, k in zip(names, keys):
        out[k].tofile(tmp_path / n)
    args = [*hw, min_score, 0.5, p, q, m, *(tmp_path / n for n in names), tmp_path / "got"]
    proc = _internal(build, "postprocess", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fake = SimpleNamespace(manifest=SimpleNamespace(postprocess=SimpleNamespace(mask_threshold=0.5)))
    want = Segmenter._postprocess(fake, [f"p{i}" for i in range(p)], out, hw, min_score)
    got = {
        "scores": np.fromfile(tmp_path / "got.scores", np.float32),
        "boxes": np.fromfile(tmp_path / "got.boxes", np.float32).reshape(p, 4),
        "query": np.fromfile(tmp_path / "got.query", np.int64),
        "masks": np.fromfile(tmp_path / "got.masks", np.uint8).reshape(p, *hw).astype(bool),
        "labels": np.fromfile(tmp_path / "got.labels", np.uint8).reshape(hw),
    }
    assert got["query"].tolist() == want["query_index"].tolist()
    assert got["query"][1] == 3
    # numpy's SIMD float32 exp differs from libm's expf by up to 2 ulp: scores agree to ~1e-7.
    np.testing.assert_allclose(got["scores"], want["scores"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got["boxes"], want["boxes"])
    for i in range(p):
        union = (got["masks"][i] | want["masks"][i]).sum()
        iou = 1.0 if union == 0 else (got["masks"][i] & want["masks"][i]).sum() / union
        assert iou >= 0.999, f"prompt {i}: mask IoU {iou:.5f}"
    assert (got["labels"] == want["label_map"]).mean() >= 0.999
    assert not (got["labels"] == 4).any(), "the repeated prompt must lose every tie"


# -- the C API end to end (ctypes) -----------------------------------------------------------


class NativeModel:
    """Just enough ctypes over libmedsam3rt to compare it with the Python runtime."""

    def __init__(self, build: Path, model_dir: Path, pack_path: Path) -> None:
        self.lib = lib = ctypes.CDLL(str(build / "libmedsam3rt.so"))
        lib.medsam3rt_last_error.restype = ctypes.c_char_p
        self.model, self.prompts = ctypes.c_void_p(), ctypes.c_void_p()
        self._check(lib.medsam3rt_model_open(str(model_dir).encode(), None, ctypes.byref(self.model)))
        self._check(lib.medsam3rt_prompts_load(self.model, str(pack_path).encode(), ctypes.byref(self.prompts)))

    def _check(self, status: int) -> None:
        if status != OK:
            raise RuntimeError(f"status {status}: {self.lib.medsam3rt_last_error().decode()}")

    def segment(self, stored: np.ndarray, fmt: int, *, min_score: float = 0.0, window=None, pad: int = 0) -> dict:
        h, w = stored.shape[:2]
        rows = np.ascontiguousarray(stored).reshape(h, -1).view(np.uint8)
        buf = np.zeros((h, rows.shape[1] + pad), np.uint8)
        buf[:, : rows.shape[1]] = rows
        img = _Image(buf.ctypes.data, w, h, buf.shape[1], fmt, UINT16 if stored.dtype == np.uint16 else UINT8)
        opts = _SegmentOptions()
        self._check(self.lib.medsam3rt_segment_options_init(ctypes.byref(opts)))
        opts.min_score = min_score
        if window is not None:
            opts.use_window, opts.window_low, opts.window_high = 1, *window
        res = ctypes.c_void_p()
        self._check(self.lib.medsam3rt_segment(self.model, self.prompts, ctypes.byref(img), ctypes.byref(opts), ctypes.byref(res)))
        try:
            n = ctypes.c_size_t()
            self._check(self.lib.medsam3rt_result_count(res, ctypes.byref(n)))
            out = {"scores": [], "boxes": [], "masks": []}
            for i in range(n.value):
                score, box, mask = ctypes.c_float(), (ctypes.c_float * 4)(), ctypes.POINTER(ctypes.c_uint8)()
                self._check(self.lib.medsam3rt_result_score(res, ctypes.c_size_t(i), ctypes.byref(score)))
                self._check(self.lib.medsam3rt_result_box(res, ctypes.c_size_t(i), box))
                self._check(self.lib.medsam3rt_result_mask(res, ctypes.c_size_t(i), ctypes.byref(mask)))
                out["scores"].append(score.value)
                out["boxes"].append(list(box))
                out["masks"].append(np.ctypeslib.as_array(mask, shape=(h, w)).astype(bool))
            labels = ctypes.POINTER(ctypes.c_uint8)()
            self._check(self.lib.medsam3rt_result_label_map(res, ctypes.byref(labels)))
            out["label_map"] = np.ctypeslib.as_array(labels, shape=(h, w)).copy()
            return {k: np.asarray(v) for k, v in out.items()}
        finally:
            self.lib.medsam3rt_result_release(res)

    def close(self) -> None:
        self.lib.medsam3rt_prompts_release(self.prompts)
        self.lib.medsam3rt_model_release(self.model)


@pytest.fixture(scope="session")
def native(build: Path, tiny_export: Path, pack: Path):
    m = NativeModel(build, tiny_export, pack)
    yield m
    m.close()


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


SEG_CASES = [
    # (height, width, stored format, dtype, window, min_score, pad)
    (200, 300, RGB, np.uint8, None, 0.0, 0),
    (200, 300, BGR, np.uint8, None, 0.0, 13),
    (97, 131, GRAY, np.uint8, None, 0.0, 1),
    (480, 640, RGBA, np.uint8, None, 0.0, 0),
    (150, 170, GRAY, np.uint16, None, 0.0, 0),
    (256, 320, BGR, np.uint16, (3000.0, 60000.0), "between", 2),
    (700, 1000, RGB, np.uint8, None, 0.0, 0),
]


@pytest.mark.parametrize("case", SEG_CASES, ids=[f"{c[0]}x{c[1]}-f{c[2]}-{np.dtype(c[3]).name}" for c in SEG_CASES])
def test_c_api_segment_matches_python(native: NativeModel, python_segmenters, case) -> None:
    h, w, fmt, dtype, window, min_score, pad = case
    channels = {GRAY: 1, RGB: 3, BGR: 3, RGBA: 4}[fmt]
    img = phantom(h, w, channels=1 if channels == 1 else 3, dtype=dtype, seed=w)
    if channels == 4:
        img = np.concatenate([img, np.full((h, w, 1), 255, dtype)], axis=-1)
    if min_score == "between":  # between the two lowest scores: one mask emptied, the others kept
        low = np.sort(python_segmenters["openvino"].segment(img, PROMPTS, window=window).scores)
        min_score = float(low[0] + low[1]) / 2
    got = native.segment(_layout(img, fmt), fmt, min_score=min_score, window=window, pad=pad)
    for backend, seg in python_segmenters.items():
        want = seg.segment(img, PROMPTS, min_score=min_score, window=window)
        same = backend == "openvino"
        np.testing.assert_allclose(got["scores"], want.scores, rtol=0, atol=1e-6 if same else 1e-4, err_msg=backend)
        np.testing.assert_allclose(got["boxes"], want.boxes, rtol=0, atol=1e-3 if same else 0.05, err_msg=backend)
        for i, prompt in enumerate(PROMPTS):
            iou = _iou(got["masks"][i], want.masks[i])
            assert iou >= 0.999, f"{backend}: '{prompt}' mask IoU {iou:.5f}"
        agree = float((got["label_map"] == want.label_map).mean())
        assert agree >= 0.999, f"{backend}: label maps agree on {agree:.5f} of the pixels"
        if same:  # same backend, same numbers: expected identical in practice (see the post-processing test)
            assert int((got["label_map"] != want.label_map).sum()) <= max(2, h * w // 10000)
    if min_score > 0:
        kept = got["scores"] >= min_score
        assert not kept.all() and kept.any(), "the case should keep some prompts and drop others"
        assert not got["masks"][~kept].any()


def test_c_api_is_safe_from_several_threads(native: NativeModel) -> None:
    from concurrent.futures import ThreadPoolExecutor

    img = phantom(120, 160)
    ref = native.segment(img, RGB)
    with ThreadPoolExecutor(3) as ex:
        results = list(ex.map(lambda _: native.segment(img, RGB), range(6)))
    for r in results:
        np.testing.assert_array_equal(r["label_map"], ref["label_map"])
        np.testing.assert_array_equal(r["scores"], ref["scores"])


# -- the C example, the C++ wrapper, bad arguments, AddressSanitizer ---------------------------


def _example_inputs(tmp: Path) -> list[tuple[Path, np.ndarray]]:
    rgb = phantom(200, 300)
    gray16 = phantom(150, 170, channels=1, dtype=np.uint16)
    cv2.imwrite(str(tmp / "scan.ppm"), rgb[:, :, ::-1])
    cv2.imwrite(str(tmp / "scan16.pgm"), gray16)
    return [(tmp / "scan.ppm", rgb), (tmp / "scan16.pgm", gray16)]


def _check_example_output(proc: subprocess.CompletedProcess[str], labels: Path, image: np.ndarray, seg) -> None:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    want = seg.segment(image, PROMPTS)
    got = cv2.imread(str(labels), cv2.IMREAD_UNCHANGED)
    assert got.shape == want.label_map.shape
    for k in range(1, len(PROMPTS) + 1):
        iou = _iou(got == k, want.label_map == k)
        assert iou >= 0.999, f"label {k}: IoU {iou:.5f}"
    printed = [float(x) for x in re.findall(r"score (\d\.\d+)", proc.stdout)]
    np.testing.assert_allclose(printed, want.scores, atol=6e-5)


def test_c_example_matches_python(build: Path, tiny_export: Path, pack: Path, python_segmenters, tmp_path: Path) -> None:
    for path, image in _example_inputs(tmp_path):
        labels = tmp_path / f"{path.stem}.labels.pgm"
        proc = _run([build / "segment_image", tiny_export, pack, path, labels])
        _check_example_output(proc, labels, image, python_segmenters["openvino"])
        assert f"wrote {labels}" in proc.stdout


def test_c_example_reports_errors(build: Path, tiny_export: Path, pack: Path, other_pack: Path, tmp_path: Path) -> None:
    (tmp_path / "bad.pgm").write_bytes(b"P5\n10 10\n255\n" + bytes(20))
    cases = [
        ([tiny_export, pack, tmp_path / "bad.pgm", tmp_path / "o.pgm"], 3, "is truncated"),
        ([tmp_path / "nowhere", pack, tmp_path / "bad.pgm", tmp_path / "o.pgm"], 3, "truncated"),
        ([tmp_path, pack, *_example_inputs(tmp_path)[0][:1], tmp_path / "o.pgm"], MODEL, "has no manifest.json"),
        ([tiny_export, other_pack, *_example_inputs(tmp_path)[0][:1], tmp_path / "o.pgm"], MODEL, "was made for another model"),
    ]
    for args, code, text in cases:
        proc = _run([build / "segment_image", *args])
        assert proc.returncode == code and text in proc.stderr, (args, proc.returncode, proc.stderr)
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1


@pytest.fixture(scope="session")
def broken_exports(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A copy with a corrupt manifest.json, and one whose tokenizer file was altered (same size)."""
    root = tmp_path_factory.mktemp("broken")
    corrupt, tampered = root / "corrupt", root / "tampered"
    shutil.copytree(tiny_export, corrupt)
    shutil.copytree(tiny_export, tampered)
    (corrupt / "manifest.json").write_text('{"schema": "medsam3-rt/manifest", "schema_version": 1, ')
    tok = tampered / "tokenizer" / "tokenizer.json"
    data = bytearray(tok.read_bytes())
    data[100] ^= 0x01
    tok.write_bytes(bytes(data))
    return corrupt, tampered


def _cases(stdout: str) -> dict[str, str]:
    return dict(m.groups() for m in re.finditer(r"^case (.+?): \w+ ?(.*)$", stdout, flags=re.M))


def test_c_api_bad_arguments(build: Path, tiny_export: Path, pack: Path, other_pack: Path, broken_exports) -> None:
    from medsam3_rt.errors import Medsam3Error
    from medsam3_rt.manifest import load_manifest
    from medsam3_rt.preprocess import IntensityWindow, to_rgb
    from medsam3_rt.prompt_pack import read_prompt_pack

    corrupt, tampered = broken_exports
    proc = _run([build / "test_c_api", tiny_export, pack, other_pack, corrupt, tampered])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^\d+ passed, 0 failed$", proc.stdout, flags=re.M)
    got = _cases(proc.stdout)

    def py_message(fn) -> str:
        with pytest.raises(Medsam3Error) as e:
            fn()
        return str(e.value)

    sha = load_manifest(tiny_export).text_encoder_sha256
    same = {
        "open missing dir": py_message(lambda: load_manifest("/nonexistent/model")),
        "tampered file": py_message(lambda: load_manifest(tampered)),
        "pack of another model": py_message(lambda: read_prompt_pack(other_pack, expect_text_encoder_sha256=sha)),
        "pack missing": py_message(lambda: read_prompt_pack("/nonexistent/p.m3pack")),
        "image too small": py_message(lambda: to_rgb(np.zeros((29, 1, 3), np.uint8))),
        "window": py_message(lambda: IntensityWindow(400.0, -1000.0)),  # the C API takes doubles
    }
    for case, message in same.items():
        assert got[case] == message, f"{case}: C says {got[case]!r}, Python {message!r}"
    assert got["corrupt manifest"].split(" (")[0] == py_message(lambda: load_manifest(corrupt)).split(" (")[0]


def test_cpp_wrapper(build: Path, tiny_export: Path, pack: Path, python_segmenters, tmp_path: Path) -> None:
    image = phantom(64, 80, seed=3)
    image.tofile(tmp_path / "image.rgb")
    proc = _run([build / "test_cpp_wrapper", tiny_export, pack, tmp_path / "image.rgb", 80, 64])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    want = python_segmenters["openvino"].segment(image, ["Fetal head", "liver"])
    areas = [int(a) for a in re.findall(r"area (\d+)", proc.stdout)]
    assert areas == want.areas.tolist()
    assert "status 4: model directory '/nonexistent' does not exist" in proc.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="AddressSanitizer run is set up for Linux")
def test_c_example_and_bad_arguments_under_asan(
    build: Path, tiny_export: Path, pack: Path, other_pack: Path, broken_exports, python_segmenters, tmp_path: Path
) -> None:
    exe = build / "segment_image_asan"
    if not exe.exists():
        pytest.skip("the compiler cannot build with -fsanitize=address here (no libasan)")
    assert "libasan" in _run(["ldd", exe]).stdout, "segment_image_asan is not instrumented"
    # oneTBB dlopens its NUMA helper with RTLD_DEEPBIND unless told otherwise, which ASan refuses.
    env = {**os.environ, "TBB_ENABLE_SANITIZERS": "1", "ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1:exitcode=86"}
    path, image = _example_inputs(tmp_path)[0]
    labels = tmp_path / "asan.labels.pgm"
    proc = _run([exe, tiny_export, pack, path, labels], env=env)
    assert "Sanitizer" not in proc.stderr, proc.stderr[-4000:]
    _check_example_output(proc, labels, image, python_segmenters["openvino"])
    corrupt, tampered = broken_exports
    proc = _run([build / "test_c_api_asan", tiny_export, pack, other_pack, corrupt, tampered], env=env)
    assert proc.returncode == 0 and "Sanitizer" not in proc.stderr, proc.stdout[-3000:] + proc.stderr[-4000:]


def test_export_with_tracker_graphs(build: Path, tiny_video_export: Path, tmp_path: Path) -> None:
    """A video export's backbone has tracker outputs too, whose ONNX tensors carry two names."""
    import medsam3_rt

    pack_path = tmp_path / "video.m3pack"
    cli("prompts", "pack", str(tiny_video_export), "-o", str(pack_path), *[a for p in PROMPTS for a in ("-p", p)], check=True)
    native = NativeModel(build, tiny_video_export, pack_path)
    try:
        img = phantom(160, 200, seed=5)
        got = native.segment(img, RGB)
    finally:
        native.close()
    with medsam3_rt.load(tiny_video_export, "openvino") as seg:
        want = seg.segment(img, PROMPTS)
    np.testing.assert_allclose(got["scores"], want.scores, rtol=0, atol=1e-6)
    for i in range(len(PROMPTS)):
        assert _iou(got["masks"][i], want.masks[i]) >= 0.999


# -- streaming through the C API --------------------------------------------------------------


def _stream_frames(n: int, h: int = 96, w: int = 112) -> list[np.ndarray]:
    """Textured frames whose bright disc drifts (as tests/tracker/test_streaming.py's moving blob)."""
    frames = []
    yy, xx = np.mgrid[:h, :w]
    for t in range(n):
        frame = phantom(h, w, seed=1).copy()
        frame[(yy - 48) ** 2 + (xx - 30 - t) ** 2 < 15**2] = 230
        frames.append(frame)
    return frames


@pytest.fixture(scope="session")
def video_pack(tiny_video_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("packs") / "video.m3pack"
    cli("prompts", "pack", str(tiny_video_export), "-o", str(out), "-p", "liver", "-p", "polyp", check=True)
    return out


@pytest.fixture(scope="session")
def tiny_video_meta_export(tiny_video_hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny video model with the exporter's default tracker semantics ("meta": Meta's
    new-object path) and its prompt pack; `tiny_video_export` follows transformers."""
    out = tmp_path_factory.mktemp("video-meta-export") / "tiny-video-meta"
    cli("export", str(tiny_video_hf_dir), "--output", str(out), "--quiet", "--prompt-semantics", "transformers", check=True)
    assert json.loads((out / "manifest.json").read_text())["tracker"]["semantics"] == "meta"
    pack = out.parent / "video-meta.m3pack"
    cli("prompts", "pack", str(out), "-o", str(pack), "-p", "liver", "-p", "polyp", check=True)
    return out, pack


POLICIES = {"meta": 0, "transformers": 1}  # medsam3rt_stream_policy


# The golden "meta" scenario's hot-start settings, written into a copy of the export's manifest so
# that both runtimes read them: young tracks get removed and unconfirmed ones hidden within 10 frames.
SHORT_HOTSTART = {
    "hotstart_delay": 4,
    "hotstart_unmatch_thresh": 2,
    "hotstart_dup_thresh": 2,
    "init_trk_keep_alive": 0,
    "suppress_unmatched_only_within_hotstart": False,
}


@pytest.mark.parametrize(
    ("policy", "max_objects", "short_hotstart", "semantics"),
    [
        ("transformers", 0, False, "transformers"),
        ("meta", 0, False, "transformers"),
        ("meta", 2, False, "transformers"),
        ("meta", 0, True, "transformers"),
        ("meta", 0, False, "meta"),
        ("meta", 0, True, "meta"),
    ],
    ids=["transformers", "meta", "meta-cap2", "meta-short-hotstart", "meta-semantics", "meta-semantics-short-hotstart"],
)
def test_c_api_stream_matches_python(
    request: pytest.FixtureRequest,
    build: Path,
    tiny_video_export: Path,
    video_pack: Path,
    tmp_path: Path,
    policy: str,
    max_objects: int,
    short_hotstart: bool,
    semantics: str,
) -> None:
    """medsam3rt_stream_push tracks like Stream.push in both policies and both tracker semantics:
    same object ids, prompts, masks and label maps (with a cap of 2 objects, mode "meta" evicts
    stale tracks for new ones; with a short hot start, it removes young tracks and hides
    unconfirmed ones; tracker semantics "meta" adds objects with Meta's first memory)."""
    from test_streaming_parity import DETECTION_THRESHOLD, NEW_OBJECT_THRESHOLD

    import medsam3_rt

    export = tiny_video_export
    if semantics == "meta":
        export, video_pack = request.getfixturevalue("tiny_video_meta_export")
    if short_hotstart:
        source, export = export, tmp_path / "short-hotstart"
        shutil.copytree(source, export)
        manifest = json.loads((export / "manifest.json").read_text())
        manifest["tracker"].update(SHORT_HOTSTART)
        (export / "manifest.json").write_text(json.dumps(manifest, indent=1))
    native = NativeModel(build, export, video_pack)
    lib = native.lib
    opts = _StreamOptions()
    native._check(lib.medsam3rt_stream_options_init(ctypes.byref(opts)))
    assert opts.policy == POLICIES["meta"], "the C API's default policy is the Python runtime's"
    opts.detection_threshold, opts.new_object_threshold = DETECTION_THRESHOLD, NEW_OBJECT_THRESHOLD
    opts.policy, opts.max_objects = POLICIES[policy], max_objects
    stream = ctypes.c_void_p()
    native._check(lib.medsam3rt_stream_open(native.model, native.prompts, ctypes.byref(opts), ctypes.byref(stream)))
    options = medsam3_rt.StreamOptions(
        policy=policy,
        detection_threshold=DETECTION_THRESHOLD,
        new_object_threshold=NEW_OBJECT_THRESHOLD,
        max_objects=max_objects or None,
    )
    frames = _stream_frames(10)
    if max_objects or short_hotstart:  # a noise frame: the tracks go empty while the detector fires
        frames[4] = (np.random.default_rng(0).random(frames[4].shape) * 255).astype(np.uint8)
    seen = 0
    events: dict[str, list[int]] = {"evicted": [], "removed": [], "hidden": []}

    def observe(r) -> None:
        for k, v in events.items():
            v.extend(getattr(r.decision, k).tolist())

    try:
        with medsam3_rt.load(export, "openvino") as seg, seg.stream(["liver", "polyp"], options=options) as py:
            py.observer = observe
            for t, img in enumerate(frames):
                want = py.push(img)
                h, w = img.shape[:2]
                buf = np.ascontiguousarray(img)
                desc = _Image(buf.ctypes.data, w, h, buf.strides[0], RGB, UINT8)
                frame = ctypes.c_void_p()
                native._check(lib.medsam3rt_stream_push(stream, ctypes.byref(desc), ctypes.byref(frame)))
                try:
                    n = ctypes.c_size_t()
                    native._check(lib.medsam3rt_frame_count(frame, ctypes.byref(n)))
                    got_ids, got_prompts, got_masks, got_scores = [], [], [], []
                    for i in range(n.value):
                        obj = _Object()
                        obj.struct_size = ctypes.sizeof(_Object)
                        native._check(lib.medsam3rt_frame_object(frame, ctypes.c_size_t(i), ctypes.byref(obj)))
                        got_ids.append(obj.object_id)
                        got_prompts.append(obj.prompt_index)
                        got_scores.append(obj.score)
                        got_masks.append(np.ctypeslib.as_array(obj.mask, shape=(h, w)).astype(bool))
                    labels = ctypes.POINTER(ctypes.c_uint8)()
                    native._check(lib.medsam3rt_frame_label_map(frame, ctypes.byref(labels)))
                    got_labels = np.ctypeslib.as_array(labels, shape=(h, w)).copy()
                finally:
                    lib.medsam3rt_frame_release(frame)
                shown = [i for i in range(len(want.object_ids)) if want.masks[i].any()]
                # both sides alike: an object whose pixels all went to another of its prompt is not shown
                got = [k for k, g in enumerate(got_masks) if g.any()]
                got_ids, got_prompts = [got_ids[k] for k in got], [got_prompts[k] for k in got]
                got_scores, got_masks = [got_scores[k] for k in got], [got_masks[k] for k in got]
                assert got_ids == want.object_ids[shown].tolist(), f"frame {t}"
                assert got_prompts == want.prompt_ids[shown].tolist(), f"frame {t}"
                np.testing.assert_allclose(got_scores, want.scores[shown], rtol=0, atol=1e-4)
                for g, i in zip(got_masks, shown, strict=True):
                    assert _iou(g, want.masks[i]) >= 0.99, f"frame {t} object {want.object_ids[i]}"
                assert (got_labels == want.label_map).mean() >= 0.99, f"frame {t}"
                seen += len(shown)
        assert seen > 0, "the frames must produce tracked objects, or the comparison is empty"
        if max_objects:
            assert events["evicted"], "the cap never evicted a track: the comparison does not cover eviction"
        if short_hotstart:
            assert events["removed"] and events["hidden"], f"the comparison must cover hot-start removal and hiding: {events}"
        state = ctypes.c_int64()
        native._check(lib.medsam3rt_stream_state_bytes(stream, ctypes.byref(state)))
        assert state.value > 0 or short_hotstart
    finally:
        lib.medsam3rt_stream_release(stream)
        native.close()


def test_c_api_stream_error_cases(
    build: Path, tiny_export: Path, pack: Path, other_pack: Path, broken_exports, tiny_video_export: Path, video_pack: Path
) -> None:
    """test_c_api.c's stream cases: bad options, a pack of another model, TRACK without tracker graphs."""
    corrupt, tampered = broken_exports
    proc = _run([build / "test_c_api", tiny_export, pack, other_pack, corrupt, tampered, tiny_video_export, video_pack])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert " 0 failed" in proc.stdout


def test_stream_video_example_matches_python(build: Path, tiny_video_export: Path, video_pack: Path, tmp_path: Path) -> None:
    """The compiled example program streams PPM frames through libmedsam3rt: its label maps equal Python's."""
    from test_streaming_parity import DETECTION_THRESHOLD, NEW_OBJECT_THRESHOLD

    import medsam3_rt

    frames_dir, labels_dir = tmp_path / "frames", tmp_path / "labels"
    frames_dir.mkdir()
    labels_dir.mkdir()
    frames = _stream_frames(6)
    for t, img in enumerate(frames):
        cv2.imwrite(str(frames_dir / f"f{t:03d}.ppm"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    proc = _run([build / "stream_video", tiny_video_export, video_pack, frames_dir, labels_dir,
                 "--policy", "transformers",
                 "--detection-threshold", str(DETECTION_THRESHOLD), "--new-object-threshold", str(NEW_OBJECT_THRESHOLD)])  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"{len(frames)} frames" in proc.stdout
    options = medsam3_rt.StreamOptions(
        policy="transformers", detection_threshold=DETECTION_THRESHOLD, new_object_threshold=NEW_OBJECT_THRESHOLD
    )
    shown = 0
    with medsam3_rt.load(tiny_video_export, "openvino") as seg, seg.stream(["liver", "polyp"], options=options) as py:
        for t, img in enumerate(frames):
            want = py.push(img)
            got = cv2.imread(str(labels_dir / f"frame_{t:05d}.pgm"), cv2.IMREAD_UNCHANGED)
            assert got is not None and got.shape == want.label_map.shape, f"frame {t}"
            assert (got == want.label_map).mean() >= 0.99, f"frame {t}"
            shown += int(want.label_map.any())
    assert shown > 0, "no frame showed an object: the comparison would be empty"


# -- the merge policy on the golden frames ----------------------------------------------------------


@pytest.mark.parametrize("scenario", ["parity", "limits", "meta", "meta_first_frame"])
def test_cpp_policy_matches_golden_files(build: Path, scenario: str) -> None:
    """policy.cpp decides what the Python policy decided on the recorded frames (tests/golden/tracker_policy):
    the same associations, new objects and ids, re-anchorings, counters, removals, and masks to the bit."""
    import tracker_policy_golden as golden

    _, frames = golden.load(scenario)
    proc = _internal(build, "policy", golden.GOLDEN / f"{scenario}.json", golden.GOLDEN / f"{scenario}.masks")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = json.loads(proc.stdout)
    assert len(got) == len(frames)
    for f, g in zip(frames, got, strict=True):
        assert g == f["expected"], f"frame {f['t']}"


@pytest.mark.parametrize("objects", [1, 2])
def test_cpp_memory_selection_matches_python(build: Path, tmp_path: Path, objects: int) -> None:
    """memory.cpp selects the frames memory.py selects (Meta's memory selection; proven against
    Meta's code in tests/tracker/test_memory_selection.py): on a 60-frame track group with
    occluded stretches, pruned after every frame as the stream does, the same memory frames and
    temporal rows and the same pointer frames and offsets (float32) on every frame."""
    from medsam3_rt import graph_contract as gc
    from medsam3_rt.tracker.masks import to_bfloat16
    from medsam3_rt.tracker.memory import MemoryEntry, ObjectTrack, gather, memory_score, valid_frames

    rng = np.random.default_rng(objects)
    first, last, num_maskmem, max_pointers, threshold = 3, 60, 7, 16, 0.01
    occluded = set(range(10, 14)) | set(range(20, 45)) | {50, 52, 53}
    logits = [[float(v) for v in rng.normal(-2.0 if t in occluded else 3.0, 1.0, objects).astype(np.float32)] for t in range(last)]
    logits[30] = [1e-3] * objects  # present, but scored below the threshold
    ious = rng.random((last, objects, 3)).astype(np.float32).tolist()
    scenario = {"num_maskmem": num_maskmem, "max_pointers": max_pointers, "threshold": threshold, "first": first, "last": last}
    (tmp_path / "scenario.json").write_text(json.dumps({**scenario, "objects": objects, "logits": logits, "ious": ious}))
    proc = _internal(build, "memory-select", tmp_path / "scenario.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = json.loads(proc.stdout)

    def entry(t: int, o: int) -> MemoryEntry:
        v = np.full(4, t + 100 * o, np.float32)
        return MemoryEntry(v.copy(), to_bfloat16(np.tile(v, (4, 1))))

    tracks = [ObjectTrack(o, 0, 0.9, first) for o in range(objects)]
    for o, tr in enumerate(tracks):
        tr.cond[first] = entry(first, o)
    selective = 0
    for t in range(first + 1, last):
        f = gather(tracks, t, num_maskmem=num_maskmem, max_pointers=max_pointers, hw=4, mem_dim=4, channels=4, selection=threshold)
        for o in range(objects):
            mems = [[float(f[gc.MEM_FEATS][o, j, 0, 0]), int(f[gc.MEM_TPOS][o, j])] for j in np.flatnonzero(f[gc.MEM_VALID][o])]
            ptrs = [[float(f[gc.OBJ_PTRS][o, j, 0]), float(f[gc.PTR_TPOS][o, j])] for j in np.flatnonzero(f[gc.PTR_VALID][o])]
            assert got[t - first - 1][o] == {"mems": mems, "ptrs": ptrs}, f"frame {t}, object {o}"
            # a skipped frame: the memory rows are ranks, not frame distances
            selective += any(row != t - int(frame) % 100 - 1 for frame, row in mems[1:])
        for o, tr in enumerate(tracks):
            tr.recent[t] = entry(t, o)
            tr.scores[t] = memory_score(logits[t][o], np.array(ious[t][o], np.float32))
        valid = valid_frames(tracks, t, threshold)
        for tr in tracks:
            tr.prune(t, num_maskmem=num_maskmem, max_pointers=max_pointers, max_cond=4, valid=valid.get(first, []))
    assert selective > 10, "the scenario must skip frames"
