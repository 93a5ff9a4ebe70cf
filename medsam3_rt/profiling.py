"""Timing statistics, memory sampling and the machine fingerprint for benchmarks (no torch).

Used by `medsam3-rt bench` (`medsam3_bench`) and the scripts in `benchmarks/`. All
clocks are `time.perf_counter`; GPU backends are synchronised by the caller before a clock
stops (their runners return host arrays, or device tensors that the caller copies).
"""

from __future__ import annotations

import os
import platform
import re
import resource
import shutil
import subprocess
import threading
from collections.abc import Iterable, Sequence
from importlib import metadata
from typing import Any

import numpy as np

from .stopwatch import Stopwatch as Stopwatch  # re-exported: the one Stopwatch, for the benchmarks

PERCENTILES = (50, 95, 99)


def summarize(samples_ms: Sequence[float]) -> dict[str, float | int]:
    """n, mean, std, min, max and p50/p95/p99 (linear interpolation) of millisecond samples."""
    a = np.asarray(list(samples_ms), dtype=np.float64)
    if a.size == 0:
        return {"n": 0}
    out: dict[str, float | int] = {
        "n": int(a.size),
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "min": float(a.min()),
        "max": float(a.max()),
    }
    for p in PERCENTILES:
        out[f"p{p}"] = float(np.percentile(a, p))
    return out


def median_ratio(samples: Sequence[float], reference: Sequence[float]) -> float | None:
    """Median of per-round ratios samples[i] / reference[i] (rounds interleave the two, so
    load drift on a shared machine cancels); None without paired samples."""
    pairs = [(a, b) for a, b in zip(samples, reference) if b > 0]
    if not pairs:
        return None
    return float(np.median([a / b for a, b in pairs]))


# -- memory ----------------------------------------------------------------------------------
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; else the peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (getrusage)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kb) * (1 if platform.system() == "Darwin" else 1024)


class RssSampler:
    """Samples the process RSS on a background thread; `peak` is the highest value seen.

    The kernel's own peak (`ru_maxrss`) only grows, so with several backends in one process
    it cannot tell which one used the memory; sampling between `start()` and `stop()` can.
    """

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.start_bytes = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> RssSampler:
        self.start_bytes = self.peak = rss_bytes()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, rss_bytes())

    def stop(self) -> int:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        return self.peak

    def __enter__(self) -> RssSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def gpu_memory_used_bytes() -> int | None:
    """GPU memory held by this process (nvidia-smi), None where there is no NVIDIA GPU."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    total = 0
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(os.getpid()) and parts[1].isdigit():
            total += int(parts[1]) << 20
    return total


# -- machine ---------------------------------------------------------------------------------
LIBRARIES = (
    "medsam3-rt", "numpy", "onnxruntime", "onnxruntime-gpu", "openvino", "opencv-python-headless",
    "tokenizers", "torch", "transformers", "onnx", "tensorrt",
)  # fmt: skip


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "f16c")
                    return [f for f in wanted if f in flags]
    except OSError:
        pass
    return []


def _mem_total_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(re.findall(r"\d+", line)[0]) * 1024
    except (OSError, IndexError):
        pass
    return None


def _gpus() -> list[dict[str, str]]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
    return gpus


def library_versions(names: Iterable[str] = LIBRARIES) -> dict[str, str]:
    """Installed versions from package metadata (nothing is imported)."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def machine_info() -> dict[str, Any]:
    """What a benchmark ran on: CPU model, cores, memory, load, GPUs, OS, Python and library versions."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = os.cpu_count() or 0
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "cpu_model": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "logical_cpus": os.cpu_count() or 0,
        "usable_cpus": affinity,
        "memory_total_bytes": _mem_total_bytes(),
        "load_average_at_start": load,
        "gpus": _gpus(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "libraries": library_versions(),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES") if k in os.environ},
    }
