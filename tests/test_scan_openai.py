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
    with FakeOpenAIServer(delay=0.05, api_key=SECRET) as server:
        server.plan = [503, 429, "drop"]  # the first requests fail; retries recover
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
