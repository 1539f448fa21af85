"""Servers that misbehave without ever failing outright (issue #12, defects 8 and 9).

Each test starts a small loopback server (127.0.0.1, its own thread) that streams
keep-alives, hidden reasoning or a think block for ever, sends a body or a line far
too large, or trickles its answer; each checks that qwenocr stops on time (wall time
asserted) with the documented outcome, and reads no more than its limits. Every server
loop is bounded in time and size, so a regression fails a test instead of hanging it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Dict

import pytest

from qwenocr.engines.base import GenerationSettings
from qwenocr.engines.openai import OpenAIBackend
from qwenocr.engines.openai.client import MODELS_BODY_LIMIT, ServerClient
from qwenocr.engines.openai.stream import SSE_LINE_LIMIT
from qwenocr.errors import BackendError
from tests.support import samples
from tests.support.clirun import run_cli

ROOT = Path(__file__).resolve().parents[1]
SERVER_LOOP_S = 20.0  # no server loop runs longer than this, whatever the client does
CHUNK = b" " * 65536
MIB = 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        self.server.behaviour(self, "GET")  # type: ignore[attr-defined]

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.behaviour(self, "POST")  # type: ignore[attr-defined]


class MisbehavingServer:
    """A loopback server whose answers come from `behaviour(handler, method)`."""

    def __init__(self, behaviour: Callable[["MisbehavingServer", BaseHTTPRequestHandler, str], None]):
        self.stop = threading.Event()
        self.sent = 0  # body bytes the server managed to send, over all requests
        self.requests = 0
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.behaviour = lambda handler, method: self._serve(behaviour, handler, method)  # type: ignore
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def _serve(self, behaviour, handler, method):
        with self._lock:
            self.requests += 1
        try:
            behaviour(self, handler, method)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the client hung up: what it should do

    def write(self, handler: BaseHTTPRequestHandler, data: bytes) -> None:
        handler.wfile.write(data)
        handler.wfile.flush()
        with self._lock:
            self.sent += len(data)

    def loop(self, interval: float, limit_s: float = SERVER_LOOP_S):
        """Yield until the test ends or `limit_s` passes, pausing `interval` between."""
        end = time.monotonic() + limit_s
        while not self.stop.is_set() and time.monotonic() < end:
            yield
            if interval:
                time.sleep(interval)

    def __enter__(self) -> "MisbehavingServer":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _sse_headers(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Connection", "close")
    handler.end_headers()


def _models(server: MisbehavingServer, handler: BaseHTTPRequestHandler) -> None:
    body = json.dumps({"data": [{"id": "fake"}]}).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    server.write(handler, body)


def _event(delta: Dict[str, str]) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}).encode() + b"\n\n"


def keepalives(server, handler, method):
    if method == "GET":
        return _models(server, handler)
    _sse_headers(handler)
    for _ in server.loop(0.02):
        server.write(handler, b": keep-alive\n\n")


def reasoning(server, handler, method):
    if method == "GET":
        return _models(server, handler)
    _sse_headers(handler)
    for _ in server.loop(0.005):
        server.write(handler, _event({"reasoning_content": "let me think about this page "}))


def think_block(server, handler, method):
    if method == "GET":
        return _models(server, handler)
    _sse_headers(handler)
    server.write(handler, _event({"content": "<think>"}))
    for _ in server.loop(0.005):
        server.write(handler, _event({"content": "still thinking about the layout "}))


# --- defect 8: the page timeout holds whatever the stream sends ---------------------


@pytest.mark.parametrize("behaviour", [keepalives, reasoning, think_block], ids=["keepalive", "reasoning", "think"])
def test_page_timeout_holds_when_no_text_arrives(tmp_path, behaviour):
    image = tmp_path / "page.png"
    samples.page_image(1, size=(200, 260)).save(image)
    with MisbehavingServer(behaviour) as server:
        started = time.monotonic()
        proc = run_cli(
            "scan",
            image,
            "--backend",
            "openai",
            "--base-url",
            server.url,
            "--page-timeout",
            "1",
            "-f",
            "jsonl",
            "--no-skip-blank",
            timeout=60,
        )
        elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr.decode()
    (page,) = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert page["status"] == "timeout"
    assert page["text"] == ""
    assert elapsed < 15, elapsed  # 1 s page timeout plus the CLI's start-up
    assert server.requests == 2  # the model list and one page: a timeout is not retried


def test_the_deadline_interrupts_a_request_in_its_backoff_too():
    """A page whose server keeps failing stops at its deadline, not after all retries."""

    def failing(server, handler, method):
        handler.send_response(503)
        handler.send_header("Content-Length", "0")
        handler.send_header("Retry-After", "5")
        handler.end_headers()

    class Sink:
        def __init__(self, deadline):
            self.deadline = deadline

        def __call__(self, piece):
            return True

    with MisbehavingServer(failing) as server:
        backend = OpenAIBackend([server.url], model="fake", max_retries=5, timeout=10)
        started = time.monotonic()
        result = backend.generate(
            samples.page_image(1, size=(200, 260)), "p", GenerationSettings(), Sink(started + 1.0)
        )
        elapsed = time.monotonic() - started
    assert result.finish_reason == "aborted" and result.text == ""
    assert elapsed < 3, elapsed


# --- defect 9: every response is bounded in size and in time -------------------------


def huge_models(server, handler, method):
    size = 256 * MIB  # announced and (if the client kept reading) sent, never allocated
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(size))
    handler.end_headers()
    server.write(handler, b'{"data": [')
    for _ in range(size // len(CHUNK)):
        if server.stop.is_set():
            break
        server.write(handler, CHUNK)


def huge_sse_line(server, handler, method):
    if method == "GET":
        return _models(server, handler)
    _sse_headers(handler)
    server.write(handler, b'data: {"choices": [{"delta": {"content": "')
    for _ in range(256 * MIB // len(CHUNK)):
        if server.stop.is_set():
            break
        server.write(handler, b"x" * len(CHUNK))


_CLIENT = """
import json, resource, sys, time
from qwenocr.engines.base import GenerationSettings
from qwenocr.engines.openai import OpenAIBackend
from qwenocr.errors import BackendError
from tests.support import samples
image = samples.page_image(1, size=(200, 260))
url, what = sys.argv[1], sys.argv[2]
backend = OpenAIBackend([url], model=None if what == "models" else "fake", max_retries=0, timeout=60)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.monotonic()
try:
    backend.resolve_model() if what == "models" else backend.generate(image, "p", GenerationSettings())
    error = None
