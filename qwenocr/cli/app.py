"""The Typer app: the root group, its callback, the one error-to-exit-code path, and main().

Every error a command raises comes back through the root group's `invoke`: a
`QwenOCRError` becomes one line on stderr and its exit code (docs/exit-codes.md), with
the traceback before it under --debug; Ctrl-C, SIGTERM and SIGHUP say that finished
pages are kept; a stdout whose reader went away ends the run quietly (`reader_gone`);
anything else is an internal error. Typer's own errors (usage, --help, EOF) stay
Typer's, and `main()` turns what Typer hands back into an exit code.

The commands live one per module (doctor, scan, eval, models), each with a
`register(app)` called below. Their bodies import what they need when they run, so
`qwenocr --help` stays instant.
"""

from __future__ import annotations

import sys
import traceback
from typing import Annotated, Any, NoReturn

import typer
from typer._click.core import Context
from typer._click.exceptions import ClickException, NoArgsIsHelpError  # Typer 0.28 carries its own Click
from typer.core import TyperGroup

from qwenocr import __version__, stdio
from qwenocr.cli import doctor, models, scan
from qwenocr.cli import eval as evaluate
from qwenocr.cli.options import debug_requested, presume_debug
from qwenocr.errors import ExitCode, HungUp, QwenOCRError, Terminated

INTERRUPTED = "interrupted; finished pages are kept: run the same command again to resume"
TERMINATED = "terminated; finished pages are kept: run the same command again to resume"

# Left to Typer, as any Typer program handles them: its usage errors and exits, and EOF
# on stdin (an Abort, "interrupted"). A closed stdout pipe is `reader_gone`.
_TYPERS_OWN = (ClickException, typer.Exit, typer.Abort, EOFError)


class QwenOCRGroup(TyperGroup):
    """The root group: runs the command and maps whatever it raises to a line and an exit code."""

    def invoke(self, ctx: Context) -> Any:
        presume_debug(ctx, ctx.args)  # ctx.args: what follows the command's name, not parsed yet
        try:
            return super().invoke(ctx)
        except QwenOCRError as error:
            fail(error.one_line(), error.exit_code, with_traceback=debug_requested(ctx))
        except KeyboardInterrupt:
            fail(INTERRUPTED, ExitCode.INTERRUPTED)
        except HungUp:
            fail(TERMINATED, ExitCode.HANGUP)
        except Terminated:
            fail(TERMINATED, ExitCode.TERMINATED)
        except BrokenPipeError:
            reader_gone()
        except _TYPERS_OWN:
            raise
        except Exception as error:  # a bug
            if debug_requested(ctx):
                raise
            fail(
                f"internal error: {type(error).__name__}: {error}"
                " (run again with --debug for a traceback, and please report it)",
                ExitCode.INTERNAL_ERROR,
            )


def fail(line: str, code: int, *, with_traceback: bool = False) -> NoReturn:
    """`qwenocr: error: LINE` on stderr, then exit with `code`.

    `with_traceback`: first the traceback of the exception being handled (call it in its `except`).
    """
    try:
        if with_traceback:
            traceback.print_exc()
        sys.stderr.write(f"qwenocr: error: {line}\n")
        sys.stderr.flush()
    except OSError:  # stderr gone too (a hung-up terminal, a closed pipe): the code still tells
        pass
    sys.exit(int(code))


def reader_gone() -> NoReturn:
    """The reader of stdout went away (`| head -c 10`): stop quietly with exit 0.

    Whether a write meets the closed pipe depends on timing (a small document may be all
    in the pipe before `head` exits), so any code but 0 would come at random; 0 says
    what is true either way: the reader took what it wanted. Nothing goes to stderr
    (the reader may share it). Finished pages stay in the checkpoint, as on Ctrl-C.
    See docs/exit-codes.md.
    """
    stdio.discard_stdout()
    sys.exit(int(ExitCode.OK))


app = typer.Typer(
    name="qwenocr",
    cls=QwenOCRGroup,
    help="Turn PDFs and scans into Markdown or JSON with Qwen 3.5 vision models, locally.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"qwenocr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
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
    # QWENOCR_* variables and the config file become the invoked command's defaults
    # (flag > env > file > default); see qwenocr/cli/config.py and docs/configuration.md.
    from qwenocr.cli.config import apply_config

    apply_config(ctx)


# In this order in `qwenocr --help`.
doctor.register(app)
scan.register(app)
evaluate.register(app)
models.register(app)


def main() -> None:
    """Entry point (`qwenocr`, `python -m qwenocr`): run the app and exit with its code."""
    stdio.reserve_standard_streams()  # before anything opens a file: `>&-` must not lend fd 1 to it
    try:
        # Without standalone mode Typer hands back an Exit's code (and the code of a
        # Ctrl-C outside any command, 130) instead of exiting, and raises its errors.
        code = app(standalone_mode=False)
    except NoArgsIsHelpError:  # the help is shown already
        sys.exit(int(ExitCode.USAGE))
    except ClickException as error:
        error.show()
        sys.exit(int(ExitCode.USAGE))
    except typer.Abort:
        fail("interrupted", ExitCode.INTERRUPTED)
    except BrokenPipeError:  # writing help or an error message, outside any command
        reader_gone()
    if code == ExitCode.INTERRUPTED:
        fail(INTERRUPTED, ExitCode.INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)
