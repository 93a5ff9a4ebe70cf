"""TensorRT version rule: Python (engines.py) and C++ (trt_version.cpp) decide the same way.

The Python builder records `trt.__version__`, whose format varies by release (`10.3.0`,
`10.7.0.post1`, `10.8.0.43`); the C++ library knows major.minor.patch from
getInferLibVersion() and the build from NV_TENSORRT_BUILD. Before the fix the C++ side built
`10.3.0.26` and compared strings exactly, refusing every engine built by Python on 10.0-10.7.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from medsam3_rt import engines as eng

ROOT = Path(__file__).resolve().parents[2]

# (recorded by the builder, reported where it loads, same release?)
CASES = [
    ("10.3.0", "10.3.0.26", True),  # Python wheel 10.3 has no build number; C++ adds NV_TENSORRT_BUILD
    ("10.7.0.post1", "10.7.0.23", True),  # .post1 is a packaging re-release of the same library
    ("10.8.0.43", "10.8.0.43", True),  # wheels from 10.8 on report the build
    ("10.8.0.43", "10.8.0.40", False),  # same patch, other build: another library
    ("10.7.0.post1", "10.8.0.43", False),
    ("10.3.0", "10.3.1", False),
    ("10.13.3.9.post1", "10.13.3.9", True),
    ("10.0.0+standin", "10.0.0", True),
    ("garbage", "10.3.0", False),
]


@pytest.mark.parametrize(("built", "here", "same"), CASES)
def test_python_rule(built: str, here: str, same: bool) -> None:
    assert eng.same_tensorrt_release(built, here) is same
    assert eng.same_tensorrt_release(here, built) is same


def test_normalised_versions() -> None:
    assert eng.normalize_tensorrt_version("10.7.0.post1") == "10.7.0"
    assert eng.normalize_tensorrt_version("10.8.0.43") == "10.8.0.43"
    assert eng.normalize_tensorrt_version("10.3.0") == "10.3.0"


def _entry(tensorrt: str, flags: tuple[str, ...] = ()) -> eng.EngineEntry:
    return eng.EngineEntry("detector", "engines/x.engine", "0" * 64, 1, "fp16", tensorrt, "GPU", "9.0", "d.onnx", "1" * 64, flags)


def test_engine_entry_from_the_python_builder_loads_under_the_c_library_version() -> None:
    here = eng.GpuEnvironment("10.3.0.26", "GPU", "9.0")  # what the C++ backend reports
    assert eng.incompatibility(_entry("10.3.0"), here) is None
    assert "10.4.0" in (eng.incompatibility(_entry("10.4.0"), here) or "")
    vc = _entry("10.1.0", ("version_compatible",))
    assert eng.incompatibility(vc, here) is None
    assert eng.incompatibility(_entry("10.8.0.43", ("version_compatible",)), here) is not None  # runtime older


@pytest.fixture(scope="module")
def cpp_rule(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler (apt-get install g++)")
    exe = tmp_path_factory.mktemp("trtver") / "trt_version_check"
    src = ROOT / "cpp_bindings"
    cmd = [cxx, "-std=c++17", "-O1", "-I", str(src / "src"), str(src / "tests/trt_version_check.cpp"), str(src / "src/trt_version.cpp")]
    proc = subprocess.run([*cmd, "-o", str(exe)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return exe


def test_cpp_rule_equals_python_rule(cpp_rule: Path) -> None:
    pairs = [(b, h) for b, h, _ in CASES] + [("10.1.0", "10.3.0.26"), ("10.8.0.43", "10.3.0.26"), ("9.2.0", "10.0.0")]
    text = "".join(f"{b} {h}\n" for b, h in pairs)
    out = subprocess.run([str(cpp_rule)], input=text, capture_output=True, text=True, check=True).stdout.split("\n")
    for (built, here), line in zip(pairs, out):
        norm, same, compat = line.split()
        assert norm == eng.normalize_tensorrt_version(built), (built, line)
        assert bool(int(same)) is eng.same_tensorrt_release(built, here), (built, here)
        vc = eng.incompatibility(_entry(built, ("version_compatible",)), eng.GpuEnvironment(here, "GPU", "9.0")) is None
        assert bool(int(compat)) is vc, (built, here)
