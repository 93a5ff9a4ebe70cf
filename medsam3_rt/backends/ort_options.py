"""Which ONNX Runtime GPU provider options the installed onnxruntime knows.

ONNX Runtime's CUDA and TensorRT providers reject an option key they do not know (the
session then falls back to the next provider and the error blames the fallback), and the
keys grew over releases. medsam3-rt passes only the keys the running version knows, decided
from its version at run time, and says which it dropped.

Where each key first appears was read from the provider libraries of the onnxruntime-gpu
wheels on PyPI (`strings libonnxruntime_providers_{tensorrt,cuda}.so`, cp311 manylinux) of
1.17.1, 1.18.0, 1.22.0 and 1.23.0 (the lists are in tests/fakes/data/, and
tests/gpu/test_standin_surface.py re-reads them from a real wheel when one is installed):

- `use_tf32` (CUDA provider): absent in 1.17.1, present from 1.18.0;
- `trt_bf16_enable` (TensorRT provider): absent in 1.17.1 to 1.22.0, present in 1.23.0;
- every other key medsam3-rt passes is in all four releases.

A key first seen in release R is treated as unknown below R (releases between the ones read
are assumed not to have it: the conservative side). Keys missing from this table pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

# provider -> option key -> first onnxruntime(-gpu) release whose provider parses it.
OPTION_SINCE: dict[str, dict[str, tuple[int, int, int]]] = {
    CUDA: {"use_tf32": (1, 18, 0)},
    TENSORRT: {"trt_bf16_enable": (1, 23, 0)},
}


def ort_version_tuple(version: str) -> tuple[int, int, int]:
    """`1.22.0`, `1.23.0.dev20250601`, `1.17.1+cu118` -> (1, 22, 0)."""
    parts: list[int] = []
    for part in version.split(".")[:3]:
        digits = part[: len(part) - len(part.lstrip("0123456789"))]
        if not digits:
            break
        parts.append(int(digits))
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


def known(provider: str, key: str, version: str) -> bool:
    since = OPTION_SINCE.get(provider, {}).get(key)
    return since is None or ort_version_tuple(version) >= since


@dataclass(frozen=True)
class FilteredOptions:
    options: dict[str, Any]
    dropped: tuple[str, ...]  # keys this onnxruntime would reject


def filter_options(provider: str, options: Mapping[str, Any], version: str) -> FilteredOptions:
    """The options `version`'s provider accepts, and the keys dropped."""
    kept = {k: v for k, v in options.items() if known(provider, k, version)}
    return FilteredOptions(kept, tuple(k for k in options if k not in kept))
