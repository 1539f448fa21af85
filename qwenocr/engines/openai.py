"""A backend for any OpenAI-compatible chat-completions server.

vLLM, SGLang, llama.cpp's server (and llama-cpp-python's), Ollama and LM Studio all
speak this protocol, which is how a cluster (tensor-parallel replicas behind a load
balancer) or a workstation serves Qwen 3.5 to qwenocr. Each page goes out as one
streamed chat completion with the page image as a `data:` URI and thinking switched
off through `chat_template_kwargs`.

Why it is built this way:
- Standard library HTTP only (`http.client`), so `--backend openai` works on every
  install, with no client SDK to version-match. One connection per request: a page
  takes seconds, so connection set-up is noise, and nothing is shared between threads.
- Thread-safe: the pipeline calls `generate` from `concurrency` threads at once. The
  only shared state (server health, the resolved model, open connections) sits behind
  locks.
- Failures a server recovers from (429, 5xx, 408, timeouts, resets, a stream cut
  short) are retried with exponential backoff and jitter, honouring `Retry-After`;
  with several servers the retry goes to another one and a failing server sits out a
  cool-down. Client errors (other 4xx) fail at once: retrying can't fix them.
- The API key travels only in the `Authorization` header. Every message that can reach
  a log or an exception passes through `_redact`.
- Streaming means progress and the pipeline's guards (repetition, page timeout) work
  as with local engines: `on_piece` returning False closes the connection, which is
  how servers learn to stop generating.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import io
import json
import logging
import os
import random
import socket
import ssl
import struct
import threading
import time
import urllib.parse
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from qwenocr.engines.base import Generation, GenerationSettings, PieceCallback
from qwenocr.errors import BackendError, UsageError

log = logging.getLogger(__name__)

API_KEY_ENV_VARS = ("QWENOCR_API_KEY", "OPENAI_API_KEY")

# 408 and 429 are the only 4xx a retry can fix; every 5xx might be transient (a
# restarting replica, an overloaded load balancer).
RETRY_4XX = {408, 429}
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0
# A server asking for a longer pause than this is effectively down; don't hang a run.
RETRY_AFTER_MAX_S = 120.0
COOLDOWN_S = 15.0
COOLDOWN_MAX_S = 120.0
MODELS_TIMEOUT_S = 30.0
ERROR_BODY_LIMIT = 4096
# zlib level for page PNGs: 1 is twice as fast as 6 and the bytes don't matter on a
# LAN (23 KB against 13 KB for an A4 page at 150 DPI).
PNG_ZLIB_LEVEL = 1


def api_key_from_env(environ: Mapping[str, str] = os.environ) -> Optional[str]:
    """The API key from QWENOCR_API_KEY, else OPENAI_API_KEY; None when neither is set.

    Never from a command-line flag: flags show in the process list and shell history.
    """
    for name in API_KEY_ENV_VARS:
        value = environ.get(name, "").strip()
        if value:
            return value
    return None


# --- servers -------------------------------------------------------------------------


class _Server:
    """One base URL and its health."""

    def __init__(self, base_url: str):
        parts = urllib.parse.urlsplit(base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(
                f"not an http(s) URL: {base_url!r}",
                hint="pass the server's base URL, e.g. --base-url http://localhost:8000/v1",
            )
        if parts.username or parts.password:
            raise UsageError(
                "the base URL contains credentials",
                hint="put the key in QWENOCR_API_KEY instead; URLs show up in logs and process lists",
            )
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        path = parts.path.rstrip("/")
        # Accept the base URL with or without /v1, as users copy it from either kind of doc.
        if not path.endswith("/v1"):
            path += "/v1"
        self.prefix = path
        self.query = f"?{parts.query}" if parts.query else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.display = f"{parts.scheme}://{host}:{self.port}{self.prefix}"
        self.cooldown_until = 0.0
        self.failures = 0

    def path(self, endpoint: str) -> str:
        return f"{self.prefix}{endpoint}{self.query}"

    def connect(self, timeout: float) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


class _Pool:
    """Round-robin over servers, skipping those cooling down after a failure."""

    def __init__(self, servers: Sequence[_Server], cooldown: float, clock: Callable[[], float]):
        self.servers = list(servers)
        self.cooldown = cooldown
        self.clock = clock
        self._next = 0
        self._lock = threading.Lock()

    def pick(self, avoid: Optional[_Server] = None) -> _Server:
        with self._lock:
            now = self.clock()
            n = len(self.servers)
            order = [self.servers[(self._next + i) % n] for i in range(n)]
            healthy = [s for s in order if s.cooldown_until <= now]
            preferred = [s for s in healthy if s is not avoid] or healthy
            # All cooling down: the one that recovers first is the best bet.
            chosen = preferred[0] if preferred else min(order, key=lambda s: s.cooldown_until)
            self._next = (self.servers.index(chosen) + 1) % n
            return chosen

    def has_healthy_other(self, server: _Server) -> bool:
        with self._lock:
            now = self.clock()
            return any(s is not server and s.cooldown_until <= now for s in self.servers)

    def failed(self, server: _Server) -> None:
        with self._lock:
            server.failures += 1
            pause = min(self.cooldown * 2 ** (server.failures - 1), COOLDOWN_MAX_S)
            server.cooldown_until = self.clock() + pause

    def succeeded(self, server: _Server) -> None:
        with self._lock:
            server.failures = 0
            server.cooldown_until = 0.0


class _Retryable(Exception):
    """A failure worth another attempt (maybe on another server)."""

    def __init__(self, message: str, retry_after: Optional[float] = None):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


@dataclass
class _Progress:
    """What one `generate` call has passed to `on_piece`, across attempts."""

    delivered: int = 0  # characters of visible text already given to on_piece


# --- the backend ---------------------------------------------------------------------


class OpenAIBackend:
    """Pages as chat completions on one or more OpenAI-compatible servers."""

    name = "openai"

    def __init__(
        self,
        base_urls: Sequence[str],
        model: Optional[str] = None,
        api_key: Optional[str] = None,
        concurrency: int = 4,
        timeout: float = 600,
        max_retries: int = 5,
        *,
        image_format: str = "auto",
        cooldown: float = COOLDOWN_S,
        backoff_base: float = BACKOFF_BASE_S,
        backoff_max: float = BACKOFF_MAX_S,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        if isinstance(base_urls, str):
            base_urls = [base_urls]
        if not base_urls:
            raise UsageError("no server given", hint="pass --base-url URL (repeat it for several servers)")
        if concurrency < 1:
            raise UsageError(f"--concurrency must be at least 1 (got {concurrency})")
        if image_format not in ("auto", "png", "jpeg"):
            raise UsageError(f"image format must be auto, png or jpeg (got {image_format!r})")
        self._api_key = api_key or None
        self.concurrency = int(concurrency)
        self.timeout = float(timeout)
        self.max_retries = max(0, int(max_retries))
        self.image_format = image_format
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._sleep = sleep
        self._pool = _Pool([_Server(url) for url in base_urls], cooldown, clock)
        self._model = model or None
        self._model_lock = threading.Lock()
        self._active: set = set()
        self._active_lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:  # never the key
        urls = ", ".join(s.display for s in self._pool.servers)
        return f"OpenAIBackend([{urls}], model={self._model!r}, concurrency={self.concurrency})"

    @property
    def servers(self) -> List[str]:
        return [s.display for s in self._pool.servers]

    @property
    def model(self) -> Optional[str]:
        return self._model

    # --- model -----------------------------------------------------------------------

    def resolve_model(self) -> str:
        """The model to request: the one given, else the first the server lists.

        Call it once before a run to fail early when no server answers; `generate`
        calls it too. Thread-safe; asks the server only once.
        """
        with self._model_lock:
            if self._model is None:
                models = self._with_retries(self._list_models_once, what="listing models")
                if not models:
                    raise BackendError(
                        "the server lists no models",
                        hint="pass the model name with --api-model",
                    )
                self._model = models[0]
                log.info("using model %s (first of %d listed by the server)", self._model, len(models))
            return self._model

    def _list_models_once(self, server: _Server, progress: _Progress) -> List[str]:
        status, headers, body = self._request(server, "GET", "/models", None, min(self.timeout, MODELS_TIMEOUT_S))
        self._raise_for_status(server, status, headers, body)
        return _model_ids(body)

    # --- generation ------------------------------------------------------------------

    def generate(
        self,
        image: Any,
        prompt: str,
        settings: GenerationSettings,
        on_piece: Optional[PieceCallback] = None,
    ) -> Generation:
        model = self.resolve_model()
        body = json.dumps(self.request_body(model, encode_image(image, self.image_format), prompt, settings)).encode()

        def attempt(server: _Server, progress: _Progress) -> Generation:
            return self._stream_once(server, body, on_piece, progress)

        return self._with_retries(attempt, what="generating")

    @staticmethod
    def request_body(model: str, image_url: str, prompt: str, settings: GenerationSettings) -> Dict[str, Any]:
        """The chat-completions request for one page (public so tests and docs can show it)."""
        body: Dict[str, Any] = {
            "model": model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": image_url}},
                        {"type": "text", "text": prompt},
                    ],
                }
            ],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": settings.max_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "seed": settings.seed,
            # Qwen 3.5 27B and larger think by default; OCR needs the answer only.
            # vLLM, SGLang and llama.cpp's server pass this to the chat template.
            "chat_template_kwargs": {"enable_thinking": False},
        }
        if settings.top_k and settings.top_k > 0:
            body["top_k"] = settings.top_k  # vLLM, SGLang, llama.cpp, Ollama accept it
        if settings.repetition_penalty is not None:
            # vLLM/SGLang spell it repetition_penalty, llama.cpp repeat_penalty; each
            # server ignores the other's spelling.
            body["repetition_penalty"] = settings.repetition_penalty
            body["repeat_penalty"] = settings.repetition_penalty
        return body

    def _with_retries(self, attempt: Callable[[_Server, _Progress], Any], what: str) -> Any:
        progress = _Progress()
        server: Optional[_Server] = None
        error: Optional[_Retryable] = None
        attempts = self.max_retries + 1
        for number in range(1, attempts + 1):
            self._check_open()
            server = self._pool.pick(avoid=server)
            try:
                result = attempt(server, progress)
            except _Retryable as failure:
                self._check_open()  # a close() mid-request is not a server failure
                self._pool.failed(server)
                error = failure
                if number == attempts:
                    break
                delay = self._delay(number, failure.retry_after, self._pool.has_healthy_other(server))
                log.warning(
                    "%s while %s: %s; retrying in %.1f s (attempt %d of %d)",
                    server.display,
                    what,
                    self._redact(failure.message),
                    delay,
                    number + 1,
                    attempts,
                )
                if delay > 0:
                    self._sleep(delay)
                continue
            self._pool.succeeded(server)
            return result
        assert server is not None and error is not None
        raise BackendError(
            self._redact(f"{server.display}: {error.message} (gave up after {attempts} attempts while {what})"),
            hint="check that the server is up and not overloaded; see docs/scaling.md",
        ) from None

    def _delay(self, number: int, retry_after: Optional[float], other_server: bool) -> float:
        if other_server:
            return 0.0  # another server is healthy (a Retry-After speaks for this one only)
        backoff = min(self.backoff_max, self.backoff_base * 2 ** (number - 1))
        delay = backoff / 2 + random.uniform(0, backoff / 2)  # jitter: don't retry in lockstep
        if retry_after is not None:
            delay = max(delay, min(retry_after, RETRY_AFTER_MAX_S))
        return delay

    def _stream_once(
        self, server: _Server, body: bytes, on_piece: Optional[PieceCallback], progress: _Progress
    ) -> Generation:
        conn = server.connect(self.timeout)
        self._track(conn, True)
        try:
            try:
                conn.request("POST", server.path("/chat/completions"), body=body, headers=self._headers(stream=True))
                response = conn.getresponse()
                if response.status != 200:
                    self._raise_for_status(server, response.status, response.headers, response.read(ERROR_BODY_LIMIT))
                content_type = response.getheader("Content-Type", "") or ""
                if "text/event-stream" not in content_type:
                    # Some servers ignore stream=true and answer in one JSON document.
                    return self._from_json(response.read(), on_piece, progress)
                return self._read_stream(response, on_piece, progress)
            except _Retryable:
                raise
            except BackendError:
                raise
            except ssl.SSLCertVerificationError as failure:
                raise BackendError(
                    f"{server.display}: TLS certificate not trusted ({failure.verify_message})",
                    hint="use the server's proper certificate, or http:// inside a trusted network",
                ) from None
            except (socket.timeout, TimeoutError):
                raise _Retryable(f"no answer within {self.timeout:g} s") from None
            except (http.client.HTTPException, ConnectionError, OSError) as failure:
                raise _Retryable(f"connection failed ({_describe(failure)})") from None
        finally:
            self._track(conn, False)
            conn.close()

    def _read_stream(
        self, response: http.client.HTTPResponse, on_piece: Optional[PieceCallback], progress: _Progress
    ) -> Generation:
        state = _StreamState(on_piece, progress)
        data: List[bytes] = []
        while True:
            line = response.readline()
            if not line:
                break
            line = line.rstrip(b"\r\n")
            if line:
                if line.startswith(b"data:"):
                    data.append(line[6:] if line.startswith(b"data: ") else line[5:])
                continue  # comments (":"), event:, id:, retry: carry nothing we need
            if data:
                if state.event(b"\n".join(data)):
                    break
                data = []
            if state.aborted:
                break
        if data and not state.aborted and not state.done:
            state.event(b"\n".join(data))
        if state.aborted:
            return state.result("aborted")
        if state.finish_reason is None:
            # Every complete answer carries a finish_reason. A stream without one was cut:
            # by a dropped connection, or by the server itself (llama-cpp-python's server
            # ends a stream with a bare [DONE] when another request arrives, unless it
            # runs with --interrupt_requests False). Returning it would be a silently
            # truncated page.
            if state.done:
                raise _Retryable(
                    "the server ended the answer early ([DONE] without a finish_reason; llama-cpp-python's "
                    "server does this with several pages in flight unless started with --interrupt_requests False)"
                )
            raise _Retryable("the stream ended before the answer was complete")
        state.flush()
        return state.result(state.finish_reason)

    def _from_json(self, raw: bytes, on_piece: Optional[PieceCallback], progress: _Progress) -> Generation:
        try:
            payload = json.loads(raw)
            choice = payload["choices"][0]
            content = (choice.get("message") or {}).get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Retryable("the server's answer was not a chat completion") from None
        state = _StreamState(on_piece, progress)
        state.piece(content, count=False)
        state.flush()
        usage = payload.get("usage") or {}
        state.completion_tokens = usage.get("completion_tokens")
        state.prompt_tokens = usage.get("prompt_tokens")
        state.deltas = max(state.deltas, 1 if content else 0)
        return state.result("aborted" if state.aborted else choice.get("finish_reason") or "stop")

    # --- HTTP helpers ----------------------------------------------------------------

    def _headers(self, stream: bool) -> Dict[str, str]:
        from qwenocr import __version__

        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
            "User-Agent": f"qwenocr/{__version__}",
        }
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _request(self, server: _Server, method: str, endpoint: str, body: Optional[bytes], timeout: float):
        conn = server.connect(timeout)
        self._track(conn, True)
        try:
            conn.request(method, server.path(endpoint), body=body, headers=self._headers(stream=False))
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        except (socket.timeout, TimeoutError):
            raise _Retryable(f"no answer within {timeout:g} s") from None
        except ssl.SSLCertVerificationError as failure:
            raise BackendError(f"{server.display}: TLS certificate not trusted ({failure.verify_message})") from None
        except (http.client.HTTPException, ConnectionError, OSError) as failure:
            raise _Retryable(f"connection failed ({_describe(failure)})") from None
        finally:
            self._track(conn, False)
            conn.close()

    def _raise_for_status(self, server: _Server, status: int, headers: Any, body: bytes) -> None:
        if status == 200:
            return
        detail = _error_detail(body)
        message = f"HTTP {status}" + (f": {detail}" if detail else "")
        if status in RETRY_4XX or status >= 500:
            raise _Retryable(message, retry_after=_retry_after(headers.get("Retry-After") if headers else None))
        hints = {
            401: "set the key in QWENOCR_API_KEY (or OPENAI_API_KEY)",
            403: "the key is not allowed to use this server or model",
            404: "check --base-url (the server's /v1 root) and --api-model",
            413: "the page image is too large for the server; lower the image token budget",
        }
        raise BackendError(
            self._redact(f"{server.display}: {message}"),
            hint=hints.get(status, "the server rejected the request"),
        )

    def _redact(self, text: str) -> str:
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text

    def _track(self, conn: http.client.HTTPConnection, add: bool) -> None:
        with self._active_lock:
            (self._active.add if add else self._active.discard)(conn)

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError("the run was stopped", hint="the server connection was closed")

    def close(self) -> None:
        """Stop: close in-flight connections (their `generate` calls raise) and refuse new ones."""
        self._closed = True
        with self._active_lock:
            connections = list(self._active)
        for conn in connections:
            try:
                # shutdown() wakes a thread blocked in recv(); close() alone may not.
                if conn.sock is not None:
                    conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _StreamState:
    """Accumulates one attempt's answer from stream events."""

    def __init__(self, on_piece: Optional[PieceCallback], progress: _Progress):
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
            raise _Retryable("the server sent a malformed stream event") from None
        if not isinstance(payload, dict):
            return False
        if payload.get("error"):
            raise _Retryable(f"the server reported an error mid-stream: {_error_detail(json.dumps(payload).encode())}")
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
        if usage:
            self.prompt_tokens = usage.get("prompt_tokens", self.prompt_tokens)
            self.completion_tokens = usage.get("completion_tokens", self.completion_tokens)
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


