"""The queue between a batch engine's callers and its scheduler thread.

Both batch engines (`llamacpp_batch`, `mlx_batch`) let up to `batch` threads call
`generate()` at once while one scheduler thread does all native work. A `PageQueue`
holds what both sides share: the pages waiting, the engine's closing or broken state, and
the condition that wakes either side.

The callers' side, `submit_and_wait`: put a `PageRequest` on the queue and read the events
the scheduler sends back: ("piece", text, tokens so far) any number of times, then ("end",
finish_reason, tokens) or ("error", message). A caller that stops (its `on_piece` returned
False) or leaves (an exception) marks its request cancelled and wakes the scheduler, which
frees the page's sequence or row before its next step.

The scheduler's side: `next_pages` (wait for work, take what fits), `is_empty`, and
`fail_all` when it ends (every page in progress or waiting gets the reason as its error).
"""

from __future__ import annotations

import collections
import queue
import threading
from dataclasses import dataclass, field
from typing import Deque, Generic, Iterable, List, Optional, Tuple, TypeVar

from qwenocr.engines.base import PieceCallback
from qwenocr.errors import BackendError


@dataclass(kw_only=True)
class PageRequest:
    """What every engine's page request carries; each engine adds what its pages need."""

    # ("piece", text, tokens so far) ... then ("end", finish_reason, tokens) or ("error", message)
    events: "queue.SimpleQueue[tuple]" = field(default_factory=queue.SimpleQueue)
    cancelled: bool = False  # set by the caller (on_piece said stop, or it gave up)
    prompt_tokens: Optional[int] = None


Request = TypeVar("Request", bound=PageRequest)


class PageQueue(Generic[Request]):
    """Pages waiting for one batch engine's scheduler, and whether it still takes any."""

    def __init__(self, engine: str):
        self.engine = engine  # names the engine in errors ("llama.cpp", "MLX")
        self.cond = threading.Condition()
        self._waiting: Deque[Request] = collections.deque()
        self._closing = False
        self.broken: Optional[str] = None  # set by the scheduler when it fails: "broken (...)"

    def _refused(self) -> Optional[str]:
        """Why no page is taken any more (called under the condition), or None."""
        return (self.broken or "closed") if self._closing or self.broken else None

    def close(self) -> None:
        """Take no more pages and tell the scheduler to stop."""
        with self.cond:
            self._closing = True
            self.cond.notify_all()

    def submit_and_wait(self, request: Request, on_piece: Optional[PieceCallback]) -> Tuple[str, int, str]:
        """Queue `request` and wait for its page: (text, tokens, finish reason)."""
        with self.cond:
            reason = self._refused()
            if reason:
                raise BackendError(f"the {self.engine} engine is {reason}")
            self._waiting.append(request)
            self.cond.notify()
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
                with self.cond:
                    self.cond.notify()
        return "".join(pieces), tokens, finish

    # The scheduler's side.

    def next_pages(self, busy: bool, room: int) -> Optional[List[Request]]:
        """Wait until a page waits (or at once when `busy`: pages are decoding), then take
        up to `room` of those not cancelled; None once the engine is closing."""
        with self.cond:
            while not self._closing and not self._waiting and not busy:
                self.cond.wait()
            if self._closing:
                return None
            taken: List[Request] = []
            while self._waiting and len(taken) < room:
                request = self._waiting.popleft()
                if not request.cancelled:
                    taken.append(request)
            return taken

    def is_empty(self) -> bool:
        with self.cond:
            return not self._waiting

    def fail_all(self, in_progress: Iterable[Request]) -> None:
        """The scheduler's end: take no more pages, and fail those `in_progress` and those
        still waiting with why."""
        reason = f"the {self.engine} engine is {self.broken or 'closed'}"
        with self.cond:
            self._closing = self._closing or self.broken is not None
            waiting = list(self._waiting)
            self._waiting.clear()
        for request in list(in_progress) + waiting:
            request.events.put(("error", reason))
