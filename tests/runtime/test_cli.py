"""The CLI as users run it: outputs, exit codes, one-line errors, no partial files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import cli, phantom

from medsam3_rt.io.images import read_image


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("images")
    cv2.imwrite(str(d / "rgb.png"), cv2.cvtColor(phantom(120, 160, seed=1), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(d / "gray16.png"), phantom(90, 70, channels=1, dtype=np.uint16, seed=2))
    cv2.imwrite(str(d / "photo.jpg"), phantom(100, 100, seed=3))
    cv2.imwrite(str(d / "slice.tif"), phantom(64, 80, channels=1, seed=4))
    return d


def _no_traceback(proc) -> None:
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr


def test_version_and_info(tiny_export: Path) -> None:
    assert cli("--version", check=True).stdout.startswith("medsam3-rt ")
    info = cli("info", str(tiny_export), check=True).stdout
    assert "text_encoder" in info and "parity" in info and "ort-cpu" in info
    data = json.loads(cli("info", str(tiny_export), "--json", check=True).stdout)
    assert data["schema"] == "medsam3-rt/manifest"


def test_segment_folder_writes_three_outputs_per_image(tiny_export: Path, images: Path, tmp_path: Path, segmenter) -> None:
    out = tmp_path / "out"
    proc = cli("segment", str(tiny_export), str(images), "-p", "polyp", "-p", "Left Kidney", "-o", str(out), check=True)
    assert "wrote 12 files for 4 input(s)" in proc.stderr
    for stem in ("rgb", "gray16", "photo", "slice"):
        label = cv2.imread(str(out / f"{stem}.mask.png"), cv2.IMREAD_UNCHANGED)
        overlay = cv2.imread(str(out / f"{stem}.overlay.png"))
        data = json.loads((out / f"{stem}.json").read_text())
        src = read_image(images / next(p.name for p in images.iterdir() if p.stem == stem))
        assert label.shape == src.shape[:2] and overlay.shape[:2] == src.shape[:2]
        assert set(np.unique(label)) <= {0, 1, 2}
        assert [p["prompt"] for p in data["prompts"]] == ["polyp", "Left Kidney"]
        assert {"read", "backbone", "detector", "postprocess"} <= set(data["timings_ms"])
        assert data["intended_use"].startswith("Research use only")
        # the CLI writes exactly what the Python API returns
        res = segmenter.segment(src, ["polyp", "Left Kidney"])
        np.testing.assert_array_equal(label, res.label_map)
        assert [p["label_map_area_px"] for p in data["prompts"]] == [int((res.label_map == k).sum()) for k in (1, 2)]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{s}{x}" for s in ("rgb", "gray16", "photo", "slice") for x in (".mask.png", ".overlay.png", ".json")
    )


def test_existing_outputs_need_force_or_resume(tiny_export: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    src = images / "rgb.png"
    cli("segment", str(tiny_export), str(src), "-p", "liver", "-o", str(out), check=True)
    before = (out / "rgb.json").stat().st_mtime_ns
    again = cli("segment", str(tiny_export), str(src), "-p", "liver", "-o", str(out))
    assert again.returncode == 2 and "--force" in again.stderr
    _no_traceback(again)
    resumed = cli("segment", str(tiny_export), str(src), "-p", "liver", "-o", str(out), "--resume", check=True)
    assert "nothing to do" in resumed.stderr and (out / "rgb.json").stat().st_mtime_ns == before
    cli("segment", str(tiny_export), str(src), "-p", "liver", "-o", str(out), "--force", check=True)
    assert (out / "rgb.json").stat().st_mtime_ns != before


def _corrupt_files(d: Path) -> dict[str, Path]:
    png = cv2.imencode(".png", phantom(50, 50))[1].tobytes()
    jpg = cv2.imencode(".jpg", phantom(50, 50))[1].tobytes()
    files = {
        "empty": (d / "empty.png", b""),
        "truncated-png": (d / "trunc.png", png[: len(png) // 2]),
        "truncated-jpeg": (d / "trunc.jpg", jpg[: len(jpg) // 2]),
        "not-an-image": (d / "text.png", b"hello, I am not a PNG at all"),
        "garbage-tiff": (d / "noise.tif", bytes(range(256)) * 4),
    }
    for path, blob in files.values():
        path.write_bytes(blob)
    return {k: v[0] for k, v in files.items()}


@pytest.mark.parametrize("case", ["empty", "truncated-png", "truncated-jpeg", "not-an-image", "garbage-tiff"])
def test_bad_images_exit_3_with_one_line_and_no_output(tiny_export: Path, tmp_path: Path, case: str) -> None:
    path = _corrupt_files(tmp_path)[case]
    out = tmp_path / "out"
    proc = cli("segment", str(tiny_export), str(path), "-p", "liver", "-o", str(out))
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.startswith("error: ") and path.name in proc.stderr
    _no_traceback(proc)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["segment", "{model}", "{img}", "-p", "  ", "-o", "{out}"], 2, "empty prompt"),
        (["segment", "{tmp}", "{img}", "-p", "liver", "-o", "{out}"], 4, "has no manifest.json"),
        (["segment", "{model}", "{tmp}/missing.png", "-p", "liver", "-o", "{out}"], 3, "no such file"),
        (["segment", "{model}", "{img}", "-p", "liver", "-o", "{out}", "--backend", "ort-cuda"], 5, "unavailable"),
        (["segment", "{model}", "{img}", "-p", "liver", "-o", "{out}", "--backend", "ort-cpy"], 2, "did you mean 'ort-cpu'"),
        (["segment", "{model}", "{img}", "-p", "liver", "-o", "{out}", "--window", "nonsense"], 2, "--window"),
        (["segment", "{model}", "{img}", "-p", "liver", "-o", "{out}", "--min-score", "2"], 2, "min-score"),
        (["export", "{tmp}/nothing", "-o", "{out}"], 4, "does not exist"),
        (["prompts", "show", "{img}"], 4, "not a medsam3-rt prompt pack"),
    ],
)
def test_user_errors(tiny_export: Path, images: Path, tmp_path: Path, args, code: int, message: str) -> None:
    fmt = {"model": str(tiny_export), "img": str(images / "rgb.png"), "out": str(tmp_path / "o"), "tmp": str(tmp_path)}
    proc = cli(*[a.format(**fmt) for a in args])
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_prompt_pack_gives_identical_results(tiny_export: Path, images: Path, tmp_path: Path) -> None:
    pack = tmp_path / "prompts.m3pack"
    cli("prompts", "pack", str(tiny_export), "-p", "liver", "-p", "Left Kidney", "-o", str(pack), check=True)
    shown = cli("prompts", "show", str(pack), check=True).stdout
    assert "Left Kidney" in shown
    a, b = tmp_path / "a", tmp_path / "b"
    cli("segment", str(tiny_export), str(images / "rgb.png"), "-p", "liver", "-p", "left kidney", "-o", str(a), check=True)
    cli(
        "segment",
        str(tiny_export),
        str(images / "rgb.png"),
        "-p",
        "liver",
        "-p",
        "left kidney",
        "-o",
        str(b),
        "--prompt-pack",
        str(pack),
        check=True,
    )
    assert (a / "rgb.mask.png").read_bytes() == (b / "rgb.mask.png").read_bytes()
    assert json.loads((a / "rgb.json").read_text())["prompts"] == json.loads((b / "rgb.json").read_text())["prompts"]


def test_prompt_pack_of_another_model_is_refused(tiny_export: Path, images: Path, tmp_path: Path) -> None:
    from medsam3_rt.prompt_pack import read_prompt_pack, write_prompt_pack

    pack = tmp_path / "p.m3pack"
    cli("prompts", "pack", str(tiny_export), "-p", "liver", "-o", str(pack), check=True)
    p = read_prompt_pack(pack)
    write_prompt_pack(pack, p.__class__("0" * 64, p.prompts, p.keys, p.tokens, p.features, p.mask))
    proc = cli("segment", str(tiny_export), str(images / "rgb.png"), "-p", "liver", "-o", str(tmp_path / "o"), "--prompt-pack", str(pack))
    assert proc.returncode == 4 and "made for another model" in proc.stderr


# -- commands of other packages (the medsam3_rt.commands entry-point group) ------------------
def _run_python(code: str, extra_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)


def test_help_lists_registered_commands_without_importing_torch() -> None:
    code = """
