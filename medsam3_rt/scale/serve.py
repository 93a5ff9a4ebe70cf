"""`medsam3-rt serve`: a live Triton endpoint (PyTriton) for `segment` and explicit-id streams.

PyTriton is imported only when a server starts, so the runtime never needs it. Its Python-backend
stub reads tensors through numpy's 1.x ABI (inputs arrive as zeros under numpy 2), so the stub runs
in a separate environment holding only `nvidia-pytriton` (numpy < 2) while this process, the model
and the clients keep the project's numpy 2 (docs/scale-out.md).
"""

from __future__ import annotations

import os
import socket
import sysconfig
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, Medsam3Error, MissingDependencyError, UsageError
from .triton_models import SegmentHandler, _prompts

STUB_ENV_VAR = "MEDSAM3_RT_SERVE_STUB_ENV"


@dataclass(frozen=True)
class ServeSettings:
    """Where to listen and how long an abandoned stream may live."""

    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    stream_idle_s: float = 60.0
    max_streams: int = 64
    stub_env: Path | None = None


class StreamTable:
    """Open streams by client-chosen id; END closes one, and streams idle past the timeout are dropped."""

    def __init__(self, seg: Any, idle_s: float, max_streams: int) -> None:
        self.seg = seg
        self.idle_s = idle_s
        self.max_streams = max_streams
        self.streams: dict[str, tuple[Any, float]] = {}
        self.lock = threading.Lock()

    def sweep(self, now: float | None = None) -> list[str]:
        """Drop streams whose last frame is older than the idle timeout; return their ids."""
        now = time.monotonic() if now is None else now
        with self.lock:
            stale = [k for k, (_, t) in self.streams.items() if now - t > self.idle_s]
            for k in stale:
                del self.streams[k]
        return stale

    def push(self, stream_id: str, frame: np.ndarray, prompts: np.ndarray, end: bool) -> Any:
        self.sweep()
        with self.lock:
            entry = self.streams.get(stream_id)
            if entry is None:
                if len(self.streams) >= self.max_streams:
                    raise UsageError(f"{len(self.streams)} streams are open; end one (END=true) before starting another")
                entry = (self.seg.stream(_prompts(prompts), mode="auto"), time.monotonic())
            stream = entry[0]
            try:
                return stream.push(_image(frame, "FRAME"))
            finally:
                if end:
                    self.streams.pop(stream_id, None)
                else:
                    self.streams[stream_id] = (stream, time.monotonic())


def free_local_ports(n: int) -> list[int]:
    """n TCP ports free on 127.0.0.1 right now (for tests and benchmarks that start a server)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _image(a: np.ndarray, name: str) -> np.ndarray:
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3)) or a.size == 0:
        raise InputError(f"{name} must be H x W, H x W x 1 or H x W x 3, got shape {tuple(a.shape)}")
    return a[..., 0] if a.ndim == 3 and a.shape[2] == 1 else a


def stub_environment(explicit: Path | None) -> Path | None:
    """The numpy<2 environment for Triton's Python stub; None when this one already has numpy<2."""
    if explicit is None and os.environ.get(STUB_ENV_VAR):
        explicit = Path(os.environ[STUB_ENV_VAR])
    if explicit is not None:
        if not (explicit / "bin" / "python").exists():
            raise UsageError(f"--stub-env {explicit} is not a Python environment (no bin/python)")
        return explicit
    if int(np.__version__.split(".")[0]) >= 2:
        raise MissingDependencyError(
            f"PyTriton's stub needs numpy<2 but this environment has numpy {np.__version__}; "
            f"pass --stub-env (or set {STUB_ENV_VAR}) to a venv with `pip install nvidia-pytriton==0.7.0`"
        )
    return None


def _import_pytriton() -> Any:
    try:
        import pytriton.server.triton_server as triton_server
        import pytriton.triton as triton  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError(
            f"`serve` needs PyTriton ({e.name or e}): install the serve extra (pip install 'medsam3-rt[serve]')"
        ) from None
    return triton_server


