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


# `qwenocr` with its own peak resident size (VmHWM, KiB) written to a file at exit. Not a
# child's ru_maxrss: Linux carries ru_maxrss across execve, so a child of a large pytest
# process would report pytest's size; VmHWM belongs to the new program alone.
_PEAK = r"""
import atexit, runpy, sys

def peak_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return line.split()[1]

out = sys.argv[1]
atexit.register(lambda: open(out, "w").write(peak_kib()))
sys.argv = ["qwenocr", *sys.argv[2:]]
runpy.run_module("qwenocr", run_name="__main__")
"""


def run_cli_with_peak(*args, peak_file, env=None, timeout=120) -> tuple:
    """`run_cli`, and the peak memory (KiB) of the qwenocr process itself, not of its
    children (Linux: it reads /proc/self/status). Raises subprocess.TimeoutExpired."""
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK, str(peak_file), *map(str, args)],
        capture_output=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    return proc, int(open(peak_file).read())
