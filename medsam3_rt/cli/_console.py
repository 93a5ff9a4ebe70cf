"""Shared console state of the CLI (the library itself never prints)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console


@dataclass
class _State:
    quiet: bool = False
    debug: bool = False


STATE = _State()
err_console = Console(stderr=True)
out_console = Console()


def say(message: str) -> None:
    if not STATE.quiet:
        err_console.print(message, highlight=False, soft_wrap=True)
