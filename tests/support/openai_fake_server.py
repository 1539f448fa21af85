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
        self.plan: List[Union[int, str]] = []
        self.requests: List[Dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.disconnects = 0  # clients that went away mid-answer
        self.completed = 0
        self.lock = threading.Lock()
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
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            self._chat(body, fake.next_action())
        except (BrokenPipeError, ConnectionResetError):
            with fake.lock:
                fake.disconnects += 1
        finally:
            with fake.lock:
                fake.in_flight -= 1

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
    parser.add_argument("--model", default="qwen3.5-fake")
    args = parser.parse_args(argv)
    server = FakeOpenAIServer(
        models=[args.model], delay=args.delay, port=args.port, reply=lambda body: "page text " * 20
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
