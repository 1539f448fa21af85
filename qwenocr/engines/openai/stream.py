"""One streamed chat completion read into a page's text.

Streaming means progress and the pipeline's guards (repetition, page timeout) work as
with local engines: each piece goes to `on_piece` as it arrives, and `on_piece`
returning False ends the read, which closes the connection: that is how servers learn
to stop generating. A leading think block is dropped on the way (`_ThinkFilter`).

Everything a server sends counts against the request's `Budget`, checked on every line,
not only on visible text: keep-alive comments, `reasoning_content` and a think block
that never ends are stopped by the deadline like text is. A line, an event and the
visible answer each have a size limit, so no server can make the reader hold more.
"""

from __future__ import annotations

import http.client
import json
import math
from dataclasses import dataclass
from typing import Any, List, Optional

from qwenocr.engines.base import Generation, PieceCallback
from qwenocr.engines.openai.adaptive import INTERRUPTED
from qwenocr.engines.openai.client import MIB, Budget, BudgetExpired, Retryable, error_detail, size_text

# One SSE line or event carries one token or a few: 8 MiB is a server gone wrong.
SSE_LINE_LIMIT = 8 * MIB
# A page's text; a model writing more than this is looping, and the guard would say so.
ANSWER_CHARS_LIMIT = 16 * MIB


@dataclass
class Progress:
    """What one `generate` call has passed to `on_piece`, across attempts."""

    delivered: int = 0  # characters of visible text already given to on_piece


def read_stream(
    response: http.client.HTTPResponse,
    on_piece: Optional[PieceCallback],
    progress: Progress,
    budget: Optional[Budget] = None,
) -> Generation:
    """The answer of a `text/event-stream` response (server-sent events).

    Out of time (`budget`), it raises BudgetExpired carrying what was read so far."""
    state = _StreamState(on_piece, progress)
    try:
        _read_events(response, state, budget)
        return _finish(state)
    except (BudgetExpired, OSError, http.client.HTTPException, Retryable):
        # Out of time, the watchdog's shutdown shows as a reset or a stream cut short.
        if budget is not None and budget.expired():
            raise BudgetExpired(state.result("aborted")) from None
        raise


def _read_events(response: http.client.HTTPResponse, state: "_StreamState", budget: Optional[Budget]) -> None:
    data: List[bytes] = []
    event_size = 0
    while True:
        if budget is not None:
            budget.check()
        line = response.readline(SSE_LINE_LIMIT + 1)
        if not line:
            break
        if len(line) > SSE_LINE_LIMIT:
            raise Retryable(f"a stream line passed the size limit of {size_text(SSE_LINE_LIMIT)}")
        line = line.rstrip(b"\r\n")
        if line:
            if line.startswith(b"data:"):
                data.append(line[6:] if line.startswith(b"data: ") else line[5:])
                event_size += len(line)
                if event_size > SSE_LINE_LIMIT:
                    raise Retryable(f"a stream event passed the size limit of {size_text(SSE_LINE_LIMIT)}")
            continue  # comments (":"), event:, id:, retry: carry nothing we need
        if data:
            if state.event(b"\n".join(data)):
                break
            data, event_size = [], 0
        if state.aborted:
            break
    if data and not state.aborted and not state.done:
        state.event(b"\n".join(data))


def _finish(state: "_StreamState") -> Generation:
    if state.aborted:
        return state.result("aborted")
    if state.finish_reason is None:
        # Every complete answer carries a finish_reason. A stream without one was cut:
        # by a dropped connection, or by the server itself (llama-cpp-python's server
        # ends a stream with a bare [DONE] when another request arrives, unless it
        # runs with --interrupt_requests False). Returning it would be a silently
        # truncated page.
        if state.done:
            raise Retryable(
                "the server ended the answer early ([DONE] without a finish_reason; llama-cpp-python's "
                "server does this with several pages in flight unless started with --interrupt_requests False)",
                kind=INTERRUPTED,
            )
        raise Retryable("the stream ended before the answer was complete")
    state.flush()
    return state.result(state.finish_reason)


def from_json(raw: bytes, on_piece: Optional[PieceCallback], progress: Progress) -> Generation:
    """The answer of a server that ignored stream=true and sent one JSON document."""
    try:
        payload = json.loads(raw)
        choice = payload["choices"][0]
        content = (choice.get("message") or {}).get("content") or ""
    except (ValueError, KeyError, IndexError, TypeError):
        raise Retryable("the server's answer was not a chat completion") from None
    state = _StreamState(on_piece, progress)
    state.piece(content, count=False)
    state.flush()
    usage = payload.get("usage") or {}
    if isinstance(usage, dict):
        state.completion_tokens = token_count(usage.get("completion_tokens"))
        state.prompt_tokens = token_count(usage.get("prompt_tokens"))
    state.deltas = max(state.deltas, 1 if content else 0)
    return state.result("aborted" if state.aborted else choice.get("finish_reason") or "stop")


