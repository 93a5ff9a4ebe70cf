"""Prompt packs: precomputed text embeddings, keyed to the model that made them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsam3_rt.errors import PromptPackError
from medsam3_rt.prompt_pack import MAGIC, PromptPack, read_prompt_pack, write_prompt_pack


def _pack(n: int = 2, t: int = 32, c: int = 8) -> PromptPack:
    rng = np.random.default_rng(0)
    mask = np.zeros((n, t), bool)
    mask[:, :3] = True
    return PromptPack(
        "ab" * 32,
        tuple(f"Prompt {i}" for i in range(n)),
        tuple(f"prompt {i}" for i in range(n)),
        (3,) * n,
        rng.normal(size=(n, t, c)).astype(np.float32),
        mask,
    )


def test_round_trip_and_layout(tmp_path: Path) -> None:
    pack = _pack()
    path = tmp_path / "p.m3pack"
    write_prompt_pack(path, pack)
    blob = path.read_bytes()
    assert blob[:8] == MAGIC
    header_len = int.from_bytes(blob[12:16], "little")
    data_start = 16 + header_len + (-(16 + header_len) % 64)
    assert data_start % 64 == 0
    np.testing.assert_array_equal(np.frombuffer(blob, "<f4", 2 * 32 * 8, data_start).reshape(2, 32, 8), pack.features)
    back = read_prompt_pack(path, expect_text_encoder_sha256="ab" * 32)
    assert back.prompts == pack.prompts and back.keys == pack.keys and back.tokens == pack.tokens
    np.testing.assert_array_equal(back.features, pack.features)
    np.testing.assert_array_equal(back.mask, pack.mask)


def test_pack_for_another_model_is_refused(tmp_path: Path) -> None:
    write_prompt_pack(tmp_path / "p.m3pack", _pack())
    with pytest.raises(PromptPackError, match="made for another model"):
        read_prompt_pack(tmp_path / "p.m3pack", expect_text_encoder_sha256="cd" * 32)


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda b: b[:-10], "truncated"),
        (lambda b: b"NOTAPACK" + b[8:], "bad magic"),
        (lambda b: b[:16] + b"[" + b[17:], "corrupt"),
        (lambda b: b"", "bad magic"),
        (lambda b: b[:8] + (9).to_bytes(4, "little") + b[12:], "format v9"),
    ],
)
def test_broken_files(tmp_path: Path, mangle, message: str) -> None:
    path = tmp_path / "p.m3pack"
    write_prompt_pack(path, _pack())
    path.write_bytes(mangle(path.read_bytes()))
    with pytest.raises(PromptPackError, match=message):
        read_prompt_pack(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PromptPackError, match="does not exist"):
        read_prompt_pack(tmp_path / "nope.m3pack")
