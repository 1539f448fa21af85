"""Plumbing shared by qwenocr's guarded child processes (the PDF renderer in
`pages.renderguard`, the engine worker in `engines.isolated`): ending a child for sure,
and, on the child's side, leaving when the parent is gone."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from typing import Optional


def end_child(proc: subprocess.Popen) -> Optional[int]:
    """Kill `proc` if it still runs, reap it, close its pipes; its exit status (negative:
    the signal that ended it), or None if it could not be reaped."""
    if proc.poll() is None:
        try:
            proc.kill()
        except OSError:
            pass
    try:
        status: Optional[int] = proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - a kill that did not take
        status = None
    close_pipes(proc)
    return status


def close_pipes(proc: subprocess.Popen) -> None:
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass


def exit_with_parent(parent: int) -> None:
    """In a child: exit at once when `parent` is gone (it was SIGKILLed, and nobody waits
    for the child's answers), checked twice a second by a daemon thread."""

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="qwenocr-watch-parent", daemon=True).start()