import sys
from medsam3_rt.cli.main import run
try:
    run(["--help"])
except SystemExit:
    pass
print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "onnx")))
"""
    proc = _run_python(code)
    assert proc.returncode == 0, proc.stderr
    for name in ("segment", "info", "export", "build", "train", "eval", "bench", "prompts", "demo"):
        assert f" {name} " in proc.stdout, name
    assert proc.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    ("blocked", "command", "extra"),
    [("torch", "export", "export"), ("medsam3_export", "build", "export"), ("medsam3_training", "train", "train")],
)
def test_command_without_its_package_names_the_extra(blocked: str, command: str, extra: str) -> None:
    """A missing package or extra: one line naming the extra, exit code 5 (MissingDependencyError)."""
    code = f"""
import sys
sys.modules[{blocked!r}] = None  # as if not installed
from medsam3_rt.cli.main import run
run([{command!r}, "a", "-o", "b"] if {command!r} != "train" else ["train", "--print-config"])
"""
    proc = _run_python(code)
    assert proc.returncode == 5, proc.stderr
    _no_traceback(proc)
    assert f"`medsam3-rt {command}` needs the '{extra}' extra" in proc.stderr and f"medsam3-rt[{extra}]" in proc.stderr


def test_any_installed_package_can_add_a_command(tmp_path: Path) -> None:
    """A third-party distribution registers `hello`; the runtime CLI finds and runs it, and lists it."""
    module = ["import typer", "app = typer.Typer()", "@app.command()", "def hello(name: str) -> None:", '    "Say hello."']
    (tmp_path / "hello_pkg.py").write_text("\n".join([*module, "    print('hello ' + name)", ""]))
    dist = tmp_path / "hello_pkg-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hello-pkg\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[medsam3_rt.commands]\nhello = hello_pkg:app\nbroken = not_installed_pkg:app [extra1]\n")
    run = "from medsam3_rt.cli.main import run\nrun({args!r})"
    proc = _run_python(run.format(args=["hello", "world"]), tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "hello world", proc.stderr
    proc = _run_python(run.format(args=["broken"]), tmp_path)
    assert proc.returncode == 5 and "needs the 'extra1' extra (not_installed_pkg is not installed)" in proc.stderr, proc.stderr
    proc = _run_python(run.format(args=["--help"]), tmp_path)
    assert "hello" in proc.stdout and "Say hello." in proc.stdout
