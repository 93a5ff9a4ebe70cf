"""PyTorch backend: the graphs' own `nn.Module`s on the checkpoint, graph by graph (export extra).

`backend="torch"` runs exactly the modules the exporter exported (`build_graph_module`), so
its outputs compare graph for graph with ONNX Runtime, OpenVINO and TensorRT. It is the
accuracy reference on a GPU and the GPU path that can be measured where TensorRT is absent.

- CPU: float32, eager. Reproduces ort-cpu within the export's parity tolerance (tested).
- Reduced precision is autocast, not a cast of the modules: weights stay fp32, matmuls and
  convolutions run in bf16/fp16, and every normalisation (LayerNorm, GroupNorm, RMSNorm) runs
  in fp32 with autocast off (ViT activations reach ~1e3: norms overflow in fp16). bf16 also
  runs on the CPU (autocast on CPU supports bf16; tested); fp16 needs CUDA.
- CUDA (when `torch.cuda.is_available()`): bfloat16 by default (`BackendOptions.precision`
  "bf16" | "fp16" | "fp32"), optional `torch.compile` (`compile=True`), with CUDA graphs
  (`cuda_graph=True` -> mode "reduce-overhead"). CUDA-graph replays reuse their output memory,
  so outputs kept on the device are cloned before they are handed out (a held frame would
  otherwise change under the caller). Backbone features stay on the GPU as
  `TorchDeviceTensor`s between graphs. UNVERIFIED on CUDA: no GPU was available.

The runtime discovers this backend through the entry point `medsam3_rt.backends: torch`
without importing torch; torch is imported only when `backend="torch"` is selected.

Checkpoint: the manifest records where its graphs came from (`model.source`: format, file
name, SHA-256) but not a path. Pass the checkpoint with `BackendOptions(checkpoint=...)`
(CLI: `--checkpoint`); it is loaded like `medsam3-rt export` does and refused unless its
SHA-256 equals the manifest's. Exports of `--random` presets are rebuilt from preset + seed.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsam3_rt.backends.base import Availability, Backend, BackendOptions, DeviceTensor, GraphRunner, Tensor, TorchOptions, as_numpy
from medsam3_rt.errors import BackendUnavailableError, CheckpointError, UsageError
from medsam3_rt.manifest import GraphEntry, Manifest

from .checkpoint import LoadedCheckpoint, load_checkpoint, random_checkpoint
from .graphs import build_graph_module
from .semantics import manifest_prompt_semantics, manifest_tracker_semantics

log = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_DIMS_CHECKED = ("image_size", "patch_size", "fpn_channels", "text_context", "num_queries")


class TorchDeviceTensor(DeviceTensor):
    """A torch tensor left on the GPU; `dtype` is the graph contract's (what `numpy()` returns)."""

    def __init__(self, tensor: torch.Tensor, dtype: str) -> None:
        self.tensor = tensor
        self.shape = tuple(int(d) for d in tensor.shape)
        self.dtype = np.dtype(dtype)
        self.device = str(tensor.device)

    def numpy(self) -> np.ndarray:
        return self.tensor.detach().to("cpu", torch.float32 if self.dtype.kind == "f" else self.tensor.dtype).numpy().astype(self.dtype)


def _device_and_dtype(options: TorchOptions) -> tuple[torch.device, torch.dtype]:
    if torch.cuda.is_available():
        device = torch.device("cuda", options.device_id)
        precision = options.precision or "bf16"
    else:
        device = torch.device("cpu")
        precision = options.precision or "fp32"
        if precision == "fp16":
            raise UsageError("backend 'torch' runs fp16 only on CUDA; this machine has no CUDA device (use precision bf16 or fp32)")
    if precision not in _DTYPES:
        raise UsageError(f"backend 'torch' precision '{precision}' is not one of {', '.join(_DTYPES)}")
    return device, _DTYPES[precision]