# --- helpers -------------------------------------------------------------------------


def encode_image(image: Any, image_format: str = "auto") -> str:
    """The page as a `data:` URI: PNG, or JPEG when that is smaller (scans, photos).

    This runs for every page on the client, so it is kept cheap (16 pages in flight
    against a fast server mean tens of pages a second to encode):
    - a page rendered in RGB whose pixels are all grey is sent as greyscale, which is
      exact and three times less to compress (most document pages);
    - JPEG is encoded first (fast), then PNG only until it grows past the JPEG's size,
      so a scan (where PNG is many times larger) costs little extra.

    A `data:image/...` string passes through unchanged: a caller that already holds
    the page as JPEG/PNG bytes (a scan's embedded JPEG) need not re-encode it.
    """
    from PIL import Image

    if isinstance(image, str) and image.startswith("data:image/"):
        return image
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(image).__name__}")
    image = _flatten(image)
    if image_format == "png":
        return _data_uri("image/png", _png(image))
    jpeg = _jpeg(image)
    if image_format == "jpeg":
        return _data_uri("image/jpeg", jpeg)
    png = _png(image, limit=len(jpeg))
    return _data_uri("image/png", png) if png is not None else _data_uri("image/jpeg", jpeg)


def _png(image: Any, limit: Optional[int] = None) -> Optional[bytes]:
    """The image (mode L or RGB) as PNG, or None once it would exceed `limit` bytes.

    Written here rather than with Pillow because Pillow's PNG encoder holds the GIL
    (pages in flight could not encode in parallel) and its adaptive row filters cost
    twice the time for nothing on document pages: an A4 page at 150 DPI came out at
    23 KB in 12 ms here against 24.5 KB in 22 ms. Rows go unfiltered into zlib, which
    releases the GIL while it compresses.
    """
    width, height = image.size
    channels = 1 if image.mode == "L" else 3
    stride = width * channels
    pixels = image.tobytes()
    deflate = zlib.compressobj(PNG_ZLIB_LEVEL)
    parts: List[bytes] = []
    size = 0
    rows = max(1, (1 << 20) // (stride + 1))  # about 1 MB of raw rows per zlib call
    for first in range(0, height, rows):
        block = b"".join(
            b"\x00" + pixels[row * stride : (row + 1) * stride] for row in range(first, min(height, first + rows))
        )
        part = deflate.compress(block)
        size += len(part)
        if limit is not None and size > limit:
            return None  # larger than the alternative: stop paying for it
        parts.append(part)
    parts.append(deflate.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0 if channels == 1 else 2, 0, 0, 0)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", b"".join(parts)),
            _png_chunk(b"IEND", b""),
        ]
    )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _jpeg(image: Any) -> bytes:
    out = io.BytesIO()
    # Quality 90 keeps text edges crisp (below ~85 ringing blurs small print); 4:4:4
    # chroma keeps coloured text as sharp as black.
    image.save(out, format="JPEG", quality=90, subsampling=0 if image.mode == "RGB" else -1)
    return out.getvalue()


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _flatten(image: Any) -> Any:
    """RGB or L, transparency on white; RGB that is all grey becomes L (exactly)."""
    from PIL import Image

    if image.mode not in ("RGB", "L"):
        if "A" in image.mode or "transparency" in image.info:
            rgba = image.convert("RGBA")
            canvas = Image.new("RGB", image.size, "white")
            canvas.paste(rgba, mask=rgba.getchannel("A"))
            image = canvas
        elif image.mode in ("1", "I", "I;16", "F"):
            image = image.convert("L")
        else:
            image = image.convert("RGB")
    if image.mode == "RGB":
        # A sparse sample with one coloured pixel proves colour, so most colour pages
        # skip the full-size check (which alone can prove grey).
        sample = image.resize((max(1, image.width // 16), max(1, image.height // 16)), Image.NEAREST)
        grey = _grey_channel(image) if _grey_channel(sample) is not None else None
        if grey is not None:
            image = grey
    return image


def _grey_channel(image: Any) -> Any:
    """The image as one channel if R, G and B are equal everywhere, else None."""
    from PIL import ImageChops

    r, g, b = image.split()
    if ImageChops.difference(r, g).getbbox() is None and ImageChops.difference(g, b).getbbox() is None:
        return r
    return None


def _model_ids(body: bytes) -> List[str]:
    try:
        payload = json.loads(body)
    except ValueError:
        raise _Retryable("the server's model list was not JSON") from None
    # OpenAI/vLLM/SGLang/Ollama: {"data": [...]}; llama.cpp's server adds "models".
    entries = (payload.get("data") or payload.get("models") or []) if isinstance(payload, dict) else []
    ids = []
    for entry in entries:
        if isinstance(entry, dict):
            name = entry.get("id") or entry.get("name") or entry.get("model")
            if name:
                ids.append(str(name))
        elif isinstance(entry, str):
            ids.append(entry)
    return ids


def _error_detail(body: bytes) -> str:
    """The server's error message in one short line."""
    text = body.decode("utf-8", "replace")
    try:
        payload = json.loads(text)
        error = payload.get("error", payload) if isinstance(payload, dict) else payload
        if isinstance(error, dict):
            text = str(error.get("message") or error.get("detail") or error)
        else:
            text = str(payload.get("detail", error) if isinstance(payload, dict) else error)
    except ValueError:
        pass
    text = " ".join(text.split())
    return text[:200] + ("…" if len(text) > 200 else "")


def _retry_after(value: Optional[str]) -> Optional[float]:
    """Retry-After as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _describe(failure: BaseException) -> str:
    text = str(failure).strip()
    name = type(failure).__name__
    return f"{name}: {text}" if text and len(text) < 120 else name


# --- doctor --------------------------------------------------------------------------


def check_server(base_url: str, api_key: Optional[str] = None, timeout: float = 10.0) -> Dict[str, Any]:
    """Is the server at `base_url` reachable, and which models does it serve?

    For `doctor --base-url`: one `GET /v1/models`, no retries. Returns
    `{"base_url", "reachable", "status", "models", "latency_s", "error"}`; never raises
    for network trouble (the error is in "error"), and never includes the key.
    """
    result: Dict[str, Any] = {
        "base_url": base_url,
        "reachable": False,
        "status": None,
        "models": [],
        "latency_s": None,
        "error": None,
    }
    try:
        backend = OpenAIBackend([base_url], model="-", api_key=api_key, max_retries=0)
    except UsageError as error:
        result["error"] = error.one_line()
        return result
    server = backend._pool.servers[0]
    result["base_url"] = server.display
    started = time.monotonic()
    try:
        status, headers, body = backend._request(server, "GET", "/models", None, timeout)
    except (_Retryable, BackendError) as failure:
        result["error"] = backend._redact(getattr(failure, "message", str(failure)))
        return result
    result["latency_s"] = round(time.monotonic() - started, 3)
    result["reachable"] = True
    result["status"] = status
    if status != 200:
        detail = _error_detail(body)
        hint = " (set QWENOCR_API_KEY or OPENAI_API_KEY)" if status in (401, 403) else ""
        result["error"] = backend._redact(f"HTTP {status}" + (f": {detail}" if detail else "") + hint)
        return result
    try:
        result["models"] = _model_ids(body)
    except _Retryable as failure:
        result["error"] = failure.message
    return result
