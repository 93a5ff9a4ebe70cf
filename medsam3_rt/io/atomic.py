"""Outputs appear whole or not at all: write to a temporary sibling, fsync, then rename.

A process killed mid-write (SIGKILL, power loss) leaves at most a hidden temporary
`.<stem>.<pid>.<random>.tmp<suffixes>` next to the target, never a partial target;
`remove_stale_temporaries` deletes those whose writing process is gone.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces `path` atomically.

    The temporary name keeps the target's suffix so writers that choose a format by
    extension (OpenCV, nibabel) still work.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.{os.getpid()}.", suffix=f".tmp{''.join(target.suffixes)}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; outputs get the usual permissions
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporaries of `path` that interrupted `atomic_path` writes left (writer no longer running)."""
    target = Path(path)
    removed: list[Path] = []
    head = f".{target.stem}."
    pattern = f"{glob.escape(head)}*.tmp{glob.escape(''.join(target.suffixes))}"
    with contextlib.suppress(OSError):
        for tmp in target.parent.glob(pattern):
            pid = tmp.name[len(head) :].split(".", 1)[0]
            if pid.isdigit() and _alive(int(pid)):
                continue  # another process is writing it right now
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary name and move it into place only when complete.

    With `overwrite`, an existing directory is replaced after the new one is complete; the
    old one is removed only after the rename succeeded, so a crash never leaves neither.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    os.chmod(staging, 0o777 & ~_umask())
    try:
        yield staging
        for root, _dirs, files in os.walk(staging, topdown=False):
            for name in files:
                with open(Path(root) / name, "rb+") as f:
                    os.fsync(f.fileno())
            _fsync_dir(Path(root))  # the names inside it, before the rename publishes them
        if target.exists():
            if not overwrite:
                raise FileExistsError(str(target))
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
        _fsync_dir(target.parent)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