def checkpoint_for(manifest: Manifest, path: str | Path | None) -> LoadedCheckpoint:
    """The checkpoint an export was made from: `path` (verified by SHA-256) or a random preset."""
    source: Mapping[str, Any] = manifest.model.get("source") or {}
    fmt = source.get("format")
    if source.get("adapter"):  # the base checkpoint alone would run other weights than the graphs hold
        raise CheckpointError(
            f"this export has the LoRA adapter '{source['adapter'].get('path', '?')}' merged into its weights; "
            "backend 'torch' runs the base checkpoint only: use an ONNX backend (ort-cpu, ort-cuda, tensorrt, openvino)"
        )
    if path is None:
        if fmt == "random":
            bias = source.get("object_score_bias")  # `export --random` sets the tracker's object-score bias
            ckpt = random_checkpoint(
                str(source.get("preset")),
                video=source.get("class") == "Sam3VideoModel",
                seed=int(source.get("seed", 0)),
                object_score_bias=None if bias is None else float(bias),
            )
        else:
            raise UsageError(
                f"backend 'torch' needs the checkpoint this export was made from ({fmt} '{source.get('path', '?')}'): "
                "pass BackendOptions(checkpoint=PATH) or --checkpoint PATH"
            )
    else:
        p = Path(path)
        config_file = None
        if p.is_file() and isinstance(manifest.model.get("config"), dict):
            # A sam3.pt does not record its geometry; the manifest does.
            config_file = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)  # noqa: SIM115
            json.dump(manifest.model["config"], config_file)
            config_file.close()
        try:
            ckpt = load_checkpoint(p, config=config_file.name if config_file else None)
        finally:
            if config_file is not None:
                Path(config_file.name).unlink(missing_ok=True)
        want, got = source.get("sha256"), ckpt.source.get("sha256")
        if not want or want != got:
            raise CheckpointError(
                f"checkpoint '{p}' (SHA-256 {str(got)[:12]}...) is not the one this export was made from "
                f"({fmt} '{source.get('path', '?')}', SHA-256 {str(want)[:12]}...)"
            )
    from .exporter import model_dims

    dims = model_dims(ckpt)
    mismatched = [k for k in _DIMS_CHECKED if getattr(dims, k) != getattr(manifest.dims, k)]
    if mismatched:
        raise CheckpointError(f"the checkpoint's geometry differs from the export's in {mismatched}; it is not this export's checkpoint")
    return ckpt


class TorchBackend(Backend):
    name = "torch"
    description = "PyTorch on the checkpoint, graph by graph (export extra): fp32 on CPU, bf16/fp16 on CUDA"
    options_type = TorchOptions

    @classmethod
    def probe(cls) -> Availability:
        return Availability(True)  # torch imported: this module is only loaded when selected

    def __init__(self, options: BackendOptions | TorchOptions | None = None, *, checkpoint: LoadedCheckpoint | None = None) -> None:
        super().__init__(options)
        self.device, self.dtype = _device_and_dtype(self.settings)
        self._checkpoint = checkpoint
        self._lock = threading.Lock()

    def checkpoint(self, manifest: Manifest) -> LoadedCheckpoint:
        with self._lock:
            if self._checkpoint is None:
                ckpt = checkpoint_for(manifest, self.settings.checkpoint)
                for model in (ckpt.detector, ckpt.video):
                    if model is not None:
                        model.to(self.device).eval()  # weights stay fp32; precision is autocast's
                self._checkpoint = ckpt
            return self._checkpoint

    def open(self, entry: GraphEntry, model_dir: Path) -> GraphRunner:
        manifest = self.manifest_for(model_dir)
        ckpt = self.checkpoint(manifest)
        try:
            module = build_graph_module(
                entry.name, ckpt, manifest.dims, manifest_prompt_semantics(manifest.model), manifest_tracker_semantics(manifest.tracker)
            )
        except KeyError:
            raise BackendUnavailableError(self.name, f"no PyTorch module for graph '{entry.name}' in this medsam3_export") from None
        module = module.to(self.device).eval()
        pinned = fp32_norms(module, self.device.type) if self.dtype != torch.float32 else 0
        cudagraphs = bool(self.settings.compile and self.settings.cuda_graph and self.device.type == "cuda")
        if self.settings.compile:
            module = torch.compile(module, mode="reduce-overhead" if cudagraphs else "default", dynamic=None)
        log.info(
            "torch: %s on %s (%s autocast, %d norms fp32)%s",
            entry.name, self.device, self.dtype, pinned, " compiled" if self.settings.compile else "",
        )  # fmt: skip
        return TorchRunner(entry, module, self.device, self.dtype, cudagraphs=cudagraphs)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


