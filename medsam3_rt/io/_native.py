"""What native decoders print: libpng, libtiff, libjpeg and FFmpeg write to file descriptor 2.

They report a corrupt file on stderr (`libpng error: IDAT: invalid literal/lengths set`,
`[ERROR:0@1.2] global grfmt_tiff.cpp:117 TIFF_Error ...`, `[mov,mp4 @ 0x...] moov atom
not found`) and then hand OpenCV an empty result, or, for some corrupt JPEG data, a partly
grey image. `native_stderr()` captures those lines while a decoder runs, so the reader can
put the reason into its one-line `InputError` instead of letting the native text scroll
past the CLI's error.

Capturing redirects the process's fd 2 for the duration of the block, so it is held only
around single decode/open calls and serialised by a lock; anything another thread writes to
stderr in that window lands in the capture (and is dropped).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator

_LOCK = threading.Lock()
_MAX_BYTES = 1 << 16
# "[ERROR:0@12.146] global grfmt_tiff.cpp:117 TIFF_Error " (OpenCV's logger)
_CV_PREFIX = re.compile(r"^\[\s*(ERROR|WARN|INFO|DEBUG)[^\]]*\]\s+(?:global\s+)?\S+:\d+\s+")
# "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55e8c4b50580] " (FFmpeg's av_log)
_AV_PREFIX = re.compile(r"^\[[^\]]* @ 0x[0-9a-fA-F]+\]\s*")
# "OpenCV(5.0.0) /io/opencv/modules/.../grfmt_tiff.cpp:240: error: (-2:Unspecified error) in function '...'"
_CV_EXCEPTION = re.compile(r"OpenCV\([^)]*\) \S+: error: \([^)]*\)( in function '[^']*')?")
_CV_CALL = re.compile(r"^\w+ \w+\(''\): ")  # "imdecode_ imdecode_(''): "


@contextlib.contextmanager
def native_stderr() -> Iterator[list[str]]:
    """Capture fd-2 output of native code inside the block; the yielded list holds its lines afterwards."""
    lines: list[str] = []
    with _LOCK:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 (daemonised): nothing to capture
            yield lines
            return
        try:
            sink = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
        except OSError:
            os.close(saved)
            yield lines
            return
        try:
            os.dup2(sink.fileno(), 2)
            try:
                yield lines
            finally:
                with contextlib.suppress(Exception):
                    sys.stderr.flush()
                os.dup2(saved, 2)
                sink.seek(0)
                text = sink.read(_MAX_BYTES).decode("utf-8", "replace")
                lines.extend(line.strip() for line in text.splitlines() if line.strip())
        finally:
            os.close(saved)
            sink.close()


def reason(lines: list[str], limit: int = 200) -> str:
    """The native messages as one short phrase: errors before warnings, logger prefixes removed."""
    messages: list[tuple[bool, str]] = []  # (is a warning, text)
    for line in lines:
        if line.startswith(">") and messages:  # continuation of an OpenCV exception text
            warn, text = messages[-1]
            messages[-1] = (warn, f"{text} {line.lstrip('> ').strip()}")
            continue
        level = _CV_PREFIX.match(line)
        text = _CV_CALL.sub("", _AV_PREFIX.sub("", _CV_PREFIX.sub("", line)))
        messages.append((bool(level and level.group(1) != "ERROR") or "warning" in line.lower(), text))
    errors = [t for warn, t in messages if not warn]
    seen: list[str] = []
    for text in errors or [t for _, t in messages]:
        text = " ".join(_CV_EXCEPTION.sub("", text).split()).strip(" :")
        if text and text not in seen:
            seen.append(text)
    return "; ".join(seen)[:limit]