def token_count(value: Any, default: Optional[int] = None) -> Optional[int]:
    """A server's token count as a whole number >= 0, else `default`.

    Python's json reads NaN and Infinity (and a server may send a string or a float):
    such a count must not crash the page (`int(inf)`) or reach the JSON output.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    if not math.isfinite(value) or value < 0:
        return default
    return int(value)


class _StreamState:
    """Accumulates one attempt's answer from stream events."""

    def __init__(self, on_piece: Optional[PieceCallback], progress: Progress):
        self.on_piece = on_piece
        self.progress = progress
        self.filter = _ThinkFilter()
        self.visible: List[str] = []
        self.visible_len = 0
        self.deltas = 0
        self.finish_reason: Optional[str] = None
        self.prompt_tokens: Optional[int] = None
        self.completion_tokens: Optional[int] = None
        self.done = False
        self.aborted = False

    def event(self, data: bytes) -> bool:
        """Handle one SSE event; True when the stream is over."""
        if data.strip() == b"[DONE]":
            self.flush()
            self.done = True
            return True
        try:
            payload = json.loads(data)
        except ValueError:
            lines = data.split(b"\n")
            if len(lines) > 1:
                # Events not separated by blank lines (seen in hand-rolled servers).
                return any(self.event(line) for line in lines if line.strip())
            raise Retryable("the server sent a malformed stream event") from None
        if not isinstance(payload, dict):
            return False
        if payload.get("error"):
            raise Retryable(f"the server reported an error mid-stream: {error_detail(json.dumps(payload).encode())}")
        for choice in payload.get("choices") or []:
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                self.piece(content)
                if self.aborted:
                    return True
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        usage = payload.get("usage")
        if usage and isinstance(usage, dict):
            self.prompt_tokens = token_count(usage.get("prompt_tokens"), self.prompt_tokens)
            self.completion_tokens = token_count(usage.get("completion_tokens"), self.completion_tokens)
        return False

    def piece(self, content: str, count: bool = True) -> None:
        if count:
            self.deltas += 1
        self._emit(self.filter.feed(content))

    def flush(self) -> None:
        self._emit(self.filter.flush())

    def _emit(self, text: str) -> None:
        if not text or self.aborted:
            return
        before = self.visible_len
        if before + len(text) > ANSWER_CHARS_LIMIT:
            raise Retryable(f"the answer passed the size limit of {size_text(ANSWER_CHARS_LIMIT)} characters")
        self.visible.append(text)
        self.visible_len += len(text)
        if self.on_piece is None or self.visible_len <= self.progress.delivered:
            return
        # After a retry the server replays the answer from the start: don't hand the
        # callback what it has already seen (the returned text is the new attempt's).
        fresh = text[max(0, self.progress.delivered - before) :]
        self.progress.delivered = self.visible_len
        if self.on_piece(fresh) is False:
            self.aborted = True

    def result(self, finish_reason: str) -> Generation:
        if finish_reason not in ("stop", "length", "aborted"):
            finish_reason = "stop"
        return Generation(
            text="".join(self.visible),
            output_tokens=int(self.completion_tokens if self.completion_tokens is not None else self.deltas),
            prompt_tokens=self.prompt_tokens,
            finish_reason=finish_reason,
        )


class _ThinkFilter:
    """Drops a leading <think>…</think> block from a streamed answer.

    Thinking is requested off, but a server that ignores `chat_template_kwargs` (or a
    model whose template lacks the switch) may still think aloud; the reasoning is not
    page text. Servers with a reasoning parser send it as `reasoning_content`, which is
    never read here.
    """

    OPEN, CLOSE = "<think>", "</think>"
    MAX_LEADING = 32  # whitespace held back while waiting to see whether <think> comes

    def __init__(self) -> None:
        self.state = "start"
        self.buffer = ""

    def feed(self, piece: str) -> str:
        if self.state == "pass":
            return piece
        self.buffer += piece
        if self.state == "start":
            head = self.buffer.lstrip()
            undecided = not head or (len(head) < len(self.OPEN) and self.OPEN.startswith(head))
            if undecided and len(self.buffer) <= self.MAX_LEADING:
                return ""  # can't tell yet
            if undecided:
                head = ""  # a run of blank output: pass it on, the loop guard must see it
            if not head.startswith(self.OPEN):
                self.state, out, self.buffer = "pass", self.buffer, ""
                return out
            self.state, self.buffer = "thinking", head[len(self.OPEN) :]
        if self.state == "thinking":
            end = self.buffer.find(self.CLOSE)
            if end < 0:
                self.buffer = self.buffer[-len(self.CLOSE) :]  # keep a tag split across pieces
                return ""
            self.state, self.buffer = "after", self.buffer[end + len(self.CLOSE) :]
        # "after": drop the blank lines between the think block and the answer.
        head = self.buffer.lstrip()
        if not head:
            self.buffer = ""
            return ""
        self.state, self.buffer = "pass", ""
        return head

    def flush(self) -> str:
        out = self.buffer if self.state == "start" else ""
        self.buffer = ""
        return out
