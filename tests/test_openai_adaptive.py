"""Issue 12, item 4 and defect 18: pages in flight adapt to what each server takes.

A server that interrupts answers (llama-cpp-python's own server with its defaults),
rejects requests (429/503) beyond what it serves, or several servers with different
capacities: every page still succeeds, the limit for that server drops (one warning
line says so) and rises again when the server copes, and `doctor --base-url` reports
how many requests at once each server really serves. Against the fake server of
tests/support (capacity modes) and against a real `python -m llama_cpp.server` started
with its defaults on the tiny GGUF (marked `engine`).
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from qwenocr.engines.base import GenerationSettings
from qwenocr.engines.openai import OpenAIBackend, probe_parallel
from qwenocr.engines.openai.adaptive import INTERRUPTED, REJECTED, AdaptiveLimit
from tests.support import samples
from tests.support.clirun import run_cli
from tests.support.llama_server import llama_server
from tests.support.openai_fake_server import FakeOpenAIServer

SETTINGS = GenerationSettings(max_tokens=256)
LOWERED = "requests in flight; using"


def pages_through(client: OpenAIBackend, count: int, workers: int = 4) -> list:
    """`count` pages through `client` from `workers` threads, as the pipeline does."""
    images = [Image.new("RGB", (300 + n, 400), "white") for n in range(count)]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda image: client.generate(image, "p", SETTINGS), images))


def backend(*servers: FakeOpenAIServer, **kw) -> OpenAIBackend:
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("timeout", 10)
    kw.setdefault("concurrency", 4)
    return OpenAIBackend([s.url for s in servers], model="qwen3.5-fake", **kw)


def warnings_about_limits(stderr: str) -> list:
    return [line for line in stderr.splitlines() if LOWERED in line]


# --- the limit itself -------------------------------------------------------------------


def test_limit_drops_once_per_event_and_climbs_back():
    alone = AdaptiveLimit(4)
    assert alone.congested(alone.take(), REJECTED) is None  # alone in flight: not our parallelism
    limit = AdaptiveLimit(4, raise_after=2)
    slots = [limit.take() for _ in range(4)]
    assert limit.congested(slots[0], REJECTED) == 2  # halved
    assert limit.congested(slots[1], REJECTED) is None  # the same event: sent before the drop
    for _ in range(4):
        limit.give_back()
    fresh = [limit.take(), limit.take()]
    assert limit.congested(fresh[0], INTERRUPTED) == 1  # one at a time: straight to 1
    limit.give_back()
    limit.give_back()
    # a second decrease doubled the streak needed before each raise (2 -> 4)
    raised = []
    for _ in range(12):
        raised.append(limit.succeeded(limit.take()))
        limit.give_back()
    assert limit.limit == 4 and raised.count(True) == 3 and raised.index(True) == 3


# --- scan through the CLI -----------------------------------------------------------------


@pytest.mark.parametrize("over_capacity, capacity, said", [("interrupt", 1, "interrupted"), (429, 2, "rejected")])
def test_scan_with_more_pages_in_flight_than_the_server_takes(tmp_path, over_capacity, capacity, said):
    """Defect 18 with a fake server: before, pages failed after six attempts (exit 10)."""
    pdf = samples.write_pdf(tmp_path / "doc.pdf", pages=8, size=(300, 400))
    with FakeOpenAIServer(piece_delay=0.02, capacity=capacity, over_capacity=over_capacity) as server:
        proc = run_cli(
            "scan", pdf, "--backend", "openai", "--base-url", server.url,
            "--concurrency", "4", "-f", "jsonl", "--no-skip-blank",
        )  # fmt: skip
        stderr = proc.stderr.decode()
        assert proc.returncode == 0, stderr
        assert server.interrupted + server.rejected > 0  # the server did push back
    pages = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert [p["number"] for p in pages] == list(range(1, 9))
    assert all(p["status"] == "ok" and p["text"].startswith("page ") for p in pages)
    [warning] = warnings_about_limits(stderr)  # told once, on one line
    assert warning.startswith("qwenocr: warning: server http://127.0.0.1:")
    assert said in warning and f"using {capacity if said == 'interrupted' else 2}" in warning
    if said == "interrupted":
        assert "--interrupt_requests False" in warning
    # the pushed-back pages were retried without using up their attempts
    assert "attempt 2 of" not in stderr


# --- the backend: lower, raise, per server ------------------------------------------------


def test_limit_rises_again_when_the_server_copes():
    with FakeOpenAIServer(piece_delay=0.01, capacity=1) as server:
        client = backend(server)
        assert all(r.finish_reason == "stop" for r in pages_through(client, 6))
        assert client.limits == {server.url: 1} and server.interrupted > 0
        server.capacity = None  # the server now takes all it is sent
        with server.lock:
            server.max_in_flight = 0
        assert all(r.finish_reason == "stop" for r in pages_through(client, 40))
        assert client.limits == {server.url: 4}  # back to --concurrency, no higher
        assert 1 < server.max_in_flight <= 4


def test_each_server_has_its_own_limit(caplog):
    caplog.set_level(logging.WARNING)
    with FakeOpenAIServer(piece_delay=0.01, capacity=1) as small, FakeOpenAIServer(piece_delay=0.01) as big:
        client = backend(small, big)
        results = pages_through(client, 24)
        assert all(r.finish_reason == "stop" and r.text.startswith("page ") for r in results)
        # (the small one may be trying 2 again after a streak of clean answers)
        assert client.limits[small.url] <= 2 and client.limits[big.url] == 4
        assert small.interrupted > 0 and big.interrupted == 0
        assert len(big.chat_requests()) > len(small.chat_requests()) // 2  # the big one still gets its share
    lowered = [r.getMessage() for r in caplog.records if LOWERED in r.getMessage()]
    assert len(lowered) == 1 and small.url in lowered[0]


def test_a_server_that_always_interrupts_still_fails_in_the_end():
    """Free retries only while more than one request was in flight: alone, an interrupted
    answer counts as a failed attempt, so a broken server can't loop a page for ever."""
    with FakeOpenAIServer() as server:
        server.plan = ["interrupt"] * 3
        client = backend(server, concurrency=1, max_retries=1)
        from qwenocr.errors import BackendError

        with pytest.raises(BackendError, match="gave up after 2 attempts"):
            client.generate(Image.new("RGB", (30, 40)), "p", SETTINGS)


