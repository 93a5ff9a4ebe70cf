"""`medsam3-rt`: segment, info, prompts, demo, and the commands other packages register.

The runtime's own commands are defined in this package. Every other command (`export`,
`build`, `train`, `eval`, `bench`, ...) registers itself in the `medsam3_rt.commands`
entry-point group and is imported only when it runs or when help lists it; this module
never names those packages. A command whose package or extra is missing answers with one
line naming the extra to install.

`run()` turns every `Medsam3Error` into one line on stderr and its documented exit code;
anything else is a bug and says so (with the traceback under --debug).
"""

from __future__ import annotations

import logging
import sys
from importlib import metadata
from typing import Any

import typer
from rich.markup import escape

from .._version import __version__
from ..errors import Medsam3Error, MissingDependencyError
from . import demo, info, pacs, prompts, segment
from .console import STATE, err_console, extra_hint

COMMAND_GROUP = "medsam3_rt.commands"
# Commands of the full install and the extra that brings each one's dependencies; used only to
# answer with an install hint when a command's entry point is absent.
KNOWN_COMMANDS = {"export": "export", "build": "export", "fp16-weights": "export", "train": "train", "eval": "train", "bench": "bench"}


def command_entry_points() -> dict[str, metadata.EntryPoint]:
    """Commands registered by installed packages (metadata only: nothing is imported)."""
    return {ep.name: ep for ep in metadata.entry_points(group=COMMAND_GROUP)}


def _single_command(name: str, func: Any, **settings: Any) -> Any:
    app = typer.Typer(add_completion=False)
    app.command(name, **settings)(func)
    return typer.main.get_command(app)


def _unavailable(name: str, message: str, short: str) -> Any:
    """A stand-in for a command that cannot load: help lists it with `short`; running it fails with `message`."""

    def unavailable(ctx: typer.Context) -> None:
        raise MissingDependencyError(message)

    settings = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}
    return _single_command(name, unavailable, help=escape(f"({short})"), context_settings=settings)


def load_command(name: str, ep: metadata.EntryPoint | None) -> Any:
    """The click command of a registered command (None: no such command).

    The entry point names a `typer.Typer` holding that one command (or a group of subcommands)
    or a plain function, which becomes a command as `app.command()` would make it.
    """
    extra = (ep.extras[0] if ep is not None and ep.extras else None) or KNOWN_COMMANDS.get(name)
    what = f"`medsam3-rt {name}`"
    if ep is None:
        if extra is None:
            return None
        return _unavailable(name, extra_hint(extra, what, "its package"), f"not installed: needs the '{extra}' extra")
    try:
        obj = ep.load()
    except ModuleNotFoundError as e:
        missing = e.name or str(e)
        if extra is None:
            return _unavailable(name, f"{what} cannot load: {missing} is not installed", f"not available: {missing} is not installed")
        return _unavailable(name, extra_hint(extra, what, missing), f"not available: needs the '{extra}' extra")
    cmd = typer.main.get_command(obj) if isinstance(obj, typer.Typer) else _single_command(name, obj)
    cmd.name = name
    return cmd


class _PluginGroup(typer.core.TyperGroup):
    """The built-in commands plus those in the `medsam3_rt.commands` group, each loaded on first use."""

    def list_commands(self, ctx: Any) -> list[str]:
        builtin = super().list_commands(ctx)
        return builtin + sorted(n for n in {*command_entry_points(), *KNOWN_COMMANDS} if n not in builtin)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is None:
            cmd = load_command(cmd_name, command_entry_points().get(cmd_name))
            if cmd is not None:
                self.commands[cmd_name] = cmd
        return cmd


app = typer.Typer(
    name="medsam3-rt",
    help="Text-prompted medical image segmentation with SAM3-architecture models. Research use only: not a medical device.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=_PluginGroup,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medsam3-rt {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only print errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what the library decides (backend, caches)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
) -> None:
    STATE.quiet = quiet
    STATE.debug = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


app.command("segment", no_args_is_help=True)(segment.segment)
app.command("info", no_args_is_help=True)(info.info)
app.command("demo")(demo.demo)
app.command("pacs", no_args_is_help=True)(pacs.pacs)
app.add_typer(prompts.app, name="prompts")


GLOBAL_FLAGS = ("--quiet", "-q", "--verbose", "-v", "--debug")


def _hoist_global_flags(argv: list[str]) -> list[str]:
    """Accept --quiet/--verbose/--debug anywhere on the line, not only before the command."""
    flags = [a for a in argv if a in GLOBAL_FLAGS]
    return flags + [a for a in argv if a not in GLOBAL_FLAGS]


def _is_cli_framework_error(e: Exception) -> bool:
    # typer >= 0.29 vendors click (typer._click); older typer uses click itself.
    return type(e).__module__.split(".")[0] in ("click", "typer") and hasattr(e, "show")


def run(argv: list[str] | None = None) -> None:
    command = typer.main.get_command(app)
    args = _hoist_global_flags(list(sys.argv[1:] if argv is None else argv))
    try:
        command.main(args=args, prog_name="medsam3-rt", standalone_mode=False)
    except Medsam3Error as e:
        if STATE.debug:
            import traceback

            traceback.print_exc()
        err_console.print(f"[bold red]error:[/] {escape(e.message)}", highlight=False, soft_wrap=True)  # keeps [trt] etc.
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as e:
        name = type(e).__name__
        if name == "Exit" and hasattr(e, "exit_code"):
            sys.exit(e.exit_code)
        if name == "Abort":
            err_console.print("interrupted")
            sys.exit(130)
        if _is_cli_framework_error(e):
            e.show()  # type: ignore[attr-defined]
            sys.exit(2)
        # a bug: never blame the user for it
        if STATE.debug:
            raise
        err_console.print(
            f"[bold red]internal error:[/] {type(e).__name__}: {e}. This is a bug in medsam3-rt; "
            "rerun with --debug for the traceback and report it.",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    run()