NORM_TYPES: tuple[type[torch.nn.Module], ...] = tuple(
    t for t in (torch.nn.LayerNorm, torch.nn.GroupNorm, getattr(torch.nn, "RMSNorm", None)) if t is not None
)


def fp32_norms(module: torch.nn.Module, device_type: str) -> int:
    """Run every normalisation layer of `module` in fp32 with autocast off; returns how many.

    Names ending in "norm" catch the model's own norm classes (e.g. RMS norms) too.
    """

    def wrap(norm: torch.nn.Module) -> None:
        inner = norm.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            with torch.autocast(device_type=device_type, enabled=False):
                cast = [a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
                return inner(*cast, **kwargs)

        norm.forward = forward  # type: ignore[method-assign]

    count = 0
    for m in module.modules():
        if isinstance(m, NORM_TYPES) or type(m).__name__.lower().endswith("norm"):
            wrap(m)
            count += 1
    return count


class TorchRunner(GraphRunner):
    accepts_device_tensors = True

    def __init__(
        self, entry: GraphEntry, module: torch.nn.Module, device: torch.device, dtype: torch.dtype, *, cudagraphs: bool = False
    ) -> None:
        super().__init__(entry)
        self.module = module
        self.device = device
        self.dtype = dtype
        self.cudagraphs = cudagraphs  # outputs live in memory the next replay overwrites
        self._lock = threading.Lock()

    def keep_outputs_on_device(self, names: Any) -> None:
        if self.device.type == "cuda":  # on the CPU a tensor is already host memory
            super().keep_outputs_on_device(names)

    def _input(self, value: Tensor) -> torch.Tensor:
        if isinstance(value, TorchDeviceTensor):
            x = value.tensor
        else:
            x = torch.from_numpy(np.ascontiguousarray(as_numpy(value)))
        return x.to(self.device, non_blocking=True)  # fp32 in; autocast picks each op's precision

    def _run(self, feeds: Mapping[str, Tensor]) -> dict[str, Tensor]:
        args = [self._input(feeds[t.name]) for t in self.spec.inputs]
        reduced = self.dtype != torch.float32
        with self._lock, torch.inference_mode(), torch.autocast(device_type=self.device.type, dtype=self.dtype, enabled=reduced):
            if self.cudagraphs:
                torch.compiler.cudagraph_mark_step_begin()  # a new iteration: earlier outputs may be overwritten
            outs = self.module(*args)
            outs = outs if isinstance(outs, tuple) else (outs,)
            if self.cudagraphs:
                outs = tuple(o.clone() for o in outs)  # held across calls, so never the replay's own memory
        result: dict[str, Tensor] = {}
        for t, o in zip(self.spec.outputs, outs):
            if t.name in self.device_outputs:
                result[t.name] = TorchDeviceTensor(o, t.dtype)
            else:
                host = o.detach().to("cpu", torch.float32 if o.is_floating_point() else o.dtype)
                result[t.name] = host.numpy().astype(t.dtype, copy=False)
        return result

    def close(self) -> None:
        self.module = None  # type: ignore[assignment]
