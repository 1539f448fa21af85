"""The command line: the only module that imports Typer.

It parses arguments, calls the core (`scan`, `doctor`, `evaluate`, `models`), and maps
`QwenOCRError` to one line on stderr and a documented exit code (docs/exit-codes.md).
Heavy modules are imported inside the commands so that `qwenocr --help` stays instant.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from qwenocr import __version__
from qwenocr.errors import ExitCode, QwenOCRError

app = typer.Typer(
    name="qwenocr",
    help="Turn PDFs and scans into Markdown or JSON with Qwen 3.5 vision models, locally.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)

# Set by the main callback; read by the error handler in main().
_state = {"debug": False}


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"qwenocr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    """Turn PDFs and scans into Markdown or JSON with Qwen 3.5 vision models, on your own machine.

    [bold]Examples[/bold]

      qwenocr doctor                     what can this machine run?
      qwenocr scan report.pdf > report.md
      qwenocr scan scan.png --format json -o scan.json
    """


# --- doctor --------------------------------------------------------------------------
# (section owned by the hardware-fit work: qwenocr/doctor.py)


# --- scan ----------------------------------------------------------------------------
# (section owned by the scan work: qwenocr/scan.py)


# --- eval ----------------------------------------------------------------------------
# (section owned by the eval work: qwenocr/evaluate.py)


# --- models --------------------------------------------------------------------------
# (section owned by the model-management work: qwenocr/models.py)


def main() -> None:
    """Entry point: run the app and turn user-facing errors into one line + exit code."""
    debug = "--debug" in sys.argv
    _state["debug"] = debug
    try:
        app(standalone_mode=False)
    except QwenOCRError as error:
        if debug:
            import traceback

            traceback.print_exc()
        _print_error(error.one_line())
        sys.exit(int(error.exit_code))
    except KeyboardInterrupt:
        _print_error("interrupted")
        sys.exit(int(ExitCode.INTERRUPTED))
    except SystemExit:
        raise
    except Exception as error:  # click usage errors and real bugs
        import click

        if isinstance(error, click.exceptions.Abort):
            _print_error("interrupted")
            sys.exit(int(ExitCode.INTERRUPTED))
        if isinstance(error, click.ClickException):
            error.show()
            sys.exit(int(ExitCode.USAGE))
        if isinstance(error, click.exceptions.Exit):
            sys.exit(error.exit_code)
        if debug:
            raise
        _print_error(f"internal error: {type(error).__name__}: {error} (run again with --debug for a traceback, and please report it)")
        sys.exit(int(ExitCode.INTERNAL_ERROR))
    sys.exit(0)


def _print_error(line: str) -> None:
    sys.stderr.write(f"qwenocr: error: {line}\n")
    sys.stderr.flush()
