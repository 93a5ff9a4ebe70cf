"""CLIP byte-pair tokenizer on the host, from the `tokenizer.json` shipped in the export.

SAM3 reads 32 tokens: <start>, the prompt's BPE tokens, <end>, then padding (masked out).
Prompts longer than that are an error by default: silently cutting "left ventricle
myocardium at end-diastole ..." would segment something else than what was asked.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import ManifestError, PromptError
from .manifest import TokenizerInfo


def normalize_prompt(prompt: object) -> str:
    """Canonical form of a prompt: the cache key, and what CLIP's normaliser feeds the BPE.

    NFC, whitespace collapsed, lower case (CLIP's tokenizer lower-cases anyway, so "Liver"
    and "liver " are the same prompt and share one cached embedding).
    """
    if not isinstance(prompt, str):
        raise PromptError(f"prompts must be strings, got {type(prompt).__name__}")
    text = " ".join(unicodedata.normalize("NFC", prompt).split()).lower()
    if not text:
        raise PromptError(f'empty prompt {prompt!r}: give the structure to segment, e.g. "liver"')
    return text


def as_prompt_list(prompts: str | Sequence[str]) -> list[str]:
    """Accept one prompt or a sequence of prompts; reject an empty sequence."""
    items = [prompts] if isinstance(prompts, str) else list(prompts)
    if not items:
        raise PromptError("no prompt given: pass at least one text prompt")
    for p in items:
        normalize_prompt(p)
    return items


class ClipTokenizer:
    def __init__(self, path: Path, info: TokenizerInfo) -> None:
        from tokenizers import Tokenizer

        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception for corrupt files
            raise ManifestError(f"cannot read tokenizer file {path}: {e}") from None
        self._tok.no_padding()
        self._tok.no_truncation()
        self.info = info

    def token_count(self, prompt: str) -> int:
        return len(self._tok.encode(normalize_prompt(prompt)).ids)

    def encode(self, prompts: Sequence[str], *, truncate: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask), both int64 (P, context_length)."""
        ctx = self.info.context_length
        ids = np.full((len(prompts), ctx), self.info.pad_id, dtype=np.int64)
        mask = np.zeros((len(prompts), ctx), dtype=np.int64)
        for i, enc in enumerate(self._tok.encode_batch([normalize_prompt(p) for p in prompts])):
            row = enc.ids
            if len(row) > ctx:
                if not truncate:
                    raise PromptError(
                        f"prompt {prompts[i]!r} is {len(row)} tokens; the model reads at most {ctx} (including start/end): shorten it"
                    )
                row = row[: ctx - 1] + [self.info.eos_id]
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return ids, mask
