"""Outputs are written whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from medsam3_rt.io.atomic import atomic_directory, atomic_path, atomic_write_text


def test_atomic_path_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temp file left behind


def test_atomic_path_keeps_the_suffix_for_format_sniffing_writers(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "a.mask.png") as tmp:
        assert tmp.name.endswith(".mask.png")
        tmp.write_bytes(b"x")
    assert (tmp_path / "a.mask.png").read_bytes() == b"x"


def test_atomic_directory(tmp_path: Path) -> None:
    target = tmp_path / "model"
    with pytest.raises(ValueError), atomic_directory(target) as stage:
        (stage / "a").write_text("1")
        raise ValueError("export failed")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_directory(target) as stage:
        (stage / "a").write_text("1")
    assert (target / "a").read_text() == "1"
    with pytest.raises(FileExistsError), atomic_directory(target) as stage:
        (stage / "b").write_text("2")
    with atomic_directory(target, overwrite=True) as stage:
        (stage / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
