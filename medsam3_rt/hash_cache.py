"""SHA-256 of export files, remembered across processes so a CLI run does not re-hash GBs of weights.

`load_manifest(verify="hash")` checks every graph, weight and tokenizer file against the
SHA-256 the manifest records. Hashing the full SAM3 export (~3.4 GB) takes ~10 s, on every
`medsam3-rt segment` run. This cache keeps, per file, the digest measured when the file had
a given *stamp*: resolved path, device, inode, size, mtime_ns and ctime_ns. Any write to the
file changes its ctime (which, unlike mtime, cannot be set back by `touch -d` or
`os.utime`); replacing it changes the inode. A file whose stamp changed is hashed again.

Where: `$MEDSAM3_RT_CACHE_DIR/sha256-v1/`, else `$XDG_CACHE_HOME/medsam3-rt/sha256-v1/`,
else `~/.cache/medsam3-rt/sha256-v1/`; never inside the export directory (which may be
read-only, or shared). `MEDSAM3_RT_HASH_CACHE=0` turns it off.

Safety rules:
- best effort: an unreadable, unwritable or corrupt cache only costs a re-hash, never an error;
- one small JSON file per stamp, written to a unique temporary name and renamed into place,
  so concurrent processes never see a torn entry and identical keys carry identical values;
- an entry is stored only when the file's stamp was the same before and after hashing and
  its mtime/ctime are at least `RACY_NS` old ("racy" stamps: a write in the same timestamp
  tick would not change the stamp), like git's racily-clean index entries;
- a cached digest that disagrees with the manifest is re-checked by hashing the file, so an
  error always reports the file's actual SHA-256;
- bounded: a hit refreshes the entry's mtime, and past `MAX_ENTRIES` entries the least
  recently used half is deleted.

The cache protects against corrupted and modified files, not against someone who can write
to your cache directory (they could equally edit the files it describes).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ENV_DIR = "MEDSAM3_RT_CACHE_DIR"
ENV_SWITCH = "MEDSAM3_RT_HASH_CACHE"
SUBDIR = "sha256-v1"
RACY_NS = 2_000_000_000  # stamps younger than this are not stored
MAX_ENTRIES = 4096  # beyond this, the least recently used half is removed
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FileStamp:
    """What identifies one version of a file without reading it."""

    path: str
    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, path: Path, st: os.stat_result | None = None) -> FileStamp:
        st = st if st is not None else path.stat()
        return cls(str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


def cache_dir() -> Path | None:
    """The cache folder, or None when switched off."""
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "off", "false", "no"):
        return None
    base = os.environ.get(ENV_DIR)
    if base:
        return Path(base) / SUBDIR
    xdg = os.environ.get("XDG_CACHE_HOME")
    root = Path(xdg) if xdg else Path.home() / ".cache"
    return root / "medsam3-rt" / SUBDIR


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in 4 MiB blocks (the one hashing routine of the package)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def lookup(stamp: FileStamp) -> str | None:
    folder = cache_dir()
    if folder is None:
        return None
    try:
        data = json.loads((folder / f"{stamp.key}.json").read_text(encoding="utf-8"))
        if data.get("stamp") == asdict(stamp) and isinstance(data.get("sha256"), str) and _DIGEST.match(data["sha256"]):
            with contextlib.suppress(OSError):
                os.utime(folder / f"{stamp.key}.json")  # recently used
            return data["sha256"]
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    return None


def store(stamp: FileStamp, digest: str) -> None:
    folder = cache_dir()
    if folder is None or time.time_ns() - max(stamp.mtime_ns, stamp.ctime_ns) < RACY_NS:
        return
    target = folder / f"{stamp.key}.json"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{stamp.key[:16]}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"stamp": asdict(stamp), "sha256": digest}, f)
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        _prune(folder, keep=target)
    except OSError as e:
        log.debug("sha256 cache: cannot write %s (%s)", target, e)


def _prune(folder: Path, keep: Path) -> None:
    entries = [e for e in os.scandir(folder) if e.name.endswith(".json") and e.name != keep.name]
    if len(entries) < MAX_ENTRIES:  # with `keep`, at most MAX_ENTRIES
        return

    def age(e: os.DirEntry) -> int:
        try:
            return e.stat().st_mtime_ns
        except OSError:
            return 0

    for e in sorted(entries, key=age)[: len(entries) + 1 - MAX_ENTRIES // 2]:
        with contextlib.suppress(OSError):
            os.unlink(e.path)


def file_sha256(path: Path, st: os.stat_result | None = None, *, expected: str | None = None) -> str:
    """SHA-256 of `path`, from the persistent cache when its stamp is known, else hashed (and stored).

    A cached digest that differs from `expected` is not trusted: the file is hashed again.
    """
    stamp = FileStamp.of(path, st)
    cached = lookup(stamp)
    if cached is not None and (expected is None or cached == expected):
        log.debug("sha256 cache hit: %s", path)
        return cached
    digest = sha256_file(path)
    with contextlib.suppress(OSError):
        if FileStamp.of(path) == stamp:  # unchanged while it was read
            store(stamp, digest)
    return digest
