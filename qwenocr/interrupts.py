"""Ctrl-C, SIGTERM and SIGHUP that are never lost inside a native library's callback.

A Python exception raised inside a ctypes callback cannot travel through the C code
that called it: ctypes prints "Exception ignored" and the C code carries on. llama.cpp
calls a Python log callback many times per page (qwenocr installs one to keep the
library quiet), so a Ctrl-C that happened to land inside it was swallowed and the run
went on to the end. The handlers installed here look at where the signal landed: inside
a registered callback, they deliver the signal again a moment later
(`_thread.interrupt_main` from a timer thread: calling it from the handler itself would
run the handler again at once, recursively), by which time the callback has returned,
and it is raised at the first Python code that runs after it.
"""

from __future__ import annotations

import _thread
import signal
import threading
from types import CodeType, FrameType
from typing import Callable, Optional, Set, TypeVar

from qwenocr.errors import HungUp, Terminated

_callback_code: Set[CodeType] = set()

F = TypeVar("F", bound=Callable)


def register_callback(function: F) -> F:
    """Mark a function that C code calls (a ctypes callback): no signal is raised in it."""
    _callback_code.add(function.__code__)
    return function


def _inside_callback(frame: Optional[FrameType]) -> bool:
    while frame is not None:
        if frame.f_code in _callback_code:
            return True
        frame = frame.f_back
    return False


# A log callback takes microseconds; the signal comes again after this long.
REDELIVERY_DELAY = 0.02


def _redeliver(signum: int) -> None:
    timer = threading.Timer(REDELIVERY_DELAY, _thread.interrupt_main, (signum,))
    timer.daemon = True
    timer.start()


def _interrupt(signum: int, frame: Optional[FrameType]) -> None:
    if _inside_callback(frame):
        _redeliver(signum)
        return
    raise KeyboardInterrupt


def _terminate(signum: int, frame: Optional[FrameType]) -> None:
    if _inside_callback(frame):
        _redeliver(signum)
        return
    raise HungUp() if signum == getattr(signal, "SIGHUP", None) else Terminated()


def install() -> None:
    """SIGINT raises KeyboardInterrupt, SIGTERM Terminated and SIGHUP HungUp, outside callbacks.

    SIGHUP (a closed terminal or SSH session) killed the run outright by default, leaving
    the temporary output file behind; as a Terminated it unwinds like SIGTERM. Windows has
    no SIGHUP. Call from the main thread.
    """
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _terminate)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, _terminate)
