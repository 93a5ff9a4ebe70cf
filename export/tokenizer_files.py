"""The CLIP tokenizer files an export directory ships (`tokenizer/tokenizer.json`).

SAM3 uses OpenAI CLIP's byte-pair encoding (49,408 tokens, 32-token context; SAM3-LiteText's
MobileCLIP text encoders read the same vocabulary with a 16-token context). A Hugging
Face checkpoint directory usually carries it; a `sam3.pt` does not, so the vocabulary
ships with medsam3-rt (`assets/bpe_simple_vocab_16e6.txt.gz`, MIT, see its LICENSE file)
and is turned into transformers' `CLIPTokenizer`, the reference the runtime is tested
against. The runtime reads the serialised `tokenizer.json` with the `tokenizers` library.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

from transformers import CLIPTokenizer, PreTrainedTokenizerBase

from medsam3_rt.errors import CheckpointError
from medsam3_rt.manifest import TokenizerInfo

BPE_VOCAB = Path(__file__).parent / "assets" / "bpe_simple_vocab_16e6.txt.gz"
CONTEXT_LENGTH = 32
TOKENIZER_FILE = "tokenizer/tokenizer.json"


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable-character table (GPT-2 style)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def clip_vocab_and_merges(bpe_gz: Path = BPE_VOCAB) -> tuple[dict[str, int], list[str]]:
    """CLIP's 49,408-token vocabulary and its 48,894 merges, as CLIP builds them."""
    with gzip.open(bpe_gz, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    chars = list(_bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, merges


def bundled_clip_tokenizer() -> CLIPTokenizer:
    vocab, merges = clip_vocab_and_merges()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        return CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"))


def checkpoint_tokenizer(checkpoint_dir: Path | None) -> tuple[PreTrainedTokenizerBase, str]:
    """The checkpoint's own tokenizer when it ships one, else the bundled CLIP vocabulary."""
    if checkpoint_dir is not None and any((checkpoint_dir / f).is_file() for f in ("tokenizer.json", "vocab.json")):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(checkpoint_dir, local_files_only=True), f"{checkpoint_dir.name} (checkpoint)"
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot load the tokenizer files in '{checkpoint_dir}': {e}") from None
    return bundled_clip_tokenizer(), "bundled CLIP BPE vocabulary (bpe_simple_vocab_16e6)"


def write_tokenizer(
    tokenizer: PreTrainedTokenizerBase, export_dir: Path, vocab_size: int, context_length: int = CONTEXT_LENGTH
) -> TokenizerInfo:
    """Serialise the tokenizer for the runtime and describe it for the manifest.

    `context_length` is the text encoder's position count (32 for SAM3, 16 for SAM3-LiteText):
    the runtime pads every prompt to it, as the model was run in training.
    """
    if len(tokenizer) != vocab_size:
        raise CheckpointError(f"the tokenizer has {len(tokenizer)} tokens but the text encoder expects {vocab_size}")
    out = export_dir / TOKENIZER_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    backend = tokenizer.backend_tokenizer
    backend.no_padding()
    backend.no_truncation()
    backend.save(str(out))
    return TokenizerInfo(
        file=TOKENIZER_FILE,
        context_length=context_length,
        pad_id=int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id),
        bos_id=int(tokenizer.bos_token_id),
        eos_id=int(tokenizer.eos_token_id),
        vocab_size=vocab_size,
    )
