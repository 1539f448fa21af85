"""What every command shares: the --quiet/--verbose/--debug convention.

`verbosity_options(quiet=..., verbose=...)` gives a command the three flags (each
command words what quiet and verbose mean for it) and, before the command's body runs,
turns them into one level by the config layer's rule, `config.verbosity`: both
--quiet and --verbose as flags is a usage error (exit 2); one from QWENOCR_* or the
config file and the other as a flag: the flag wins; --debug is the most verbose and
also shows tracebacks. Being ordinary options, the three come from QWENOCR_QUIET,
QWENOCR_VERBOSE, QWENOCR_DEBUG and the config file like every other option.

The level and the debug switch live in the Click context's `meta` (one dict shared by
the root and the command's context), where the body reads the level with
`verbosity_level(ctx)` and the error path in app.py reads `debug_requested(ctx)`.
"""

from __future__ import annotations

import enum
import functools
import inspect
import math
import os
from typing import Annotated, Any, Callable, Optional, Sequence, TypeVar, cast

import typer
from typer._click.core import Context, Parameter  # Typer 0.28 carries its own Click
from typer._click.types import FloatParamType, FloatRange

# Upper bounds of the numeric options: an option without one let `--max-tokens 2000000000`
# or `--n-ctx 99999999999` reach the engine, which then tried to allocate a KV cache for
# it and was OOM-killed. Literals here, because the CLI imports no room below it when it
# starts (`qwenocr --help`); tests/test_option_bounds.py checks they agree with the rooms.
# Qwen 3.5's native context (max_position_embeddings, the GGUFs' context_length): no page
# can use more, so neither the output budget nor llama.cpp's context may exceed it.
MAX_CONTEXT_TOKENS = 262_144
# The most visual tokens Qwen 3.5's image processor makes of one image (16,384 patches of
# 32 x 32 px); the engines cap it lower still (llama.cpp: 4,096).
MAX_IMAGE_TOKENS = 16_384
# A timeout longer than a week is no timeout, and Python's waits reject huge ones
# (OverflowError past threading.TIMEOUT_MAX).
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600
# Pages decoding at once in a local engine: each holds its own KV cache and recurrent
# state, and past a few dozen the weights are no longer what decode waits on.
MAX_BATCH = 64
# Seeds are unsigned 32-bit in llama.cpp (and what OpenAI-compatible servers accept).
MAX_SEED = 2**32 - 1

# The levels `verbosity_level` returns, as config.verbosity counts them.
QUIET, NORMAL, VERBOSE, DEBUG = -1, 0, 1, 2

DEBUG_HELP = "Show tracebacks for errors."

_LEVEL_KEY = "qwenocr.cli.verbosity"
_DEBUG_KEY = "qwenocr.cli.debug"

Command = TypeVar("Command", bound=Callable[..., Any])


def verbosity_options(*, quiet: str, verbose: str) -> Callable[[Command], Command]:
    """Add --quiet/-q, --verbose/-v and --debug to a command, after its own options.

    `quiet` and `verbose` are the help texts. The command must take `ctx: typer.Context`.
    """
    flags = [
        inspect.Parameter(
            "quiet",
            inspect.Parameter.KEYWORD_ONLY,
            default=False,
            annotation=Annotated[bool, typer.Option("--quiet", "-q", help=quiet)],
        ),
        inspect.Parameter(
            "verbose",
            inspect.Parameter.KEYWORD_ONLY,
            default=False,
            annotation=Annotated[bool, typer.Option("--verbose", "-v", help=verbose)],
        ),
        inspect.Parameter(
            "debug",
            inspect.Parameter.KEYWORD_ONLY,
            default=False,
            annotation=Annotated[bool, typer.Option("--debug", help=DEBUG_HELP)],
        ),
    ]

    def decorate(command: Command) -> Command:
        signature = inspect.signature(command, eval_str=True)
        if "ctx" not in signature.parameters:
            raise TypeError(f"{command.__name__} needs a `ctx: typer.Context` parameter for verbosity_options")

        @functools.wraps(command)
        def run(*args: Any, quiet: bool = False, verbose: bool = False, debug: bool = False, **kwargs: Any) -> Any:
            from qwenocr.cli.config import verbosity  # when a command runs: `qwenocr --help` needs no config

            ctx = kwargs["ctx"]
            ctx.meta[_DEBUG_KEY] = debug  # first: a contradiction below is an error like any other
            ctx.meta[_LEVEL_KEY] = verbosity(quiet, verbose, debug, ctx)
            return command(*args, **kwargs)

        # Typer builds the command's options from the signature: the command's own, then the three.
        run.__signature__ = signature.replace(  # type: ignore[attr-defined]  # read by inspect.signature
            parameters=[*signature.parameters.values(), *flags]
        )
        return cast(Command, run)

    return decorate


class _FiniteFloat(FloatParamType):
    """A float that must be finite: Python's float() reads "nan" and "inf" without a word.

    A range check can't catch NaN (every comparison with it is false), so `--temperature
    nan` went through Click and failed deep inside the run as an internal error.
    """

    def convert(self, value: Any, param: Optional[Parameter], ctx: Optional[Context]) -> Any:
        number = FloatParamType.convert(self, value, param, ctx)  # first: a range check says "inf > max"
        if isinstance(number, float) and not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


class _FiniteFloatRange(_FiniteFloat, FloatRange):
    """`_FiniteFloat` within bounds: finite first, then Click's own range check."""


def finite_float(min: Optional[float] = None, max: Optional[float] = None) -> FloatParamType:
    """The Click type for a float option: finite, within `min`..`max` when given.

    Pass it as `typer.Option(..., click_type=finite_float(...))`; Typer then ignores its
    own min/max, so the bounds go here. It applies to values from the command line,
    QWENOCR_* variables and the config file alike (config.py converts with the type).
    """
    if min is None and max is None:
        return _FiniteFloat()
    return _FiniteFloatRange(min=min, max=max)


def verbosity_level(ctx: Context) -> int:
    """QUIET, NORMAL, VERBOSE or DEBUG, as the running command's flags, env and config file say."""
    return int(ctx.meta[_LEVEL_KEY])


def debug_requested(ctx: Context) -> bool:
    """Whether errors should show their traceback (--debug, QWENOCR_DEBUG or the config file)."""
    return bool(ctx.meta.get(_DEBUG_KEY, False))


def presume_debug(ctx: Context, args: Sequence[str]) -> None:
    """Guess --debug from the raw arguments and the environment, until the command reads its own.

    An error can come before the command has parsed its options (a bad config file,
    found while the root group gives the command its defaults); a --debug among its
    arguments, or QWENOCR_DEBUG, still asks for the traceback then.
    """
    from qwenocr.cli.commandtree import parse_bool
    from qwenocr.cli.config import ENV_PREFIX

    from_env = parse_bool(os.environ.get(ENV_PREFIX + "DEBUG", "")) is True
    ctx.meta.setdefault(_DEBUG_KEY, "--debug" in args or from_env)


class Prefer(str, enum.Enum):
    """`--prefer`: where a dense and an MoE model both fit, which the plan takes."""

    accuracy = "accuracy"
    speed = "speed"