# --- doctor ----------------------------------------------------------------------------


def test_doctor_reports_requests_served_at_once():
    with (
        FakeOpenAIServer(piece_delay=0.02, capacity=1) as one,
        FakeOpenAIServer(piece_delay=0.02, capacity=2, over_capacity=503) as two,
        FakeOpenAIServer(piece_delay=0.02) as many,
    ):
        proc = run_cli("doctor", "--base-url", one.url, "--base-url", two.url, "--base-url", many.url, "--json")
        human = run_cli("doctor", "--base-url", one.url, env={"COLUMNS": "200"})
        for server in (one, two, many):  # small text-only requests, a few tokens each
            for request in server.chat_requests():
                assert request["body"]["max_tokens"] <= 16 and isinstance(
                    request["body"]["messages"][0]["content"], str
                )
    assert proc.returncode == 0, proc.stderr.decode()
    servers = json.loads(proc.stdout)["servers"]
    assert [s["parallel"] for s in servers] == [1, 2, 8]
    assert servers[0]["parallel_probe"]["levels"][-1]["outcomes"].get("interrupted")
    assert servers[1]["parallel_probe"]["levels"][-1]["outcomes"] == {"ok": 2, "rejected": 2}
    assert servers[2]["parallel_probe"]["tried"] == 8 and not servers[2]["parallel_probe"]["cut_short"]
    assert human.returncode == 0, human.stderr.decode()
    text = " ".join(human.stdout.decode().split())
    assert "serves 1 request at once" in text and "--interrupt_requests False" in text


def test_probe_is_bounded_in_time():
    with FakeOpenAIServer(delay=2.0) as slow:
        probe = probe_parallel(slow.url, "qwen3.5-fake", budget_s=1.0)
    assert probe["parallel"] == 0 and probe["cut_short"]
    assert probe["levels"][0]["outcomes"] == {"timeout": 1}


# --- the real server: llama-cpp-python with its defaults ----------------------------------


@pytest.mark.engine
def test_scan_against_llama_cpp_server_with_its_defaults(tiny_models, tmp_path):
    """Defect 18: `python -m llama_cpp.server` as its docs start it (interrupt_requests
    on), `scan --concurrency 4`: before, a page ended `error` and the run exit 10."""
    # No --interrupt_requests: its default, True, is the point.
    log_path = tmp_path / "server.log"
    with llama_server(tiny_models.dense_gguf, tiny_models.dense_mmproj, log_path) as (_, url, _info):
        pdf = samples.write_pdf(tmp_path / "doc.pdf", pages=4, size=(256, 320))
        proc = run_cli(
            "scan", pdf, "--backend", "openai", "--base-url", url, "--concurrency", "4",
            "--max-tokens", "64", "-f", "jsonl", "--no-skip-blank", timeout=600,
        )  # fmt: skip
        stderr = proc.stderr.decode()
        assert proc.returncode == 0, stderr + log_path.read_text()[-3000:]
        pages = [json.loads(line) for line in proc.stdout.decode().splitlines()]
        assert [p["number"] for p in pages] == [1, 2, 3, 4]
        assert all(p["status"] in ("ok", "truncated") for p in pages), pages
        [warning] = warnings_about_limits(stderr)
        assert "answers were interrupted" in warning and "using 1" in warning
        assert "--interrupt_requests False" in warning

        doctor = run_cli("doctor", "--base-url", url, "--json", timeout=120)
        assert doctor.returncode == 0, doctor.stderr.decode()
        [server] = json.loads(doctor.stdout)["servers"]
        assert server["parallel"] == 1, server
        assert server["parallel_probe"]["levels"][-1]["outcomes"].get("interrupted"), server