except BackendError as failure:
    error = failure.one_line()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"error": error, "growth_kib": after - before, "seconds": time.monotonic() - started}))
"""


@pytest.mark.parametrize(
    "behaviour, what, limit",
    [(huge_models, "models", MODELS_BODY_LIMIT), (huge_sse_line, "page", SSE_LINE_LIMIT)],
    ids=["models-body", "sse-line"],
)
def test_a_huge_answer_stops_at_its_limit(behaviour, what, limit):
    """Peak memory of a fresh client process grows by a few times the limit at most,
    far below the 256 MiB the server offers; the error names the limit."""
    with MisbehavingServer(behaviour) as server:
        proc = subprocess.run(
            [sys.executable, "-c", _CLIENT, server.url, what],
            capture_output=True,
            timeout=120,
            cwd=ROOT,
        )
        sent = server.sent
    assert proc.returncode == 0, proc.stderr.decode()
    report = json.loads(proc.stdout)
    assert report["growth_kib"] * 1024 < 8 * limit + 64 * MIB, report
    assert sent < limit + 64 * MIB, sent  # the reader stopped; only socket buffers hold more
    assert report["error"] and f"size limit of {limit // MIB} MiB" in report["error"]
    assert report["seconds"] < 30, report


def trickle(server, handler, method):
    body = json.dumps({"data": [{"id": "a-model-named-slowly"}]}).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    for index, _ in zip(range(len(body)), server.loop(0.25), strict=False):
        server.write(handler, body[index : index + 1])


def test_a_trickling_server_is_bounded_per_request_not_per_read():
    """One byte every 0.25 s never trips a per-read timeout; the 1.5 s request limit must."""
    with MisbehavingServer(trickle) as server:
        client = ServerClient([server.url], timeout=1.5, max_retries=1, backoff_base=0.01, backoff_max=0.01)
        started = time.monotonic()
        with pytest.raises(BackendError) as raised:
            client.list_models()
        elapsed = time.monotonic() - started
    assert "no complete answer within 1.5 s" in raised.value.one_line()
    assert elapsed < 6, elapsed  # two attempts of 1.5 s, with slack
    assert server.requests == 2  # retried like any other server failure


def test_a_trickling_stream_is_bounded_per_request():
    """A stream sending a keep-alive byte by byte: the request limit ends it, and the
    page fails like any server failure (no page timeout set)."""

    def slow_stream(server, handler, method):
        _sse_headers(handler)
        for _ in server.loop(0.1):
            server.write(handler, b":")

    with MisbehavingServer(slow_stream) as server:
        backend = OpenAIBackend([server.url], model="fake", max_retries=0, timeout=1.0)
        started = time.monotonic()
        with pytest.raises(BackendError) as raised:
            backend.generate(samples.page_image(1, size=(200, 260)), "p", GenerationSettings())
        elapsed = time.monotonic() - started
    assert "no complete answer within 1 s" in raised.value.one_line()
    assert elapsed < 4, elapsed
