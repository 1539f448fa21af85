"""HTTP to one or more OpenAI-compatible servers: which server, how often to retry, what failed.

Why it is built this way:
- Standard library HTTP only (`http.client`), so `--backend openai` works on every
  install, with no client SDK to version-match. One connection per request: a page
  takes seconds, so connection set-up is noise, and nothing is shared between threads.
- Thread-safe: the pipeline sends pages from `concurrency` threads at once. The only
  shared state (server health, open connections) sits behind locks.
- Failures a server recovers from (429, 5xx, 408, timeouts, resets, a stream cut
  short) are retried with exponential backoff and jitter, honouring `Retry-After`;
  with several servers the retry goes to another one and a failing server sits out a
  cool-down. Client errors (other 4xx) fail at once: retrying can't fix them.
- The API key travels only in the `Authorization` header. Every message that can reach
  a log or an exception passes through `_redact`.
- Each server gets its own limit on requests in flight (`adaptive`), lowered when it
  interrupts answers, rejects requests (429/503) or times out with several in flight,
  raised again after a streak of clean answers, never above `--concurrency`. A request
  over every server's limit waits for a slot here instead of failing at the server; a
  page whose answer was interrupted or rejected while others were in flight is retried
  without using up one of its attempts (the client sent too much, not the server failed).
- Every response is bounded: `timeout` is the time for the whole request (a watchdog
  shuts the socket at the deadline, so a server trickling a byte a second can't stretch
  it read by read), bodies read whole have a size limit, and so do stream lines (see
  `stream`). A page's own deadline (`--page-timeout`) bounds its request the same way.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import os
import random
import socket
import ssl
import threading
import time
import urllib.parse
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

from qwenocr.engines.openai.adaptive import CONGESTION, INTERRUPTED, REJECTED, SLOW, AdaptiveLimit, Slot
from qwenocr.errors import BackendError, UsageError

log = logging.getLogger(__name__)

API_KEY_ENV_VARS = ("QWENOCR_API_KEY", "OPENAI_API_KEY")

# 408 and 429 are the only 4xx a retry can fix; every 5xx might be transient (a
# restarting replica, an overloaded load balancer).
RETRY_4XX = {408, 429}
# "Too many requests" and "unavailable (overloaded)": the server's way to say "fewer".
BUSY_STATUSES = {429, 503}
# Retries of a page after its answer was interrupted or rejected while other requests
# were in flight, which don't use up its attempts: the limit drops on each, so a few
# suffice; the cap only keeps a server that does this at any load from looping a page.
FREE_RETRIES_MAX = 16
# How often a request waiting for a slot looks again (close(), its deadline, cool-downs).
SLOT_POLL_S = 0.25
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0
# A server asking for a longer pause than this is effectively down; don't hang a run.
RETRY_AFTER_MAX_S = 120.0
COOLDOWN_S = 15.0
COOLDOWN_MAX_S = 120.0
MODELS_TIMEOUT_S = 30.0
ERROR_BODY_LIMIT = 4096
MIB = 1024 * 1024
# A chat completion sent as one JSON document is a page of text: 16 MiB is far above any
# real answer, and far below what would hurt. A model list is a few KiB.
JSON_BODY_LIMIT = 16 * MIB
MODELS_BODY_LIMIT = 1 * MIB
READ_CHUNK = 64 * 1024

T = TypeVar("T")


def api_key_from_env(environ: Mapping[str, str] = os.environ) -> Optional[str]:
    """The API key from QWENOCR_API_KEY, else OPENAI_API_KEY; None when neither is set.

    Never from a command-line flag: flags show in the process list and shell history.
    """
    for name in API_KEY_ENV_VARS:
        value = environ.get(name, "").strip()
        if value:
            return check_api_key(value, f"the API key in {name}")
    return None


def check_api_key(key: str, what: str = "the API key") -> str:
    """`key` if an HTTP header can carry it (printable ASCII); else a UsageError.

    Checked before any request: `http.client` refuses such a header with a ValueError
    that quotes the whole `Authorization` value, key included. The error names where the
    key came from, never the key or the offending character (part of a secret too).
    """
    if not all(" " <= char <= "~" for char in key):
        raise UsageError(
            f"{what} has a character an HTTP header can't carry (a newline?)",
            hint="set it again as the key's printable ASCII characters only",
        )
    return key


class Retryable(Exception):
    """A failure worth another attempt (maybe on another server).

    `kind` says when it is a sign of too many requests at once (`adaptive.INTERRUPTED`,
    `REJECTED`, `SLOW`), which lowers the server's limit; None for other failures."""

    def __init__(self, message: str, retry_after: Optional[float] = None, kind: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.kind = kind


class DeadlinePassed(Exception):
    """The page's own deadline passed during a request: the page ends as `timeout`.

    Not a server failure (no retry, no cool-down). `partial` is what the interrupted
    attempt had produced (a `Generation`), or None.
    """

    def __init__(self, partial: Any = None):
        super().__init__("the page deadline passed")
        self.partial = partial


class Budget:
    """The time one request may take: the request limit or the page's deadline, whichever
    comes first (`time.monotonic()` seconds).

    A watchdog timer shuts the connection's socket at `until`, which wakes any blocked
    read; readers also call `check()` on every line or chunk, so a server that keeps
    sending (keep-alive comments, hidden reasoning) is stopped on time as well.
    """

    def __init__(self, limit: float, page_deadline: Optional[float] = None):
        now = time.monotonic()
        self.limit = limit
        self.until = now + limit
        self.page_bound = page_deadline is not None and page_deadline <= self.until
        if page_deadline is not None:
            self.until = min(self.until, page_deadline)
        self.fired = False
        # The socket, kept: http.client drops `conn.sock` once a response says
        # "Connection: close" (the response reads on), so the watchdog can't find it there.
        self.sock: Optional[socket.socket] = None
        self._timer: Optional[threading.Timer] = None

    def left(self) -> float:
        return self.until - time.monotonic()

    def expired(self) -> bool:
        return self.fired or self.left() <= 0

    def check(self) -> None:
        if self.expired():
            raise BudgetExpired()

    def watch(self, conn: http.client.HTTPConnection) -> None:
        def fire() -> None:
            self.fired = True
            self.shutdown(conn)

        self._timer = threading.Timer(max(0.0, self.left()), fire)
        self._timer.daemon = True
        self._timer.start()

    def shutdown(self, conn: http.client.HTTPConnection) -> None:
        """Shut the request's socket: wakes a thread blocked in recv() (close() alone may not)."""
        sock = self.sock or conn.sock
        try:
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


class BudgetExpired(Exception):
    """A request ran out of its `Budget`; `partial` as in DeadlinePassed."""

    def __init__(self, partial: Any = None):
        super().__init__("out of time")
        self.partial = partial


def read_limited(
    response: http.client.HTTPResponse, limit: int, what: str, budget: Budget, *, truncate: bool = False
) -> bytes:
    """The body, read in chunks up to `limit` bytes; past it a Retryable naming the limit
    (or, with `truncate`, the first `limit` bytes): a server can't make us hold more."""
    chunks: List[bytes] = []
    size = 0
    while size <= limit:
        budget.check()
        chunk = response.read(min(READ_CHUNK, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    body = b"".join(chunks)
    if size > limit:
        if truncate:
            return body[:limit]
        raise Retryable(f"{what} passed the size limit of {size_text(limit)}")
    return body


def size_text(size: int) -> str:
    return f"{size // MIB} MiB" if size >= MIB and size % MIB == 0 else f"{size} bytes"


# --- servers -------------------------------------------------------------------------


class Server:
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
        self.limit = AdaptiveLimit(1)  # the client sets its own ceiling

    def path(self, endpoint: str) -> str:
        return f"{self.prefix}{endpoint}{self.query}"

    def connect(self, timeout: float) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


class _Pool:
    """Round-robin over servers, skipping those cooling down after a failure, and
    sending each no more requests at once than its adaptive limit."""

    def __init__(self, servers: Sequence[Server], cooldown: float, clock: Callable[[], float], concurrency: int = 1):
        self.servers = list(servers)
        for server in self.servers:
            server.limit = AdaptiveLimit(concurrency)
        self.cooldown = cooldown
        self.clock = clock
        self._next = 0
        # One lock for all servers: choosing a server with a free slot and taking the
        # slot are one step. Waiters for a slot sleep on it.
        self._lock = threading.Condition(threading.Lock())

    def _choose(self, avoid: Optional[Server], free_only: bool) -> Optional[Server]:
        now = self.clock()
        n = len(self.servers)
        order = [self.servers[(self._next + i) % n] for i in range(n)]
        healthy = [s for s in order if s.cooldown_until <= now]
        if healthy:
            # A healthy server at its limit is waited for rather than skipped for one
            # cooling down (that one is probably down).
            candidates = [s for s in healthy if s.limit.free() or not free_only]
            preferred = [s for s in candidates if s is not avoid] or candidates
            chosen = preferred[0] if preferred else None
        else:
            # All cooling down: the one that recovers first is the best bet.
            candidates = [s for s in order if s.limit.free() or not free_only]
            chosen = min(candidates, key=lambda s: s.cooldown_until) if candidates else None
        if chosen is not None:
            self._next = (self.servers.index(chosen) + 1) % n
        return chosen

    def pick(self, avoid: Optional[Server] = None) -> Server:
        """The next server, whatever its load (round-robin, healthy ones first)."""
        with self._lock:
            chosen = self._choose(avoid, free_only=False)
            assert chosen is not None
            return chosen

    def acquire(
        self, avoid: Optional[Server], deadline: Optional[float], check_open: Callable[[], None]
    ) -> Tuple[Server, Slot]:
        """The next server with a free slot, and the slot; waits while none has one.
        Raises DeadlinePassed past `deadline`, and what `check_open` raises."""
        with self._lock:
            while True:
                check_open()
                chosen = self._choose(avoid, free_only=True)
                if chosen is not None:
                    return chosen, chosen.limit.take()
                wait = SLOT_POLL_S
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise DeadlinePassed()
                    wait = min(wait, left)
                self._lock.wait(wait)

    def release(self, server: Server) -> None:
        with self._lock:
            server.limit.give_back()
            self._lock.notify_all()

    def congested(self, server: Server, slot: Slot, kind: str) -> Tuple[Optional[int], int]:
        """Lower the server's limit for a congestion signal (before `release`): the new
        limit when it dropped, else None; and the requests that were in flight."""
        with self._lock:
            in_flight = server.limit.in_flight
            return server.limit.congested(slot, kind), in_flight

    def in_flight(self, server: Server) -> int:
        with self._lock:
            return server.limit.in_flight

    def wake(self) -> None:
        with self._lock:
            self._lock.notify_all()

    def has_healthy_other(self, server: Server) -> bool:
        with self._lock:
            now = self.clock()
            return any(s is not server and s.cooldown_until <= now for s in self.servers)

    def failed(self, server: Server) -> None:
        with self._lock:
            server.failures += 1
            pause = min(self.cooldown * 2 ** (server.failures - 1), COOLDOWN_MAX_S)
            server.cooldown_until = self.clock() + pause

    def succeeded(self, server: Server, slot: Optional[Slot] = None) -> Optional[int]:
        """A clean answer; the server's new limit when this raised it, else None."""
        with self._lock:
            server.failures = 0
            server.cooldown_until = 0.0
            if slot is not None and server.limit.succeeded(slot):
                self._lock.notify_all()
                return server.limit.limit
            return None


def server_list(base_urls: Union[str, Sequence[str]]) -> List[str]:
    """The base URLs as a list (one may be given as a plain string); refuses none."""
    urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
    if not urls:
        raise UsageError("no server given", hint="pass --base-url URL (repeat it for several servers)")
    return urls


# --- the client ----------------------------------------------------------------------


class ServerClient:
    """Requests to a pool of servers with retries, cool-downs and the key kept secret."""

    def __init__(
        self,
        base_urls: Union[str, Sequence[str]],
        api_key: Optional[str] = None,
        timeout: float = 600,
        max_retries: int = 5,
        *,
        cooldown: float = COOLDOWN_S,
        backoff_base: float = BACKOFF_BASE_S,
        backoff_max: float = BACKOFF_MAX_S,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        concurrency: int = 1,
        adaptive: bool = True,
    ):
        urls = server_list(base_urls)
        self._api_key = check_api_key(api_key) if api_key else None
        self.timeout = float(timeout)
        self.max_retries = max(0, int(max_retries))
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._sleep = sleep
        self._pool = _Pool([Server(url) for url in urls], cooldown, clock, max(1, int(concurrency)))
        self._active: set = set()
        self._active_lock = threading.Lock()
        self._closed = False
        # False keeps every server at `concurrency` whatever it says (for benchmarks).
        self.adaptive = adaptive

    @property
    def servers(self) -> List[str]:
        return [s.display for s in self._pool.servers]

    def list_models(self) -> List[str]:
        """The models the servers serve, as the first one to answer lists them."""

        def attempt(server: Server) -> List[str]:
            timeout = min(self.timeout, MODELS_TIMEOUT_S)
            status, headers, body = self._request(server, "GET", "/models", None, timeout, MODELS_BODY_LIMIT)
            self._raise_for_status(server, status, headers, body)
            return _model_ids(body)

        return self._with_retries(attempt, what="listing models")

    @property
    def limits(self) -> Dict[str, int]:
        """Each server's current limit on requests in flight (see `adaptive`)."""
        return {s.display: s.limit.limit for s in self._pool.servers}

    def _with_retries(self, attempt: Callable[[Server], T], what: str, deadline: Optional[float] = None) -> T:
        """`attempt` until it succeeds or the retries run out; with a page `deadline`
        (monotonic seconds), no attempt starts and no pause lasts past it.

        Each attempt holds a slot under its server's limit. An answer interrupted or
        rejected while other requests were in flight to that server lowers the limit
        and is retried without counting as an attempt (at most FREE_RETRIES_MAX times)."""
        server: Optional[Server] = None
        error: Optional[Retryable] = None
        attempts = self.max_retries + 1
        number = 0  # attempts counted
        free = 0
        while number < attempts:
            self._check_open()
            if deadline is not None and time.monotonic() >= deadline:
                raise DeadlinePassed()
            server, slot = self._pool.acquire(server if error is not None else None, deadline, self._check_open)
            try:
                result = attempt(server)
            except Retryable as caught:
                failure = caught
            except BaseException:
                self._pool.release(server)
                raise
            else:
                self._pool.release(server)
                raised = self._pool.succeeded(server, slot)
                if raised is not None:
                    log.info("%s copes with more: up to %d requests in flight", server.display, raised)
                return result
            in_flight = 1
            if failure.kind in CONGESTION and self.adaptive and not self._closed:
                lowered, in_flight = self._pool.congested(server, slot, failure.kind)
                if lowered is not None:
                    self._announce_lower(server, failure, in_flight, lowered)
            self._pool.release(server)
            self._check_open()  # a close() mid-request is not a server failure
            if failure.kind in (INTERRUPTED, REJECTED) and in_flight > 1 and free < FREE_RETRIES_MAX:
                # The client sent more than the server takes: not the page's failure.
                free += 1
                error = None
                delay = 0.0
                if failure.kind == REJECTED:
                    delay = self._delay(1, failure.retry_after, self._pool.has_healthy_other(server))
                log.info(
                    "%s while %s: %s with %d requests in flight; retrying",
                    server.display,
                    what,
                    self._redact(failure.message),
                    in_flight,
                )
                self._pause(delay, deadline)
                continue
            number += 1
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
            self._pause(delay, deadline)
        assert server is not None and error is not None
        raise BackendError(
            self._redact(f"{server.display}: {error.message} (gave up after {attempts} attempts while {what})"),
            hint="check that the server is up and not overloaded; see docs/scaling.md",
        ) from None

    def _pause(self, delay: float, deadline: Optional[float]) -> None:
        if deadline is not None:
            delay = min(delay, max(0.0, deadline - time.monotonic()))
        if delay > 0:
            self._sleep(delay)

    def _announce_lower(self, server: Server, failure: Retryable, in_flight: int, limit: int) -> None:
        """One warning per server, at its first decrease; later changes are info."""
        if failure.kind == INTERRUPTED:
            why = "answers were interrupted"
            hint = "llama-cpp-python's server does this unless started with --interrupt_requests False"
        elif failure.kind == REJECTED:
            why = f"requests were rejected ({self._redact(failure.message.split(':')[0])})"
            hint = "more again when it copes"
        else:
            why = "answers timed out"
            hint = "more again when it copes"
        message = f"server {server.display}: {why} with {in_flight} requests in flight; using {limit} ({hint})"
        if server.limit.decreases == 1:
            log.warning("%s", message)
        else:
            log.info("%s", message)

    def _delay(self, number: int, retry_after: Optional[float], other_server: bool) -> float:
        if other_server:
            return 0.0  # another server is healthy (a Retry-After speaks for this one only)
        backoff = min(self.backoff_max, self.backoff_base * 2 ** (number - 1))
        delay = backoff / 2 + random.uniform(0, backoff / 2)  # jitter: don't retry in lockstep
        if retry_after is not None:
            delay = max(delay, min(retry_after, RETRY_AFTER_MAX_S))
        return delay

    # --- HTTP ------------------------------------------------------------------------

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

    def _exchange(
        self,
        server: Server,
        method: str,
        endpoint: str,
        body: Optional[bytes],
        timeout: float,
        read: Callable[[http.client.HTTPResponse, Budget], T],
        *,
        stream: bool = False,
        tls_hint: Optional[str] = None,
        page_deadline: Optional[float] = None,
    ) -> T:
        """One request on its own connection; `read` takes the response while it is open.

        `timeout` bounds the whole request, connecting to the last byte, and so does
        `page_deadline` when it comes first (then running out raises `DeadlinePassed`).
        Network failures become `Retryable` (a timeout, a reset) or `BackendError` (an
        untrusted certificate: retrying can't fix it).
        """
        budget = Budget(timeout, page_deadline)
        if budget.expired():
            raise DeadlinePassed() if budget.page_bound else Retryable(f"no complete answer within {timeout:g} s")
        conn = server.connect(budget.left())
        self._track((conn, budget), True)
        budget.watch(conn)
        try:
            try:
                conn.request(method, server.path(endpoint), body=body, headers=self._headers(stream=stream))
            except ValueError:
                # http.client quotes the refused header in its message: with the key
                # checked up front this can't happen, and if it does, the text stays out.
                raise BackendError(f"{server.display}: a request header could not be sent") from None
            budget.sock = conn.sock
            # The watchdog may have fired while the socket did not exist yet.
            budget.check()
            return read(conn.getresponse(), budget)
        except ssl.SSLCertVerificationError as failure:
            raise BackendError(
                f"{server.display}: TLS certificate not trusted ({failure.verify_message})", hint=tls_hint
            ) from None
        except BudgetExpired as failure:
            raise self._out_of_time(budget, failure.partial) from None
        except (socket.timeout, TimeoutError):
            raise self._out_of_time(budget, None) from None
        except (http.client.HTTPException, ConnectionError, OSError, Retryable) as failure:
            if budget.expired():  # the watchdog's shutdown, seen as a reset or a cut stream
                raise self._out_of_time(budget, None) from None
            if isinstance(failure, Retryable):
                raise
            raise Retryable(f"connection failed ({_describe(failure)})") from None
        finally:
            budget.stop()
            self._track((conn, budget), False)
            conn.close()

    @staticmethod
    def _out_of_time(budget: Budget, partial: Any) -> Exception:
        if budget.page_bound:
            return DeadlinePassed(partial)
        return Retryable(f"no complete answer within {budget.limit:g} s (the time limit per request)", kind=SLOW)

    def _request(
        self, server: Server, method: str, endpoint: str, body: Optional[bytes], timeout: float, limit: int
    ) -> Tuple[int, Any, bytes]:
        """(status, headers, body) of one request that is read whole, at most `limit`
        bytes of it (an error's body is cut to its first few KiB)."""

        def read(response: http.client.HTTPResponse, budget: Budget) -> Tuple[int, Any, bytes]:
            if response.status != 200:
                return (
                    response.status,
                    response.headers,
                    read_limited(response, ERROR_BODY_LIMIT, "the error", budget, truncate=True),
                )
            what = f"the answer to {endpoint}"
            return response.status, response.headers, read_limited(response, limit, what, budget)

        return self._exchange(server, method, endpoint, body, timeout, read)

    def _raise_for_status(self, server: Server, status: int, headers: Any, body: bytes) -> None:
        if status == 200:
            return
        detail = error_detail(body)
        message = f"HTTP {status}" + (f": {detail}" if detail else "")
        if status in RETRY_4XX or status >= 500:
            raise Retryable(
                message,
                retry_after=_retry_after(headers.get("Retry-After") if headers else None),
                kind=REJECTED if status in BUSY_STATUSES else None,
            )
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

    def _track(self, request: Tuple[http.client.HTTPConnection, Budget], add: bool) -> None:
        with self._active_lock:
            (self._active.add if add else self._active.discard)(request)

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError("the run was stopped", hint="the server connection was closed")

    def close(self) -> None:
        """Stop: close in-flight connections (their requests raise) and refuse new ones."""
        self._closed = True
        self._pool.wake()  # requests waiting for a slot see the close
        with self._active_lock:
            requests = list(self._active)
        for conn, budget in requests:
            budget.shutdown(conn)


# --- answers -------------------------------------------------------------------------


def _model_ids(body: bytes) -> List[str]:
    try:
        payload = json.loads(body)
    except ValueError:
        raise Retryable("the server's model list was not JSON") from None
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


def error_detail(body: bytes) -> str:
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
        client = ServerClient([base_url], api_key=api_key, max_retries=0)
    except UsageError as error:
        result["error"] = error.one_line()
        return result
    server = client._pool.servers[0]
    result["base_url"] = server.display
    started = time.monotonic()
    try:
        status, headers, body = client._request(server, "GET", "/models", None, timeout, MODELS_BODY_LIMIT)
    except (Retryable, BackendError) as failure:
        result["error"] = client._redact(getattr(failure, "message", str(failure)))
        return result
    result["latency_s"] = round(time.monotonic() - started, 3)
    result["reachable"] = True
    result["status"] = status
    if status != 200:
        detail = error_detail(body)
        hint = " (set QWENOCR_API_KEY or OPENAI_API_KEY)" if status in (401, 403) else ""
        result["error"] = client._redact(f"HTTP {status}" + (f": {detail}" if detail else "") + hint)
        return result
    try:
        result["models"] = _model_ids(body)
    except Retryable as failure:
        result["error"] = failure.message
    return result
