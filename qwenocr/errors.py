"""Exit codes and the user-facing exceptions that carry them.

Every error a user can cause is a `QwenOCRError` with a one-line message that says what
happened and what to do. The CLI turns it into that line on stderr and the exit code;
a traceback only appears with `--debug`. The codes are documented in docs/exit-codes.md
(a test keeps the two in agreement).
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    INTERNAL_ERROR = 1  # a bug in qwenocr: please report it, with --debug output
    USAGE = 2  # bad command-line arguments (also what Click uses)
    INPUT_ERROR = 3  # an input is missing, unreadable, not a PDF/image, or corrupt
    OUTPUT_ERROR = 4  # an output can't be written
    NOTHING_FITS = 5  # no model variant fits this machine's memory
    ENGINE_MISSING = 6  # the inference engine the plan needs is not installed
    MODEL_UNAVAILABLE = 7  # model files missing (offline) or the download failed
    ENCRYPTED = 8  # the PDF needs a password, or the password is wrong
    INSUFFICIENT_MEMORY = 9  # not enough free memory right now to load the model
    PARTIAL = 10  # some inputs or pages failed; the others completed
    BACKEND_ERROR = 11  # the engine or the inference server failed
    ENGINE_CRASHED = 12  # the local engine crashed on several pages in a row; the run stopped
    HANGUP = 129  # SIGHUP (the terminal went away); as for SIGTERM
    INTERRUPTED = 130  # Ctrl-C (SIGINT); finished pages are kept for a resume
    TERMINATED = 143  # SIGTERM; as for SIGINT


class QwenOCRError(Exception):
    """An error the user can act on: a message, a hint, and an exit code."""

    exit_code: ExitCode = ExitCode.INTERNAL_ERROR
    # True when the error ends the whole run even where it happened on one page (a page
    # error otherwise costs only that page).
    ends_run: bool = False

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(QwenOCRError):
    exit_code = ExitCode.USAGE


class InputError(QwenOCRError):
    exit_code = ExitCode.INPUT_ERROR


class OutputError(QwenOCRError):
    exit_code = ExitCode.OUTPUT_ERROR


class NothingFitsError(QwenOCRError):
    exit_code = ExitCode.NOTHING_FITS


class EngineMissingError(QwenOCRError):
    exit_code = ExitCode.ENGINE_MISSING


class ModelUnavailableError(QwenOCRError):
    exit_code = ExitCode.MODEL_UNAVAILABLE


class EncryptedError(QwenOCRError):
    exit_code = ExitCode.ENCRYPTED


class InsufficientMemoryError(QwenOCRError):
    exit_code = ExitCode.INSUFFICIENT_MEMORY


class BackendError(QwenOCRError):
    exit_code = ExitCode.BACKEND_ERROR


class EngineCrashedError(BackendError):
    """The local engine's process died on a page (a native crash); the page is retried
    once in a fresh engine, then marked `error`."""


class EngineCrashLoopError(BackendError):
    """The local engine crashed again and again with no page finished between: the run stops."""

    exit_code = ExitCode.ENGINE_CRASHED
    ends_run = True


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so a run unwinds like on Ctrl-C."""


class HungUp(Terminated):
    """Raised in the main thread on SIGHUP (the terminal closed): a run unwinds as on SIGTERM."""
