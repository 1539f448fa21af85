"""A fake OpenAI-compatible server on 127.0.0.1 for tests and benchmarks.

Implements `GET /v1/models` and `POST /v1/chat/completions` (streamed as server-sent
events, chunked like uvicorn does, or one JSON document), serving requests in
parallel threads. It can be told to misbehave, request by request, through `plan`:

    server.plan = [503, 429, "drop", "cut", "hang", "json", "error", "ok"]

- an int: answer with that HTTP status (and `retry_after` as the Retry-After header),
- "drop": close the connection without answering,
- "cut": stream two pieces, then close the connection mid-answer,
- "interrupt": stream two pieces, then a bare `[DONE]` without a finish_reason (what
  llama-cpp-python's server does to a stream when another request arrives),
- "hang": wait `hang_s` before answering (longer than the client's timeout),
- "json": ignore stream=true and answer in one JSON document,
- "error": stream an error event,
- "ok": behave.

A server that takes only so many requests at once: `capacity=K` serves K chat requests
in parallel, and `over_capacity` says what happens beyond:

- "interrupt" (the default): like llama-cpp-python's server with its default
  `interrupt_requests=True` (K=1): requests beyond K wait for a turn, and an answer
  streaming is cut (a bare `[DONE]`) as soon as a request is waiting;
- "queue": requests beyond K wait for a turn, nothing is cut (a server that queues);
- an int (429, 503): a request arriving with K already in flight gets that status.

`interrupted` and `rejected` count what it did; `level_log` records how many requests
were in flight as each one arrived.

By default the answer names the page image's size ("page 300x400 ..."), so a test can
check that each page got its own answer. Every request is recorded (path, headers,
JSON body) in `requests`; `max_in_flight` is the peak number of parallel chat requests.

Run it standalone for benchmarks (prints its base URL on stdout, then serves):

    python -m tests.openai_fake_server --delay 0.2
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Union


def image_size(body: Dict[str, Any]) -> Optional[tuple]:
    """The (width, height) of the first image in a chat request."""
    from PIL import Image

    for message in body.get("messages", []):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            if part.get("type") == "image_url":
                url = part["image_url"]["url"]
                data = base64.b64decode(url.split(",", 1)[1])
                with Image.open(io.BytesIO(data)) as image:
                    return image.size
    return None


def default_reply(body: Dict[str, Any]) -> str:
    size = image_size(body)
    label = f"{size[0]}x{size[1]}" if size else "without image"
    return f"page {label} says hello in several pieces of text"


class FakeOpenAIServer:
    """Context manager: `with FakeOpenAIServer() as server: server.url ...`."""

    def __init__(
        self,
        models: Optional[List[str]] = None,
        delay: float = 0.0,
        piece_delay: float = 0.0,
        api_key: Optional[str] = None,
        reply: Callable[[Dict[str, Any]], str] = default_reply,
        usage: bool = True,
        think: bool = False,
        chunked: bool = True,
        retry_after: Optional[str] = None,
        hang_s: float = 5.0,
        port: int = 0,
        capacity: Optional[int] = None,
        over_capacity: Union[int, str] = "interrupt",
    ):
        self.models = ["qwen3.5-fake"] if models is None else models
        self.delay = delay
        self.piece_delay = piece_delay
        self.api_key = api_key
        self.reply = reply
        self.usage = usage
        self.think = think
        self.chunked = chunked
        self.retry_after = retry_after
        self.hang_s = hang_s
        self.capacity = capacity
        self.over_capacity = over_capacity
        self.interrupted = 0
        self.rejected = 0
        self.level_log: List[int] = []
        self._arrivals = 0
        self._active: List[int] = []  # arrival numbers of the chat requests in flight
        self._serving = 0
        self._waiting = 0
        self.plan: List[Union[int, str]] = []
        self.requests: List[Dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.disconnects = 0  # clients that went away mid-answer
        self.completed = 0
        self.lock = threading.Lock()
        self._turns = threading.Condition(self.lock)  # "interrupt": whose turn it is
        self._httpd = _Server(("127.0.0.1", port), _Handler)
        self._httpd.fake = self
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def chat_requests(self) -> List[Dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def start(self) -> "FakeOpenAIServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def next_action(self) -> Union[int, str]:
        with self.lock:
            return self.plan.pop(0) if self.plan else "ok"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog (5) drops connections at 16+ in flight
    fake: FakeOpenAIServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    # --- plumbing ------------------------------------------------------------------

    def _record(self, body: Optional[Dict[str, Any]]) -> None:
        fake = self.server.fake
        with fake.lock:
            fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})

    def _authorised(self) -> bool:
        key = self.server.fake.api_key
        if key is None or self.headers.get("Authorization") == f"Bearer {key}":
            return True
        self._json(401, {"error": {"message": "Invalid API key", "type": "invalid_request_error"}})
        return False

    def _json(self, status: int, payload: Dict[str, Any], headers: Optional[Dict[str, str]] = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def _event(self, payload: Union[Dict[str, Any], str]) -> None:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        raw = f"data: {data}\n\n".encode()
        if self.server.fake.chunked:
            raw = b"%x\r\n" % len(raw) + raw + b"\r\n"
        self.wfile.write(raw)
        self.wfile.flush()

    def _drop(self) -> None:
        # An abrupt close (RST), like a crashed replica or a load balancer timing out.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        self.close_connection = True

    # --- endpoints -----------------------------------------------------------------

    def do_GET(self) -> None:
        self._record(None)
        if not self._authorised():
            return
        if self.path.rstrip("/") == "/v1/models":
            data = [{"id": name, "object": "model", "owned_by": "fake"} for name in self.server.fake.models]
            self._json(200, {"object": "list", "data": data})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self._record(body)
        if not self._authorised():
            return
        if self.path.split("?")[0] != "/v1/chat/completions" or body is None:
            self._json(404 if body is not None else 400, {"error": {"message": "bad request"}})
            return
        fake = self.server.fake
        with fake.lock:
            fake._arrivals += 1
            self.arrival = fake._arrivals
            busy = fake.capacity is not None and len(fake._active) >= fake.capacity
            fake._active.append(self.arrival)
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
            fake.level_log.append(fake.in_flight)
        try:
            action = fake.next_action()
            if busy and isinstance(fake.over_capacity, int):
                with fake.lock:
                    fake.rejected += 1
                action = fake.over_capacity
            queued = fake.capacity is not None and fake.over_capacity in ("interrupt", "queue")
            if queued:
                with fake._turns:
                    fake._waiting += 1
                    while fake.capacity is not None and fake._serving >= fake.capacity:
                        fake._turns.wait(0.05)
                    fake._waiting -= 1
                    fake._serving += 1
            try:
                self._chat(body, action)
            finally:
                if queued:
                    with fake._turns:
                        fake._serving -= 1
                        fake._turns.notify_all()
        except (BrokenPipeError, ConnectionResetError):
            with fake.lock:
                fake.disconnects += 1
        finally:
            with fake.lock:
                fake.in_flight -= 1
                fake._active.remove(self.arrival)

    def _overtaken(self) -> bool:
        """Whether a request waits for a turn (then "interrupt" cuts this answer)."""
        fake = self.server.fake
        if fake.capacity is None or fake.over_capacity != "interrupt":
            return False
        with fake.lock:
            if fake._waiting:
                fake.interrupted += 1
                return True
        return False

    def _chat(self, body: Dict[str, Any], action: Union[int, str]) -> None:
        fake = self.server.fake
        if isinstance(action, int):
            headers = {"Retry-After": fake.retry_after} if fake.retry_after else {}
            self._json(action, {"error": {"message": f"simulated failure {action}", "code": action}}, headers)
            return
        if action == "drop":
            self._drop()
            return
        if action == "hang":
            time.sleep(fake.hang_s)
        if fake.delay:
            time.sleep(fake.delay)
        text = fake.reply(body)
        if fake.think:
            text = "<think>\nLet me read the page carefully.\n</think>\n\n" + text
        pieces = [word + " " for word in text.split(" ")]
        pieces[-1] = pieces[-1].rstrip(" ")
        created = int(time.time())
        if action == "json" or not body.get("stream"):
            self._json(
                200,
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": created,
                    "model": body.get("model"),
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    ],
                    "usage": {
                        "prompt_tokens": 100,
                        "completion_tokens": len(pieces),
                        "total_tokens": 100 + len(pieces),
                    },
                },
            )
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        if fake.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        self.wfile.write(b"" if fake.chunked else b": stream starts\n\n")
        if action == "error":
            self._event({"error": {"message": "simulated engine failure", "code": 500}})
            self._end()
            return

        def chunk(delta: Dict[str, Any], finish: Optional[str] = None) -> Dict[str, Any]:
            return {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": body.get("model"),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        self._event(chunk({"role": "assistant", "content": ""}))
        for index, piece in enumerate(pieces):
            if action == "cut" and index == 2:
                self._drop()
                return
            if action == "interrupt" and index == 2:
                self._event("[DONE]")
                self._end()
                return
            if fake.piece_delay:
                time.sleep(fake.piece_delay)
            if self._overtaken():
                self._event("[DONE]")
                self._end()
                return
            self._event(chunk({"content": piece}))
        max_tokens = body.get("max_tokens") or 10**9
        self._event(chunk({}, "length" if len(pieces) >= max_tokens else "stop"))
        wants_usage = (body.get("stream_options") or {}).get("include_usage")
        if fake.usage and wants_usage:
            self._event(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": 100,
                        "completion_tokens": len(pieces),
                        "total_tokens": 100 + len(pieces),
                    },
                }
            )
        self._event("[DONE]")
        self._end()
        with fake.lock:
            fake.completed += 1

    def _end(self) -> None:
        if self.server.fake.chunked:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible server for qwenocr tests and benchmarks.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.2, help="seconds before each answer")
    parser.add_argument("--piece-delay", type=float, default=0.0, help="seconds before each streamed piece")
    parser.add_argument("--model", default="qwen3.5-fake")
    parser.add_argument("--capacity", type=int, default=None, help="chat requests served in parallel")
    parser.add_argument(
        "--over-capacity", default="interrupt", help='beyond capacity: "interrupt" (the default), "queue", 429 or 503'
    )
    args = parser.parse_args(argv)
    over = int(args.over_capacity) if args.over_capacity.isdigit() else args.over_capacity
    server = FakeOpenAIServer(
        models=[args.model],
        delay=args.delay,
        piece_delay=args.piece_delay,
        port=args.port,
        reply=lambda body: "page text " * 20,
        capacity=args.capacity,
        over_capacity=over,
    )
    server.start()
    sys.stdout.write(server.url + "\n")
    sys.stdout.flush()
    try:
        # Serve until stdin closes (the parent went away) or Ctrl-C.
        sys.stdin.read()
    except KeyboardInterrupt:
        pass
    server.stop()


if __name__ == "__main__":
    main()
