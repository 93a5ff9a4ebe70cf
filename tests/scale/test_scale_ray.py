"""`segment --ray` / `medsam3_rt.scale.segment_studies` on a local Ray cluster (loopback, 2 actors).

The cluster starts once per session. The studies are real data: crops and slices of the demo
model's Colin27 samples (PNG images and NIfTI volumes).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from conftest import cli

from medsam3_rt.io.images import read_image, write_png

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'medsam3-rt[scale]')")

DEMO = Path(__file__).resolve().parents[2] / "medsam3_rt" / "demo"
MODEL = DEMO / "model"
PROMPTS = ["brain", "lateral ventricle"]
ARGS = ["--threads", "1", "--axis", "sagittal", "--window", "0,255"]
SETTINGS_THREADS = 1


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster on 127.0.0.1 with 2 CPUs, shut down after the session."""
    from medsam3_rt.scale.ray_batch import connect

    connect("local", num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def studies(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """22 studies: 18 crops of the demo slice, 2 slices of the demo volume as PNG, 2 volumes (a copy, a crop)."""
    import nibabel as nib

    root = tmp_path_factory.mktemp("studies")
    image = read_image(DEMO / "samples" / "colin27_sagittal_066.png")
    h, w = image.shape[:2]
    out: list[Path] = []
    for k in range(18):
        dy, dx = (k % 3) * 6, (k // 3) * 5
        p = root / f"crop{k:02d}.png"
        write_png(p, np.ascontiguousarray(image[dy : h - 12 + dy, dx : w - 30 + dx]))
        out.append(p)
    vol_path = DEMO / "samples" / "colin27_sagittal_060-069.nii.gz"
    vol = nib.load(str(vol_path))
    data = np.asarray(vol.dataobj)
    for k in (2, 7):
        p = root / f"slice{k}.png"
        write_png(p, np.ascontiguousarray(np.rot90(data[k]).astype(np.uint8)))
        out.append(p)
    shutil.copy(vol_path, root / "vol_full.nii.gz")
    nib.save(nib.Nifti1Image(data[2:8, 10:-10, 5:-5].astype(np.uint8), vol.affine), str(root / "vol_crop.nii.gz"))
    out += [root / "vol_full.nii.gz", root / "vol_crop.nii.gz"]
    return out


@pytest.fixture(scope="session")
def single_process(studies: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the single-process `medsam3-rt segment` over the same studies."""
    out = tmp_path_factory.mktemp("single")
    cli("segment", str(MODEL), *map(str, studies), *[a for p in PROMPTS for a in ("-p", p)], "-o", str(out), *ARGS, "-q", check=True)
    return out


def _settings() -> dict:
    from medsam3_rt.backends import BackendOptions
    from medsam3_rt.preprocess import parse_window

    return {"options": BackendOptions(intra_op_threads=SETTINGS_THREADS), "axis": "sagittal", "window": parse_window("0,255")}


def _payload(path: Path) -> bytes:
    """A file's bytes; for JSON without `timings_ms`, which measures the run (differs between any two runs)."""
    if path.suffix != ".json":
        return path.read_bytes()
    doc = json.loads(path.read_text())
    doc.pop("timings_ms", None)
    return json.dumps(doc, sort_keys=True).encode()


def assert_same_outputs(a: Path, b: Path) -> int:
    """Same files (hidden temporaries of a killed writer included: there must be none) with the same payload."""
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        assert _payload(a / name) == _payload(b / name), name
    return len(names)


def test_ray_equals_single_process_and_survives_a_killed_actor(ray_cluster, studies, single_process, tmp_path: Path) -> None:
    from medsam3_rt.scale import segment_studies

    killed: list[int] = []

    def kill_first_actor(stem: str, pid: int) -> None:
        if not killed:  # a worker that has just delivered a study: SIGKILL it while it works on the next
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    report = segment_studies(MODEL, studies, PROMPTS, tmp_path, actors=2, settings=_settings(), on_result=kill_first_actor)
    assert killed and not report.failed
    assert sorted(report.written) == sorted(p.name.split(".")[0] for p in studies)
    assert len(report.worker_pids) >= 2
    files = assert_same_outputs(single_process, tmp_path)
    assert files == 3 * len(studies)
    # image masks and NIfTI label volumes are compared as raw bytes, not only as payload
    assert (single_process / "vol_crop.labels.nii.gz").read_bytes() == (tmp_path / "vol_crop.labels.nii.gz").read_bytes()

    # resume: a study interrupted before its JSON (written last) is redone; complete ones are not
    (tmp_path / "crop03.json").unlink()
    before = (tmp_path / "crop04.mask.png").stat().st_mtime_ns
    again = segment_studies(MODEL, studies, PROMPTS, tmp_path, actors=2, settings=_settings())
    assert again.written == ["crop03"] and len(again.skipped) == len(studies) - 1
    assert (tmp_path / "crop04.mask.png").stat().st_mtime_ns == before
    assert_same_outputs(single_process, tmp_path)


def test_ray_broken_study_fails_alone(ray_cluster, studies, tmp_path: Path) -> None:
    from medsam3_rt.errors import InputError
    from medsam3_rt.scale import segment_studies
    from medsam3_rt.scale.ray_batch import raise_for_failures

    broken = tmp_path / "in" / "broken.png"
    broken.parent.mkdir()
    broken.write_bytes(studies[0].read_bytes()[:100])  # a truncated PNG
    out = tmp_path / "out"
    report = segment_studies(MODEL, [studies[0], broken, studies[1]], PROMPTS, out, actors=2, settings=_settings())
    assert sorted(report.written) == ["crop00", "crop01"]
    assert list(report.failed) == ["broken"] and "broken.png" in report.failed["broken"]
    assert not any(p.name.startswith("broken") for p in out.iterdir())
    with pytest.raises(InputError, match="1 of 3 studies failed"):
        raise_for_failures(report)


def test_segment_cli_ray_resume(ray_cluster, studies, single_process, tmp_path: Path) -> None:
    """The CLI path (`--ray local` in its own process, its own local cluster) and `--resume` on a finished folder."""
    args = [*map(str, studies[:3]), *[a for p in PROMPTS for a in ("-p", p)], "-o", str(tmp_path), *ARGS]
    proc = cli("segment", str(MODEL), *args, "--ray", "local", "--actors", "2", check=True)
    assert "ray: wrote 3 studies" in proc.stderr
    for name in ("crop00", "crop01", "crop02"):
        for suffix in (".mask.png", ".overlay.png", ".json"):
            assert _payload(tmp_path / f"{name}{suffix}") == _payload(single_process / f"{name}{suffix}")
    proc = cli("segment", str(MODEL), *args, "--ray", "local", "--resume", check=True)
    assert "nothing to do" in proc.stderr
