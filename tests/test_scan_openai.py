"""`qwenocr scan --backend openai` through the real CLI against a local fake
OpenAI-compatible server: page order under concurrency, retries, several servers, and
the API key kept out of arguments and output. (The backend against a real
llama_cpp.server lives in tests/test_openai_backend.py.)"""

from __future__ import annotations

import json

from tests.support import samples
from tests.support.clirun import run_cli
from tests.support.openai_fake_server import FakeOpenAIServer

SECRET = "sk-test-very-secret-key"


def test_pages_in_order_with_concurrency_and_retries(tmp_path):
    pdf = samples.write_pdf(tmp_path / "doc.pdf", pages=8, size=(300, 400))
    # Each answer takes 0.2 s, far longer than rendering the next page, so that pages are
    # at the server together; the failures come after the first pages, because a 503 or
    # 429 makes the client lower its concurrency (adaptive): failing the very first
    # request made the overlap a matter of timing.
    with FakeOpenAIServer(delay=0.2, api_key=SECRET) as server:
        server.plan = ["ok", "ok", "ok", 503, 429, "drop"]  # later requests fail; retries recover
        proc = run_cli(
            "scan",
            pdf,
            "--backend",
            "openai",
            "--base-url",
            server.url,
            "--concurrency",
            "4",
            "-f",
            "jsonl",
            "--no-skip-blank",
            # The overlap check below needs pages to reach the server together; the
            # rotation check's few ms per page made that a matter of timing.
            "--no-auto-rotate",
            env={"QWENOCR_API_KEY": SECRET},
        )
        assert proc.returncode == 0, proc.stderr.decode()
        pages = [json.loads(line) for line in proc.stdout.decode().splitlines()]
        assert [p["number"] for p in pages] == list(range(1, 9))
        assert all(p["status"] == "ok" and p["text"].startswith("page ") for p in pages)
        assert 1 < server.max_in_flight <= 4
        for request in server.chat_requests():
            assert request["body"]["chat_template_kwargs"] == {"enable_thinking": False}
    assert SECRET.encode() not in proc.stdout + proc.stderr


def test_several_servers_share_the_pages(tmp_path):
    pdf = samples.write_pdf(tmp_path / "doc.pdf", pages=6, size=(300, 400))
    with FakeOpenAIServer(delay=0.05) as one, FakeOpenAIServer(delay=0.05) as two:
        proc = run_cli("scan", pdf, "--backend", "openai", "--base-url", one.url, "--base-url", two.url, "-f", "json")
        assert proc.returncode == 0, proc.stderr.decode()
        assert len(one.chat_requests()) > 0 and len(two.chat_requests()) > 0
    document = json.loads(proc.stdout)
    assert document["model"] == {"backend": "openai", "model": "qwen3.5-fake"}


def test_unreachable_server_fails_before_any_page(tmp_path):
    pdf = samples.write_pdf(tmp_path / "doc.pdf", pages=1)
    with FakeOpenAIServer() as server:
        url = server.url
    proc = run_cli("scan", pdf, "--backend", "openai", "--base-url", url)
    assert proc.returncode == 11, proc.stderr.decode()
    lines = proc.stderr.decode().strip().splitlines()
    # retries are announced as warnings; the outcome is one error line, the last one
    assert [line for line in lines if not line.startswith("qwenocr: warning:")] == lines[-1:]
    assert lines[-1].startswith("qwenocr: error:") and "Traceback" not in proc.stderr.decode()
    assert proc.stdout == b""


def test_openai_without_base_url_is_a_usage_error(tmp_path):
    pdf = samples.write_pdf(tmp_path / "doc.pdf", pages=1)
    proc = run_cli("scan", pdf, "--backend", "openai")
    assert proc.returncode == 2
    assert b"--base-url" in proc.stderr


def test_doctor_checks_servers():
    with FakeOpenAIServer(models=["qwen3.5-397b"]) as server:
        up = run_cli("doctor", "--base-url", server.url, "--json")
        both = run_cli("doctor", "--base-url", server.url, "--base-url", "http://127.0.0.1:9/v1", "--json")
    assert up.returncode == 0, up.stderr.decode()
    [result] = json.loads(up.stdout)["servers"]
    assert result["reachable"] and result["models"] == ["qwen3.5-397b"]
    assert both.returncode == 11
    assert [s["reachable"] for s in json.loads(both.stdout)["servers"]] == [True, False]


def _no_constants(name):
    raise ValueError(f"not JSON: {name}")


def test_output_json_never_holds_nan_or_infinity(tmp_path):
    """Issue 12, defect 15: non-finite numbers (a server's usage, a timing) become null."""
    import io
    import math

    from qwenocr.scan.output import DocumentInfo, make_writer
    from qwenocr.scan.results import PageResult

    weird = PageResult(1, "hello", "ok", prompt_tokens=math.nan, seconds=math.nan, extra={"x": [math.inf, -math.inf]})
    info = DocumentInfo(source="doc.pdf", sha256="0" * 64, page_count=1, pages_selected=[1], settings={"t": math.nan})
    for fmt in ("json", "jsonl"):
        stream = io.StringIO()
        writer = make_writer(fmt, stream)
        writer.begin(info)
        writer.page(weird)
        writer.end(info, [weird])
        writer.close()
        for chunk in [stream.getvalue()] if fmt == "json" else stream.getvalue().splitlines():
            value = json.loads(chunk, parse_constant=_no_constants)
            page = value["pages"][0] if fmt == "json" else value
            assert page["prompt_tokens"] is None and page["seconds"] is None and page["x"] == [None, None]
            assert page["text"] == "hello"
        if fmt == "json":
            assert value["settings"] == {"t": None} and value["totals"]["seconds"] is None


def test_nan_usage_from_a_server_gives_valid_json_and_jsonl(tmp_path):
    """A fake server whose usage numbers are NaN/Infinity (Python's json writes them)."""
    import http.server
    import threading

    class NanServer(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self._send(json.dumps({"data": [{"id": "nan-model"}]}))

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            answer = {
                "choices": [{"message": {"content": "page text"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": float("nan"), "completion_tokens": float("inf")},
            }
            self._send(json.dumps(answer))

        def _send(self, body):
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NanServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        pdf = samples.write_pdf(tmp_path / "doc.pdf", pages=2, size=(300, 400))
        url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        for fmt in ("json", "jsonl"):
            proc = run_cli("scan", pdf, "--backend", "openai", "--base-url", url, "-f", fmt, "--no-skip-blank")
            assert proc.returncode == 0, proc.stderr.decode()
            text = proc.stdout.decode()
            chunks = [text] if fmt == "json" else text.splitlines()
            pages = []
            for chunk in chunks:
                value = json.loads(chunk, parse_constant=_no_constants)
                pages.extend(value["pages"] if fmt == "json" else [value])
            assert [p["text"] for p in pages] == ["page text", "page text"]
            assert all(p["prompt_tokens"] is None for p in pages)
    finally:
        httpd.shutdown()
        httpd.server_close()
