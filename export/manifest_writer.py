"""Writing `manifest.json`: the runtime only reads it (`medsam3_rt.manifest`); export and build write it here.

`append_engine_entries` is how `medsam3-rt build` records engines: re-read under a lock,
validated as a whole by the runtime's reader, replaced atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from medsam3_rt.engines import EngineEntry
from medsam3_rt.errors import ManifestError
from medsam3_rt.io.atomic import atomic_write_text
from medsam3_rt.manifest import MANIFEST_NAME, FileEntry, parse_manifest, sha256_file

__all__ = ["append_engine_entries", "file_entry"]


def file_entry(root: Path, rel: str) -> FileEntry:
    """The `files` entry of `root/rel`: its SHA-256 and size."""
    p = root / rel
    return FileEntry(rel, sha256_file(p), p.stat().st_size)


@contextlib.contextmanager
def _manifest_lock(model_dir: Path) -> Iterator[None]:
    """Serialise concurrent `medsam3-rt build`s of one export (POSIX advisory lock)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: atomic replace still protects readers
        yield
        return
    lock_path = model_dir / ".manifest.lock"
    with open(lock_path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def append_engine_entries(model_dir: str | os.PathLike[str], new: Sequence[EngineEntry]) -> tuple[EngineEntry, ...]:
    """Add `new` to the manifest's engines atomically; an entry with the same key is replaced.

    The manifest is re-read under a lock, the result is validated as a whole before it is
    written, and it replaces the old file by rename: readers see the old or the new
    manifest, never a mix, and two builds of different graphs do not lose each other's entries.
    """
    root = Path(model_dir)
    path = root / MANIFEST_NAME
    with _manifest_lock(root):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise ManifestError(f"cannot read {path} to add engines: {e}") from None
        current = parse_manifest(data)
        keys = {e.key for e in new}
        kept = [e for e in current.engines if e.key not in keys]
        data["engines"] = [e.to_json() for e in (*kept, *new)]
        result = parse_manifest(data).engines  # validate before the old manifest is replaced
        atomic_write_text(path, json.dumps(data, indent=2))
    return result
