"""Run the qwenocr CLI as a user does: a subprocess, stdout and stderr kept apart."""

from __future__ import annotations

import os
import subprocess
import sys

QWENOCR = [sys.executable, "-m", "qwenocr"]


def run_cli(*args, env=None, stdin=None, timeout=120) -> subprocess.CompletedProcess:
    """`qwenocr ARGS...` with the environment plus `env`; bytes in, bytes out."""
    return subprocess.run(
        [*QWENOCR, *map(str, args)],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
