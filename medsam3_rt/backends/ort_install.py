"""Which ONNX Runtime distribution provides the `onnxruntime` module, and whether two fight over it.

`onnxruntime` (CPU, a base dependency) and `onnxruntime-gpu` (and -openvino, -directml, ...)
all install the same `onnxruntime/` package folder. With two installed, whichever pip wrote
last owns the shared files, uninstalling either deletes files the other needs, and the GPU
providers can vanish after an unrelated upgrade. We read the distributions' metadata (no
import of onnxruntime needed) and, for the live one, compare the installed extension module
with the hash each distribution's RECORD lists for it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

# Distributions that install the `onnxruntime` package folder.
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml", "onnxruntime-training")
FIX = (
    "pip uninstall -y {names} && pip install {keep}  "
    "(both install the same onnxruntime/ folder; keep only one: onnxruntime-gpu on NVIDIA GPUs, onnxruntime elsewhere)"
)


@dataclass(frozen=True)
class OrtDistribution:
    name: str
    version: str
    live: bool | None  # its files are the ones on disk (None: cannot tell)


def _record_hash(dist: metadata.Distribution) -> tuple[Path, str] | None:
    for f in dist.files or ():
        if f.name.startswith("onnxruntime_pybind11_state") and str(f).startswith("onnxruntime/") and f.hash is not None:
            return Path(str(dist.locate_file(f))), f.hash.value
    return None


def _file_hash(path: Path) -> str | None:
    try:
        digest = hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def installed(path: list[str] | None = None) -> list[OrtDistribution]:
    """Every installed distribution (on sys.path, or `path`) that writes `onnxruntime/`, and whether its files are live."""
    found = []
    dists: dict[str, metadata.Distribution] = {}
    for dist in metadata.distributions(**({"path": path} if path is not None else {})):
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name in ORT_DISTRIBUTIONS and name not in dists:
            dists[name] = dist
    for name in ORT_DISTRIBUTIONS:
        dist = dists.get(name)
        if dist is None:
            continue
        rec = _record_hash(dist)
        live = None if rec is None else _file_hash(rec[0]) == rec[1]
        found.append(OrtDistribution(name, dist.version, live))
    return found


def conflict_message(dists: list[OrtDistribution] | None = None) -> str | None:
    """One line naming the clash and the fix, or None when at most one distribution is installed."""
    dists = installed() if dists is None else dists
    if len(dists) < 2:
        return None
    live = [d.name for d in dists if d.live]
    keep = "onnxruntime-gpu" if any(d.name == "onnxruntime-gpu" for d in dists) else dists[-1].name
    names = " ".join(d.name for d in dists)
    said = ", ".join(f"{d.name} {d.version}" for d in dists)
    owner = f"; the files on disk are {live[0]}'s" if len(live) == 1 else ""
    return f"several ONNX Runtimes are installed ({said}){owner}: " + FIX.format(names=names, keep=keep)


def warn_if_conflicting() -> None:
    """Called when medsam3_rt.backends is imported: a warning, since the CPU path may still work."""
    message = conflict_message()
    if message is not None:
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def describe() -> str:
    """For `medsam3-rt info`: the live distribution, its version and providers."""
    dists = installed()
    try:
        import onnxruntime

        providers = ", ".join(onnxruntime.get_available_providers())
        module = f"onnxruntime {onnxruntime.__version__} from {Path(onnxruntime.__file__).parent}"
    except ImportError as e:  # pragma: no cover - a base dependency
        return f"onnxruntime is not importable ({e})"
    live = [d for d in dists if d.live] or dists
    owner = ", ".join(f"{d.name} {d.version}" for d in live) or "unknown distribution"
    return f"{owner} ({module}); providers: {providers}"
