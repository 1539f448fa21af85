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


@contextlib.contextmanager
def protected_stdout() -> Iterator[TextIO]:
    """Yield a text stream to the real stdout; anything else written to fd 1 goes to stderr."""
    sys.stdout.flush()
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
            pass
        sys.stdout = saved_sys_stdout
        os.dup2(private_fd, 1)
        os.close(private_fd)
