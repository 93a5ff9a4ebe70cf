"""PyTorch backend: the graphs' own `nn.Module`s on the checkpoint, graph by graph (export extra).

`backend="torch"` runs exactly the modules the exporter exported (`build_graph_module`), so
its outputs compare graph for graph with ONNX Runtime, OpenVINO and TensorRT. It is the
accuracy reference on a GPU and the GPU path that can be measured where TensorRT is absent.

- CPU: float32, eager. Reproduces ort-cpu within the export's parity tolerance (tested).
- CUDA (when `torch.cuda.is_available()`): bfloat16 by default (`BackendOptions.precision`
  "bf16" | "fp16" | "fp32"), optional `torch.compile` (`compile=True`), with CUDA graphs
  (`cuda_graph=True` -> mode "reduce-overhead"). Backbone features stay on the GPU as
  `TorchDeviceTensor`s between graphs. UNVERIFIED: no GPU was available when this was written.

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

from medsam3_rt.backends.base import Availability, Backend, BackendOptions, DeviceTensor, GraphRunner, Tensor, as_numpy
from medsam3_rt.errors import BackendUnavailableError, CheckpointError, UsageError
from medsam3_rt.manifest import GraphEntry, Manifest, load_manifest

from .checkpoint import LoadedCheckpoint, load_checkpoint, random_checkpoint
from .graphs import build_graph_module

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


def _device_and_dtype(options: BackendOptions) -> tuple[torch.device, torch.dtype]:
    if torch.cuda.is_available():
        device = torch.device("cuda", options.device_id)
        precision = options.precision or "bf16"
    else:
        device = torch.device("cpu")
        precision = options.precision or "fp32"
        if precision != "fp32":
            raise UsageError(f"backend 'torch' runs {precision} only on CUDA; this machine has no CUDA device (use precision fp32)")
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
            ckpt = random_checkpoint(
                str(source.get("preset")), video=source.get("class") == "Sam3VideoModel", seed=int(source.get("seed", 0))
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

    @classmethod
    def probe(cls) -> Availability:
        return Availability(True)  # torch imported: this module is only loaded when selected

    def __init__(self, options: BackendOptions | None = None, *, checkpoint: LoadedCheckpoint | None = None) -> None:
        super().__init__(options)
        self.device, self.dtype = _device_and_dtype(self.options)
        self._checkpoint = checkpoint
        self._lock = threading.Lock()
        self._manifests: dict[Path, Manifest] = {}

    def _manifest(self, model_dir: Path) -> Manifest:
        key = model_dir.resolve()
        if key not in self._manifests:
            self._manifests[key] = load_manifest(model_dir, verify="none")
        return self._manifests[key]

    def checkpoint(self, manifest: Manifest) -> LoadedCheckpoint:
        with self._lock:
            if self._checkpoint is None:
                ckpt = checkpoint_for(manifest, self.options.checkpoint)
                for model in (ckpt.detector, ckpt.video):
                    if model is not None:
                        model.to(self.device, self.dtype).eval()
                self._checkpoint = ckpt
            return self._checkpoint

    def open(self, entry: GraphEntry, model_dir: Path) -> GraphRunner:
        manifest = self._manifest(model_dir)
        ckpt = self.checkpoint(manifest)
        try:
            module = build_graph_module(entry.name, ckpt, manifest.dims)
        except KeyError:
            raise BackendUnavailableError(self.name, f"no PyTorch module for graph '{entry.name}' in this medsam3_export") from None
        module = module.to(self.device, self.dtype).eval()
        if self.options.compile:
            mode = "reduce-overhead" if self.options.cuda_graph and self.device.type == "cuda" else "default"
            module = torch.compile(module, mode=mode, dynamic=None)
        log.info("torch: %s on %s (%s)%s", entry.name, self.device, self.dtype, " compiled" if self.options.compile else "")
        return TorchRunner(entry, module, self.device, self.dtype)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


class TorchRunner(GraphRunner):
    accepts_device_tensors = True

    def __init__(self, entry: GraphEntry, module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(entry)
        self.module = module
        self.device = device
        self.dtype = dtype
        self._lock = threading.Lock()

    def keep_outputs_on_device(self, names: Any) -> None:
        if self.device.type == "cuda":  # on the CPU a tensor is already host memory
            super().keep_outputs_on_device(names)

    def _input(self, value: Tensor) -> torch.Tensor:
        if isinstance(value, TorchDeviceTensor):
            x = value.tensor
        else:
            x = torch.from_numpy(np.ascontiguousarray(as_numpy(value)))
        x = x.to(self.device, non_blocking=True)
        return x.to(self.dtype) if x.is_floating_point() else x

    def _run(self, feeds: Mapping[str, Tensor]) -> dict[str, Tensor]:
        args = [self._input(feeds[t.name]) for t in self.spec.inputs]
        with self._lock, torch.inference_mode():
            outs = self.module(*args)
        outs = outs if isinstance(outs, tuple) else (outs,)
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
