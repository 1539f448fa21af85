"""The caller's side of a batch engine: queue a page, stream its events, give up cleanly.

Both batch engines (`llamacpp_batch`, `mlx_batch`) let up to `batch` threads call
`generate()` at once while one scheduler thread does all native work. Each call puts its
request on the engine's waiting queue and reads the events the scheduler sends back:
("piece", text, tokens so far) any number of times, then ("end", finish_reason, tokens)
or ("error", message). A caller that stops (its `on_piece` returned False) or leaves (an
exception) marks its request cancelled and wakes the scheduler, which frees the page's
sequence or row before its next step.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Deque, List, Optional, Tuple

from qwenocr.engines.base import PieceCallback
from qwenocr.errors import BackendError


def submit_and_wait(
    cond: threading.Condition,
    waiting: Deque[Any],
    refused: Callable[[], Optional[str]],
    engine: str,
    request: Any,
    on_piece: Optional[PieceCallback],
) -> Tuple[str, int, str]:
    """Queue `request` and wait for its page: (text, tokens, finish reason).

    `refused()` (called under `cond`) says why no page is taken any more ("closed",
    "broken (...)"), or None; `engine` names the engine in that error."""
    with cond:
        reason = refused()
        if reason:
            raise BackendError(f"the {engine} engine is {reason}")
        waiting.append(request)
        cond.notify()
    pieces: List[str] = []
    tokens = 0
    finish: Optional[str] = None
    try:
        while finish is None:
            event = request.events.get()
            if event[0] == "piece":
                _, piece, tokens = event
                pieces.append(piece)
                if on_piece is not None and on_piece(piece) is False:
                    finish = "aborted"
            elif event[0] == "end":
                _, finish, tokens = event
            else:
                raise BackendError(event[1])
    finally:
        if finish is None or finish == "aborted":
            request.cancelled = True  # the scheduler frees its place before its next step
            with cond:
                cond.notify()
    return "".join(pieces), tokens, finish