def start(model_dir: Path, settings: ServeSettings, backend: str = "auto") -> Any:
    """Load the model, bind `segment` and `stream`, start Triton; return the running `Triton` (call `.stop()`)."""
    triton_server = _import_pytriton()
    stub = stub_environment(settings.stub_env)
    if stub is not None:
        triton_server.get_triton_python_backend_python_env = lambda: stub
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    if libdir and libdir not in os.environ.get("LD_LIBRARY_PATH", "").split(":"):
        # The stub embeds libpython; without the interpreter's own it loads a mismatched one.
        os.environ["LD_LIBRARY_PATH"] = ":".join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p)

    from pytriton.exceptions import PyTritonBadParameterError
    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    handler = SegmentHandler(model_dir, backend)
    table = StreamTable(handler.seg, settings.stream_idle_s, settings.max_streams)

    def one_by_one(fn: Any) -> Any:
        def infer(requests: list[Any]) -> list[dict[str, np.ndarray]]:
            out = []
            for r in requests:
                try:
                    out.append(fn(r))
                except Medsam3Error as e:
                    raise PyTritonBadParameterError(str(e)) from None
            return out

        return infer

    def segment(r: Any) -> dict[str, np.ndarray]:
        return handler(_image(r["IMAGE"], "IMAGE"), r["PROMPTS"])

    def stream(r: Any) -> dict[str, np.ndarray]:
        sid = bytes(np.asarray(r["STREAM_ID"]).reshape(-1)[0]).decode("utf-8")
        end = bool(np.asarray(r["END"]).reshape(-1)[0])
        fr = table.push(sid, r["FRAME"], r["PROMPTS"], end)
        return {
            "LABEL_MAP": fr.label_map.astype(np.uint8),
            "OBJECT_IDS": np.asarray(fr.object_ids, np.int64),
            "SCORES": np.asarray(fr.scores, np.float32),
        }

    triton = Triton(
        config=TritonConfig(http_port=settings.http_port, grpc_port=settings.grpc_port, metrics_port=settings.metrics_port, log_verbose=0)
    )
    no_batch = ModelConfig(batching=False)
    triton.bind(
        model_name="segment",
        infer_func=one_by_one(segment),
        inputs=[Tensor(name="IMAGE", dtype=np.uint8, shape=(-1, -1, -1)), Tensor(name="PROMPTS", dtype=bytes, shape=(-1,))],
        outputs=[
            Tensor(name="LABEL_MAP", dtype=np.uint8, shape=(-1, -1)),
            Tensor(name="SCORES", dtype=np.float32, shape=(-1,)),
            Tensor(name="BOXES", dtype=np.float32, shape=(-1, 4)),
        ],
        config=no_batch,
        strict=False,
    )
    triton.bind(
        model_name="stream",
        infer_func=one_by_one(stream),
        inputs=[
            Tensor(name="STREAM_ID", dtype=bytes, shape=(1,)),
            Tensor(name="END", dtype=np.bool_, shape=(1,)),
            Tensor(name="FRAME", dtype=np.uint8, shape=(-1, -1, -1)),
            Tensor(name="PROMPTS", dtype=bytes, shape=(-1,)),
        ],
        outputs=[
            Tensor(name="LABEL_MAP", dtype=np.uint8, shape=(-1, -1)),
            Tensor(name="OBJECT_IDS", dtype=np.int64, shape=(-1,)),
            Tensor(name="SCORES", dtype=np.float32, shape=(-1,)),
        ],
        config=no_batch,
        strict=False,
    )
    triton.run()

    def sweeper() -> None:  # drops abandoned streams even when no other stream request comes
        while triton.is_alive():
            time.sleep(max(0.1, settings.stream_idle_s / 2))
            table.sweep()

    threading.Thread(target=sweeper, name="medsam3-rt-stream-sweeper", daemon=True).start()
    triton.streams = table  # for the sweep thread and tests: the live stream table
    return triton
