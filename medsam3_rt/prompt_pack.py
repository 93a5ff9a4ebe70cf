"""Prompt packs: precomputed text embeddings that device software loads without a tokenizer.

File layout (little-endian, readable from C with no zip or JSON-schema library):

    offset 0   8 bytes   magic b"M3RTPACK"
    offset 8   uint32    format version (1)
    offset 12  uint32    header length H in bytes
    offset 16  H bytes   UTF-8 JSON header (below)
    ...        zero padding up to the next multiple of 64
    data       features float32 [N, T, C] (C order), then mask uint8 [N, T]

Header: {"format": "medsam3-rt/prompt-pack", "version": 1, "text_encoder_sha256": "...",
"text_context": T, "channels": C, "prompts": [{"prompt": "Liver", "key": "liver",
"tokens": 3}, ...], "features": {"offset": 0, "dtype": "float32", "shape": [N, T, C]},
"mask": {"offset": N*T*C*4, "dtype": "uint8", "shape": [N, T]}, "producer": "medsam3-rt 0.1.0"}.
Offsets are relative to the start of the data block. A pack is valid only for the model
whose text-encoder graph has `text_encoder_sha256`; the runtime refuses any other.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._version import __version__
from .errors import PromptPackError
from .io.atomic import atomic_write_bytes
from .text_cache import TextEmbedding

MAGIC = b"M3RTPACK"
VERSION = 1
FORMAT = "medsam3-rt/prompt-pack"
ALIGN = 64
SUFFIX = ".m3pack"


@dataclass(frozen=True)
class PromptPack:
    text_encoder_sha256: str
    prompts: tuple[str, ...]
    keys: tuple[str, ...]
    tokens: tuple[int, ...]
    features: np.ndarray  # (N, T, C) float32
    mask: np.ndarray  # (N, T) bool

    def embeddings(self) -> dict[str, TextEmbedding]:
        return {k: TextEmbedding(self.features[i], self.mask[i]) for i, k in enumerate(self.keys)}


def write_prompt_pack(path: str | os.PathLike[str], pack: PromptPack) -> None:
    n, t, c = pack.features.shape
    feat = np.ascontiguousarray(pack.features, dtype="<f4")
    mask = np.ascontiguousarray(pack.mask, dtype=np.uint8)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "text_encoder_sha256": pack.text_encoder_sha256,
        "text_context": t,
        "channels": c,
        "prompts": [{"prompt": p, "key": k, "tokens": int(tk)} for p, k, tk in zip(pack.prompts, pack.keys, pack.tokens)],
        "features": {"offset": 0, "dtype": "float32", "shape": [n, t, c]},
        "mask": {"offset": feat.nbytes, "dtype": "uint8", "shape": [n, t]},
        "producer": f"medsam3-rt {__version__}",
    }
    hbytes = json.dumps(header, ensure_ascii=False).encode("utf-8")
    head = MAGIC + struct.pack("<II", VERSION, len(hbytes)) + hbytes
    head += b"\0" * (-len(head) % ALIGN)
    atomic_write_bytes(path, head + feat.tobytes() + mask.tobytes())


def read_prompt_pack(path: str | os.PathLike[str], *, expect_text_encoder_sha256: str | None = None) -> PromptPack:
    p = Path(path)
    try:
        blob = p.read_bytes()
    except FileNotFoundError:
        raise PromptPackError(f"prompt pack '{p}' does not exist") from None
    except IsADirectoryError:
        raise PromptPackError(f"prompt pack '{p}' is a directory, expected a {SUFFIX} file") from None
    if len(blob) < 16 or blob[:8] != MAGIC:
        raise PromptPackError(f"'{p}' is not a medsam3-rt prompt pack (bad magic); create one with `medsam3-rt prompts pack`")
    version, hlen = struct.unpack_from("<II", blob, 8)
    if version > VERSION:
        raise PromptPackError(f"prompt pack '{p}' has format v{version}; this medsam3-rt reads v{VERSION}: upgrade it")
    try:
        header = json.loads(blob[16 : 16 + hlen].decode("utf-8"))
        data_start = 16 + hlen + (-(16 + hlen) % ALIGN)
        n, t, c = (int(v) for v in header["features"]["shape"])
        f_off, m_off = int(header["features"]["offset"]), int(header["mask"]["offset"])
        entries = header["prompts"]
        if len(entries) != n or header["mask"]["shape"] != [n, t]:
            raise ValueError("prompt count does not match the array shapes")
        feat_bytes, mask_bytes = n * t * c * 4, n * t
        if data_start + max(f_off + feat_bytes, m_off + mask_bytes) > len(blob):
            raise ValueError(f"file is truncated ({len(blob)} bytes)")
        features = np.frombuffer(blob, "<f4", n * t * c, data_start + f_off).reshape(n, t, c).astype(np.float32)
        mask = np.frombuffer(blob, np.uint8, n * t, data_start + m_off).reshape(n, t).astype(bool)
        if not np.isfinite(features).all():
            raise ValueError("its features contain NaN or infinite values")
        pack = PromptPack(
            text_encoder_sha256=str(header["text_encoder_sha256"]),
            prompts=tuple(str(e["prompt"]) for e in entries),
            keys=tuple(str(e["key"]) for e in entries),
            tokens=tuple(int(e["tokens"]) for e in entries),
            features=features,
            mask=mask,
        )
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, struct.error, RecursionError) as e:
        raise PromptPackError(f"prompt pack '{p}' is corrupt: {e}") from None
    if expect_text_encoder_sha256 is not None and pack.text_encoder_sha256 != expect_text_encoder_sha256:
        raise PromptPackError(
            f"prompt pack '{p}' was made for another model (text encoder {pack.text_encoder_sha256[:12]}..., "
            f"this model has {expect_text_encoder_sha256[:12]}...); rebuild it with `medsam3-rt prompts pack`"
        )
    return pack
