"""`medsam3-rt triton-repo`: the model repository's structure, and the handlers its Python models run."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from conftest import cli

from medsam3_rt.errors import InputError, OutputExistsError, UsageError
from medsam3_rt.io.images import read_image
from medsam3_rt.scale.triton_models import SegmentHandler, StreamHandler
from medsam3_rt.scale.triton_repo import write_repository

DEMO = Path(__file__).resolve().parents[2] / "medsam3_rt" / "demo"
MODEL = DEMO / "model"
ORT_TYPES = {"tensor(float)": "TYPE_FP32", "tensor(int64)": "TYPE_INT64", "tensor(bool)": "TYPE_BOOL", "tensor(int32)": "TYPE_INT32"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("triton") / "repo"
    proc = cli("triton-repo", str(MODEL), "--output", str(out), "--name", "demo", check=True)
    graphs = ["demo_text_encoder", "demo_image_backbone", "demo_detector", "demo_tracker_init", "demo_tracker_step", "demo_memory_encoder"]
    assert proc.stdout.split() == [*graphs, "demo_segment", "demo_stream"]  # the demo model ships its tracker graphs
    return out


def _tensors(config: str, section: str) -> list[tuple[str, str, list[int]]]:
    body = re.search(rf"^{section} \[\n(.*?)\n\]\n", config, re.S | re.M)
    assert body, section
    return [
        (m[0], m[1], [int(d) for d in m[2].split(",")])
        for m in re.findall(r'name: "(\w+)"\s+data_type: (\w+)\s+dims: \[ ([^\]]*) \]', body.group(1))
    ]


def test_graph_models_match_their_onnx_graphs(repo: Path) -> None:
    for graph in ("text_encoder", "image_backbone", "detector"):
        model = repo / f"demo_{graph}"
        config = (model / "config.pbtxt").read_text()
        assert f'name: "demo_{graph}"' in config and 'platform: "onnxruntime_onnx"' in config
        sess = ort.InferenceSession(str(model / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        for section, args in (("input", sess.get_inputs()), ("output", sess.get_outputs())):
            declared = _tensors(config, section)
            assert [n for n, _, _ in declared] == [a.name for a in args]
            for (_, dtype, dims), arg in zip(declared, args):
                assert dtype == ORT_TYPES[arg.type]
                assert dims == [d if isinstance(d, int) else -1 for d in arg.shape], arg.name
        assert (model / "1" / "model.onnx").read_bytes() == (MODEL / f"{graph}.onnx").read_bytes()


def test_python_models_and_sequence_batching(repo: Path) -> None:
    for kind in ("segment", "stream"):
        model = repo / f"demo_{kind}"
        compile((model / "1" / "model.py").read_text(), str(model / "1" / "model.py"), "exec")
        assert (model / "1" / "export" / "manifest.json").is_file()
        config = (model / "config.pbtxt").read_text()
        assert 'backend: "python"' in config
        assert [n for n, _, _ in _tensors(config, "input")] == ["IMAGE" if kind == "segment" else "FRAME", "PROMPTS"]
    stream = (repo / "demo_stream" / "config.pbtxt").read_text()
    for kind in ("CONTROL_SEQUENCE_START", "CONTROL_SEQUENCE_END", "CONTROL_SEQUENCE_CORRID"):
        assert f"kind: {kind}" in stream
    assert "sequence_batching" not in (repo / "demo_segment" / "config.pbtxt").read_text()


def test_configs_parse_as_triton_model_config(repo: Path) -> None:
    """Triton's own ModelConfig protobuf (shipped in tritonclient) parses every config.pbtxt."""
    pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed (Triton's ModelConfig proto)")
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    for config in sorted(repo.glob("*/config.pbtxt")):
        parsed = text_format.Parse(config.read_text(), model_config_pb2.ModelConfig())
        assert parsed.name == config.parent.name
    stream = text_format.Parse((repo / "demo_stream" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert [c.name for c in stream.sequence_batching.control_input] == ["START", "END", "CORRID"]
    assert stream.sequence_batching.HasField("direct")


def test_existing_repository_needs_force(repo: Path) -> None:
    with pytest.raises(OutputExistsError):
        write_repository(MODEL, repo)
    proc = cli("triton-repo", str(MODEL), "--output", str(repo))
    assert proc.returncode == 2 and "--force" in proc.stderr and "Traceback" not in proc.stderr


def test_handlers_answer_like_the_python_api() -> None:
    from medsam3_rt.segmenter import load

    image = read_image(DEMO / "samples" / "colin27_sagittal_066.png")
    prompts = np.array([b"brain", b"lateral ventricle"], dtype=object)
    seg = load(MODEL, threads=1)
    ref = seg.segment(image, ["brain", "lateral ventricle"])
    out = SegmentHandler(MODEL, threads=1)(image, prompts)
    assert np.array_equal(out["LABEL_MAP"], ref.label_map) and np.array_equal(out["SCORES"], ref.scores)
    with pytest.raises(InputError):
        SegmentHandler(MODEL, threads=1)(image[None, None], prompts)

    # two interleaved sequences equal two separate Python-API streams
    frames = [np.ascontiguousarray(image[k : k + 150, k : k + 150]) for k in range(0, 12, 3)]
    handler = StreamHandler(MODEL, threads=1)
    got = {1: [], 2: []}
    for i, frame in enumerate(frames):
        for corrid, p in ((1, prompts[:1]), (2, prompts)):
            got[corrid].append(handler(corrid, i == 0, i == len(frames) - 1, frame, p)["LABEL_MAP"])
    assert not handler.streams
    for corrid, p in ((1, ["brain"]), (2, ["brain", "lateral ventricle"])):
        stream = seg.stream(p, mode="auto")
        for frame, label in zip(frames, got[corrid]):
            assert np.array_equal(stream.push(frame).label_map, label)
    with pytest.raises(UsageError, match="START"):
        handler(7, False, False, frames[0], prompts)


def test_serve_without_pytriton_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runtime imports PyTriton only when `serve` starts; without it, one line and exit code 5."""
    import sys

    from medsam3_rt.errors import MissingDependencyError
    from medsam3_rt.scale import serve

    monkeypatch.setitem(sys.modules, "pytriton", None)
    monkeypatch.setitem(sys.modules, "pytriton.triton", None)
    with pytest.raises(MissingDependencyError, match="install the serve extra") as e:
        serve.start(MODEL, serve.ServeSettings())
    assert e.value.exit_code == 5


def test_serve_stub_environment_is_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Under numpy 2, Triton's stub needs a numpy<2 venv: a missing or bogus one is one clear line."""
    from medsam3_rt.errors import MissingDependencyError
    from medsam3_rt.scale.serve import STUB_ENV_VAR, stub_environment

    monkeypatch.delenv(STUB_ENV_VAR, raising=False)
    if int(np.__version__.split(".")[0]) >= 2:
        with pytest.raises(MissingDependencyError, match="--stub-env"):
            stub_environment(None)
    with pytest.raises(UsageError, match="no bin/python"):
        stub_environment(tmp_path)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").touch()
    monkeypatch.setenv(STUB_ENV_VAR, str(tmp_path))
    assert stub_environment(None) == tmp_path
