"""`medsam3-rt`: export, segment, info, prompts (and the commands other extras add).

`run()` turns every `Medsam3Error` into one line on stderr and its documented exit code;
anything else is a bug and says so (with the traceback under --debug).
"""

from __future__ import annotations

import logging
import sys

import typer
from rich.markup import escape

from .._version import __version__
from ..errors import Medsam3Error
from . import bench, build, demo, info, pacs, prompts, segment, train
from ._console import STATE, err_console, say

app = typer.Typer(
    name="medsam3-rt",
    help="Text-prompted medical image segmentation with SAM3-architecture models. Research use only: not a medical device.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
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
app.command("train")(train.train_command)
app.command("eval", no_args_is_help=True)(train.eval_command)
app.command("build", no_args_is_help=True)(build.build)
app.command("demo")(demo.demo)
app.command("bench", no_args_is_help=True)(bench.bench)
app.command("pacs", no_args_is_help=True)(pacs.pacs)
app.add_typer(prompts.app, name="prompts")


@app.command("export", no_args_is_help=True)
def export(
    checkpoint: str = typer.Argument(..., help="Hugging Face SAM3 directory (config.json + *.safetensors) or a sam3.pt file."),
    output: str = typer.Option(..., "--output", "-o", help="Export directory to create."),
    config: str | None = typer.Option(None, "--config", help="Geometry of a sam3.pt: a preset (tiny, small, full) or a config.json."),
    opset: int = typer.Option(18, "--opset", min=18, help="ONNX opset (>= 18 for antialiased Resize)."),
    force: bool = typer.Option(False, "--force", help="Replace OUTPUT if it exists."),
    random: bool = typer.Option(False, "--random", help="CHECKPOINT names a preset; export random weights (tests, benchmarks)."),
) -> None:
    """Export a checkpoint to ONNX graphs + manifest, and check parity with PyTorch."""
    from ._plugins import export_module

    exp = export_module()
    with err_console.status("exporting") as status:

        def progress(msg: str) -> None:
            status.update(msg)
            say(msg)

        source = exp.random_checkpoint(checkpoint) if random else checkpoint
        exp.export_model(source, output, config=config, options=exp.ExportOptions(opset=opset, overwrite=force), progress=progress)


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
