"""Console helpers of the `medsam3-rt` CLI, shared by every package that contributes a command.

The library itself never prints; commands print through these consoles so `--quiet` and
`--debug` mean the same everywhere. `import_optional` turns a missing extra into one line
naming it (`MissingDependencyError`), for commands whose heavy imports happen at run time.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from rich.console import Console

from ..errors import MissingDependencyError

__all__ = ["STATE", "err_console", "extra_hint", "import_optional", "out_console", "say"]


@dataclass
class _State:
    quiet: bool = False
    debug: bool = False


STATE = _State()
err_console = Console(stderr=True)
out_console = Console()


def say(message: str) -> None:
    """A progress line on stderr, unless --quiet."""
    if not STATE.quiet:
        err_console.print(message, highlight=False, soft_wrap=True)


def extra_hint(extra: str, what: str, missing: str | None = None) -> str:
    """The one-line message for a command or feature whose extra is not installed."""
    why = f" ({missing} is not installed)" if missing else ""
    return f"{what} needs the '{extra}' extra{why}: pip install 'medsam3-rt[{extra}]' (on CPU-only machines add -c constraints/cpu.txt)"


def import_optional(module: str, extra: str, what: str) -> ModuleType:
    """Import `module` of an optional package, or raise a one-line error naming `extra`."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(extra_hint(extra, what, e.name or str(e))) from None
