"""Keep stdout for the document alone, even when a native library prints.

llama.cpp and other native code write to file descriptor 1 directly, below Python's
`sys.stdout`. To keep `qwenocr scan a.pdf > a.md` clean, `protected_stdout()` moves the
real stdout to a private descriptor that only our writers use, and points descriptor 1
(and `sys.stdout`) at stderr for the duration of the run.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from typing import Iterator, TextIO

# Whether qwenocr started with file descriptor 1 closed (`qwenocr scan a.pdf >&-`).
_stdout_was_closed = False


def reserve_standard_streams() -> None:
    """Open /dev/null on any of descriptors 0, 1, 2 that the caller closed; call first thing.

    With 1 closed, the next file qwenocr opened (a checkpoint, a model) would get descriptor
    1 and the document would be written into it; and Python leaves `sys.stdout` None,
    which the first `print` or `flush` trips over (it was an AttributeError, exit 1). With
    the descriptors reserved, `stdout_was_closed()` tells a command that its product has
    nowhere to go (scan fails with OUTPUT_ERROR, before any work), and anything else
    written there is discarded.
    """
    global _stdout_was_closed
    for fd, mode, name in ((0, os.O_RDONLY, "stdin"), (1, os.O_WRONLY, "stdout"), (2, os.O_WRONLY, "stderr")):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        null = os.open(os.devnull, mode)
        if null != fd:  # open takes the lowest free descriptor: it is `fd` when the ones below are open
            os.dup2(null, fd)
            os.close(null)
        if fd == 1:
            _stdout_was_closed = True
        if getattr(sys, name) is None:
            text_mode = "r" if fd == 0 else "w"
            setattr(sys, name, os.fdopen(fd, text_mode, encoding="utf-8", errors="replace", closefd=False))


def stdout_was_closed() -> bool:
    """Whether descriptor 1 was closed when qwenocr started (see `reserve_standard_streams`)."""
    return _stdout_was_closed


def discard_stdout() -> None:
    """Point descriptor 1 at /dev/null: its reader went away, and nothing more may reach it.

    Python flushes `sys.stdout` at exit; with the pipe's reader gone that flush fails
    again and prints "Exception ignored ... BrokenPipeError" on stderr (the fix the
    Python docs give in the `signal` module's note on SIGPIPE).
    """
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
    finally:
        os.close(null)


@contextlib.contextmanager
def protected_stdout() -> Iterator[TextIO]:
    """Yield a text stream to the real stdout; anything else written to fd 1 goes to stderr."""
    if sys.stdout is not None:
        try:
            sys.stdout.flush()
        except (BrokenPipeError, OSError):
            pass
    try:
        private_fd = os.dup(1)
    except OSError:  # no stdout at all (closed): write the document nowhere, keep going
        yield io.StringIO()
        return
    saved_sys_stdout = sys.stdout
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    stream = os.fdopen(private_fd, "w", encoding="utf-8", newline="\n", closefd=False)
    try:
        yield stream
    finally:
        try:
            stream.flush()
        except (BrokenPipeError, OSError):
            # The reader went away: send what is still buffered to /dev/null, or the
            # stream would try again when it is collected and print an "Exception ignored".
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, private_fd)
            os.close(null)
            try:
                stream.flush()
            except OSError:
                pass
        sys.stdout = saved_sys_stdout
        os.dup2(private_fd, 1)
        os.close(private_fd)
