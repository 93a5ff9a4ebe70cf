"""`medsam3-rt serve`: a real Triton (PyTriton) over loopback, asked by `tritonclient` like a remote client.

The server starts once for the module (a start costs seconds). It needs `nvidia-pytriton` in this venv and a
numpy<2 environment for Triton's Python stub (.ci/run makes `.ci/pytriton-stub`; docs/scale-out.md says why).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from medsam3_rt.io.images import read_image

DEMO = Path(__file__).resolve().parents[2] / "medsam3_rt" / "demo"
MODEL = DEMO / "model"
STUB = Path(os.environ.get("MEDSAM3_RT_SERVE_STUB_ENV", Path(__file__).resolve().parents[2] / ".ci" / "pytriton-stub"))
PROMPTS = np.array([b"brain", b"lateral ventricle"], dtype=object)

pytest.importorskip("pytriton", reason="nvidia-pytriton is not installed (the serve extra)")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")
if not (STUB / "bin" / "python").exists():
    pytest.skip(f"no numpy<2 stub environment at {STUB} (.ci/run makes it)", allow_module_level=True)


@pytest.fixture(scope="module")
def server():
    from medsam3_rt.scale.serve import ServeSettings, free_local_ports, start

    http, grpc, metrics = free_local_ports(3)
    triton = start(MODEL, ServeSettings(http, grpc, metrics, stream_idle_s=1.5, stub_env=STUB))
    yield triton, f"127.0.0.1:{grpc}"
    triton.stop()


def _infer(url: str, model: str, **tensors: np.ndarray):
    from tritonclient.utils import np_to_triton_dtype

    client = grpcclient.InferenceServerClient(url)
    inputs = []
    for name, a in tensors.items():
        t = grpcclient.InferInput(name, list(a.shape), "BYTES" if a.dtype == object else np_to_triton_dtype(a.dtype))
        t.set_data_from_numpy(a)
        inputs.append(t)
    return client.infer(model, inputs)


def _hw3(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 3 else image[..., None]


def test_concurrent_segment_equals_python_api(server) -> None:
    from medsam3_rt.segmenter import load

    _, url = server
    image = read_image(DEMO / "samples" / "colin27_sagittal_066.png")
    crops = [np.ascontiguousarray(image[k : k + 160, k : k + 160]) for k in range(0, 24, 3)]
    seg = load(MODEL, threads=1)
    refs = [seg.segment(c, ["brain", "lateral ventricle"]) for c in crops]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda c: _infer(url, "segment", IMAGE=_hw3(c), PROMPTS=PROMPTS), crops))
    for ref, res in zip(refs, results):
        assert np.array_equal(res.as_numpy("LABEL_MAP"), ref.label_map)
        assert np.array_equal(res.as_numpy("SCORES"), np.asarray(ref.scores, np.float32))


def test_broken_image_fails_that_request_only(server) -> None:
    from tritonclient.utils import InferenceServerException

    _, url = server
    with pytest.raises(InferenceServerException, match="IMAGE must be H x W"):
        _infer(url, "segment", IMAGE=np.zeros((4, 4, 5), np.uint8), PROMPTS=PROMPTS)
    ok = _infer(url, "segment", IMAGE=np.zeros((64, 64, 1), np.uint8), PROMPTS=PROMPTS)
    assert ok.as_numpy("LABEL_MAP").shape == (64, 64)


def test_stream_equals_segmenter_stream_and_idle_streams_are_dropped(server) -> None:
    from medsam3_rt.segmenter import load

    triton, url = server
    image = read_image(DEMO / "samples" / "colin27_sagittal_066.png")
    frames = [np.ascontiguousarray(image[k : k + 150, k : k + 150]) for k in range(0, 12, 3)]
    ref = load(MODEL, threads=1).stream(["brain", "lateral ventricle"], mode="auto")
    for i, frame in enumerate(frames):
        res = _infer(
            url,
            "stream",
            STREAM_ID=np.array([b"a"], object),
            END=np.array([i == len(frames) - 1]),
            FRAME=_hw3(frame),
            PROMPTS=PROMPTS,
        )
        assert np.array_equal(res.as_numpy("LABEL_MAP"), ref.push(frame).label_map)
    assert "a" not in triton.streams.streams  # END closed it
    # a client that opens a stream and vanishes: its stream is dropped after the idle timeout
    _infer(url, "stream", STREAM_ID=np.array([b"gone"], object), END=np.array([False]), FRAME=_hw3(frames[0]), PROMPTS=PROMPTS)
    assert "gone" in triton.streams.streams
    time.sleep(1.5)  # the idle timeout; the sweeper (every 0.75 s) drops it without any further request
    for _ in range(100):  # polled rather than timed: a loaded CI machine may delay the sweeper
        if "gone" not in triton.streams.streams:
            break
        time.sleep(0.1)
    assert "gone" not in triton.streams.streams
    _infer(url, "stream", STREAM_ID=np.array([b"b"], object), END=np.array([True]), FRAME=_hw3(frames[0]), PROMPTS=PROMPTS)
    assert not triton.streams.streams
