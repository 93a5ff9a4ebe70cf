"""`medsam3-rt prompts pack|show`: precomputed text embeddings for device software."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer
from rich.table import Table

from ..errors import OutputExistsError, UsageError
from ..model import Model
from ..prompt_pack import SUFFIX, PromptPack, read_prompt_pack, write_prompt_pack
from ..tokenizer import as_prompt_list, normalize_prompt
from .console import out_console, say

app = typer.Typer(help="Prompt packs: text embeddings computed once, loaded without tokenizer or text encoder.", no_args_is_help=True)


@app.command("pack", no_args_is_help=True)
def pack(
    model_dir: Path = typer.Argument(..., help="Export directory."),
    prompt: list[str] = typer.Option(..., "--prompt", "-p", help="Prompt to include; repeat."),
    output: Path = typer.Option(..., "--output", "-o", help=f"Pack file to write ({SUFFIX})."),
    force: bool = typer.Option(False, "--force", help="Overwrite OUTPUT."),
) -> None:
    """Encode prompts with the model's text encoder and write a prompt pack."""
    if output.exists() and not force:
        raise OutputExistsError(f"{output} exists; pass --force to overwrite")
    prompts = as_prompt_list(prompt)
    keys = list(dict.fromkeys(normalize_prompt(p) for p in prompts))
    if len(keys) != len(prompts):
        raise UsageError("duplicate prompts (after normalising case and whitespace)")
    model = Model(model_dir, "ort-cpu")
    embs = model.encode_new_prompts(prompts)
    pack_ = PromptPack(
        text_encoder_sha256=model.manifest.text_encoder_sha256,
        prompts=tuple(prompts),
        keys=tuple(keys),
        tokens=tuple(model.tokenizer.token_count(p) for p in prompts),
        features=np.stack([e.features for e in embs]),
        mask=np.stack([e.mask for e in embs]),
    )
    write_prompt_pack(output, pack_)
    say(f"wrote {len(prompts)} prompt(s) to {output} (model text encoder {pack_.text_encoder_sha256[:12]}...)")


@app.command("show", no_args_is_help=True)
def show(pack_file: Path = typer.Argument(..., help="Prompt pack file.")) -> None:
    """List the prompts in a pack and the model it belongs to."""
    p = read_prompt_pack(pack_file)
    table = Table(
        "prompt",
        "tokens",
        title=f"{pack_file.name}: text encoder {p.text_encoder_sha256[:16]}..., {p.features.shape[1]} x {p.features.shape[2]}",
    )
    for prompt, tokens in zip(p.prompts, p.tokens):
        table.add_row(prompt, str(tokens))
    out_console.print(table)
