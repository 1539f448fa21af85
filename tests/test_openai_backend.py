"""The OpenAI-compatible backend against a fake server on loopback (retries, order under
concurrency, abort, thinking off, the key's secrecy, several servers), and against the
real `python -m llama_cpp.server` with the tiny GGUF (marked `engine`)."""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from qwenocr.engines.base import GenerationSettings
from qwenocr.engines.openai import OpenAIBackend, api_key_from_env, check_server, encode_image
from qwenocr.engines.openai import client as openai_client
from qwenocr.engines.openai import encode as openai_encode
from qwenocr.engines.openai import stream as openai_stream
from qwenocr.errors import BackendError, ExitCode, UsageError
from tests.support.llama_server import free_port, llama_server
from tests.support.openai_fake_server import FakeOpenAIServer, image_size

SECRET = "sk-test-DO-NOT-LEAK-0123456789"
SETTINGS = GenerationSettings(max_tokens=256)


def page(width: int = 300, height: int = 400) -> Image.Image:
    return Image.new("RGB", (width, height), "white")


def backend(server_or_urls, **kw) -> OpenAIBackend:
    urls = server_or_urls if isinstance(server_or_urls, list) else [server_or_urls.url]
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("timeout", 10)
    return OpenAIBackend(urls, **kw)


@pytest.fixture
def server():
    with FakeOpenAIServer() as fake:
        yield fake


# --- the request ----------------------------------------------------------------------


def test_generate_streams_pieces_and_returns_the_page_text(server):
    pieces = []
    result = backend(server).generate(page(), "Read the page.", SETTINGS, lambda p: pieces.append(p) is None)
    assert result.text == "page 300x400 says hello in several pieces of text"
    assert "".join(pieces) == result.text
    assert len(pieces) > 3  # really streamed
    assert result.finish_reason == "stop"
    assert result.output_tokens == 9  # from the server's usage report
    assert result.prompt_tokens == 100


def test_request_turns_thinking_off_and_carries_the_settings(server):
    settings = GenerationSettings(max_tokens=123, temperature=0.3, top_p=0.9, top_k=40, repetition_penalty=1.1, seed=7)
    backend(server, model="qwen3.5-9b").generate(page(320, 200), "Read the page.", settings)
    body = server.chat_requests()[0]["body"]
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["model"] == "qwen3.5-9b"
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["seed"]) == (123, 0.3, 0.9, 7)
    assert body["top_k"] == 40
    assert body["repetition_penalty"] == body["repeat_penalty"] == 1.1
    content = body["messages"][0]["content"]
    assert content[0]["type"] == "image_url"
    assert content[0]["image_url"]["url"].startswith(("data:image/png;base64,", "data:image/jpeg;base64,"))
    assert content[1] == {"type": "text", "text": "Read the page."}
    assert image_size(body) == (320, 200)


def test_greedy_defaults_leave_out_optional_samplers(server):
    backend(server).generate(page(), "p", GenerationSettings())
    body = server.chat_requests()[0]["body"]
    assert "top_k" not in body and "repetition_penalty" not in body


def test_model_is_asked_from_the_server_once(server):
    server.models = ["first-model", "second-model"]
    client = backend(server)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: client.generate(page(100 + i, 100), "p", SETTINGS), range(8)))
    assert client.model == "first-model"
    assert {r["body"]["model"] for r in server.chat_requests()} == {"first-model"}
    assert sum(1 for r in server.requests if r["path"] == "/v1/models") == 1


def test_a_server_without_models_needs_api_model(server):
    server.models = []
    with pytest.raises(BackendError, match="lists no models") as info:
        backend(server).generate(page(), "p", SETTINGS)
    assert "--api-model" in info.value.one_line()


def test_length_finish_reason(server):
    result = backend(server).generate(page(), "p", GenerationSettings(max_tokens=3))
    assert result.finish_reason == "length"


def test_non_streaming_answer_is_accepted(server):
    server.plan = ["json"]
    pieces = []
    result = backend(server).generate(page(), "p", SETTINGS, lambda p: pieces.append(p) is None)
    assert result.text == "page 300x400 says hello in several pieces of text"
    assert pieces == [result.text]
    assert result.output_tokens == 9


def test_close_delimited_stream_without_chunking():
    with FakeOpenAIServer(chunked=False) as fake:
        result = backend(fake).generate(page(), "p", SETTINGS)
        # without chunking a cut stream looks like a normal end: the missing
        # finish_reason is what gives it away
        fake.plan = ["cut"]
        again = backend(fake).generate(page(), "p", SETTINGS)
    assert result.text.startswith("page 300x400")
    assert again.text == result.text
    assert len(fake.chat_requests()) == 3


def test_a_think_block_is_not_page_text():
    with FakeOpenAIServer(think=True) as fake:
        pieces = []
        result = backend(fake).generate(page(), "p", SETTINGS, lambda p: pieces.append(p) is None)
    assert result.text == "page 300x400 says hello in several pieces of text"
    assert "".join(pieces) == result.text


@pytest.mark.parametrize(
    "pieces, expected",
    [
        (["<think>", "\nhm\n", "</think>", "\n\n", "Hello", " world"], "Hello world"),
        (["<thi", "nk>x</th", "ink>\n\nHel", "lo"], "Hello"),
        (["  Hello", " <think> stays"], "  Hello <think> stays"),
        (["<", "b>bold</b>"], "<b>bold</b>"),
        (["<think>never closed"], ""),
        (["<th"], "<th"),
    ],
)
def test_think_filter(pieces, expected):
    f = openai_stream._ThinkFilter()
    assert "".join(f.feed(p) for p in pieces) + f.flush() == expected


def test_think_filter_does_not_hold_back_a_blank_loop():
    # A model stuck on newlines must reach the loop guard while it generates.
    f = openai_stream._ThinkFilter()
    out = [f.feed("\n\n") for _ in range(40)]
    assert "".join(out) == "\n\n" * 40
    assert out[-1] == "\n\n"


# --- retries ---------------------------------------------------------------------------


@pytest.mark.parametrize("failure", [503, 500, 502, 429, 408, "drop", "cut", "interrupt", "error"])
def test_transient_failures_are_retried(server, failure):
    server.plan = [failure, failure]
    pieces = []
    result = backend(server).generate(page(), "p", SETTINGS, lambda p: pieces.append(p) is None)
    assert result.text == "page 300x400 says hello in several pieces of text"
    # A stream cut mid-answer is replayed by the server; the callback sees each character once.
    assert "".join(pieces) == result.text
    assert len(server.chat_requests()) == 3


def test_timeouts_are_retried():
    with FakeOpenAIServer(hang_s=1.5) as fake:
        fake.plan = ["hang"]
        result = backend(fake, timeout=0.5).generate(page(), "p", SETTINGS)
    assert result.text.startswith("page 300x400")
    assert len(fake.chat_requests()) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_client_errors_are_not_retried(server, status):
    server.plan = [status]
    with pytest.raises(BackendError) as info:
        backend(server).generate(page(), "p", SETTINGS)
    assert f"HTTP {status}" in str(info.value)
    assert len(server.chat_requests()) == 1
    assert info.value.exit_code == ExitCode.BACKEND_ERROR


def test_giving_up_raises_one_line_backend_error(server):
    server.plan = [503] * 10
    with pytest.raises(BackendError) as info:
        backend(server, max_retries=2).generate(page(), "p", SETTINGS)
    line = info.value.one_line()
    assert "\n" not in line
    assert "HTTP 503" in line and "gave up after 3 attempts" in line
    assert len(server.chat_requests()) == 3


def test_backoff_grows_and_honours_retry_after():
    sleeps = []
    with FakeOpenAIServer(retry_after="2") as fake:
        fake.plan = [429, 503, 503]
        client = OpenAIBackend([fake.url], backoff_base=0.1, sleep=sleeps.append)
        client.generate(page(), "p", SETTINGS)
    assert len(sleeps) == 3
    assert all(s >= 2 for s in sleeps)  # Retry-After: 2 is a floor
    sleeps.clear()
    with FakeOpenAIServer() as fake:
        fake.plan = [503] * 4
        OpenAIBackend([fake.url], backoff_base=0.1, sleep=sleeps.append).generate(page(), "p", SETTINGS)
    # exponential with jitter: attempt n waits between base*2^(n-1)/2 and base*2^(n-1)
    for n, delay in enumerate(sleeps, 1):
        assert 0.1 * 2 ** (n - 1) / 2 <= delay <= 0.1 * 2 ** (n - 1)


def test_retry_after_parsing():
    assert openai_client._retry_after("3") == 3
    assert openai_client._retry_after("garbage") is None
    assert openai_client._retry_after(None) is None
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= openai_client._retry_after(future) <= 31


# --- the key ---------------------------------------------------------------------------


def test_key_goes_in_the_authorization_header_only():
    with FakeOpenAIServer(api_key=SECRET) as fake:
        backend(fake, api_key=SECRET).generate(page(), "p", SETTINGS)
        for request in fake.requests:
            assert request["headers"]["Authorization"] == f"Bearer {SECRET}"
            assert SECRET not in json.dumps(request["body"])
            assert SECRET not in request["path"]


def test_key_never_appears_in_errors_or_logs(caplog):
    caplog.set_level(logging.DEBUG)
    wrong = SECRET + "-wrong"
    # The server echoes the key it got in its error message, as some gateways do.
    with FakeOpenAIServer(api_key=SECRET) as fake:
        with pytest.raises(BackendError) as info:
            backend(fake, api_key=wrong, model="m").generate(page(), "p", SETTINGS)
    assert "HTTP 401" in info.value.one_line()
    assert "QWENOCR_API_KEY" in info.value.one_line()
    with FakeOpenAIServer(reply=lambda body: "x") as fake:
        fake.plan = [503] * 5
        client = backend(fake, api_key=SECRET, max_retries=3)
        with pytest.raises(BackendError) as info2:
            client.generate(page(), "p", SETTINGS)
        text = info.value.one_line() + info2.value.one_line() + repr(client) + caplog.text
    assert "retrying" in caplog.text  # the retries were logged...
    assert SECRET not in text  # ...without the key


def test_error_messages_redact_a_key_the_server_echoes():
    client = OpenAIBackend(["http://127.0.0.1:9/v1"], api_key=SECRET)
    server = client._pool.servers[0]
    body = json.dumps({"error": {"message": f"bad key {SECRET}"}}).encode()
    with pytest.raises(BackendError) as info:
        client._raise_for_status(server, 403, {}, body)
    assert SECRET not in info.value.one_line() and "***" in info.value.one_line()


def test_api_key_from_env():
    assert api_key_from_env({"QWENOCR_API_KEY": "a", "OPENAI_API_KEY": "b"}) == "a"
    assert api_key_from_env({"OPENAI_API_KEY": "b"}) == "b"
    assert api_key_from_env({"QWENOCR_API_KEY": "  ", "OPENAI_API_KEY": "b"}) == "b"
    assert api_key_from_env({}) is None


def test_credentials_in_the_url_are_refused():
    with pytest.raises(UsageError, match="credentials"):
        OpenAIBackend(["http://user:secret@host:8000/v1"])


# --- abort and close -------------------------------------------------------------------


def test_on_piece_false_aborts_and_closes_the_connection():
    words = " ".join(f"w{i}" for i in range(200))
    with FakeOpenAIServer(piece_delay=0.01, reply=lambda body: words) as fake:
        seen = []

        def stop_after_three(piece):
            seen.append(piece)
            return len(seen) < 3

        started = time.monotonic()
        result = backend(fake).generate(page(), "p", SETTINGS, stop_after_three)
        elapsed = time.monotonic() - started
        deadline = time.monotonic() + 3
        while fake.disconnects == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert result.finish_reason == "aborted"
    assert result.text == "w0 w1 w2 "
    assert elapsed < 1.0  # the whole answer would take 2 s
    assert fake.disconnects == 1  # the server noticed the client leave
    assert len(fake.chat_requests()) == 1  # an abort is not retried


def test_close_stops_requests_in_flight():
    with FakeOpenAIServer(hang_s=5) as fake:
        fake.plan = ["hang"]
        client = backend(fake, model="m")
        errors = []
        thread = threading.Thread(target=lambda: errors.append(_catch(lambda: client.generate(page(), "p", SETTINGS))))
        thread.start()
        time.sleep(0.3)
        client.close()
        thread.join(3)
    assert not thread.is_alive()
    assert isinstance(errors[0], BackendError)
    with pytest.raises(BackendError):
        client.generate(page(), "p", SETTINGS)


def _catch(fn):
    try:
        fn()
    except Exception as error:  # noqa: BLE001 - returned for inspection
        return error
    return None


# --- concurrency and several servers -----------------------------------------------------


def test_pages_in_flight_keep_their_own_answers():
    with FakeOpenAIServer(delay=0.2) as fake:
        client = backend(fake, concurrency=8)
        sizes = [(200 + i, 300 + i) for i in range(24)]
        started = time.monotonic()
        with ThreadPoolExecutor(client.concurrency) as pool:
            results = list(pool.map(lambda s: client.generate(page(*s), "p", SETTINGS), sizes))
        elapsed = time.monotonic() - started
    assert [r.text.split()[1] for r in results] == [f"{w}x{h}" for w, h in sizes]
    assert fake.max_in_flight == 8
    assert elapsed < 24 * 0.2 / 3  # parallel, not serial (serial would be 4.8 s)


def test_pages_spread_round_robin_across_servers():
    with FakeOpenAIServer() as a, FakeOpenAIServer() as b, FakeOpenAIServer() as c:
        client = backend([a.url, b.url, c.url], model="m")
        for i in range(12):
            client.generate(page(100 + i, 100), "p", SETTINGS)
        counts = [len(s.chat_requests()) for s in (a, b, c)]
    assert counts == [4, 4, 4]


def test_a_dead_server_is_skipped_for_a_cool_down(caplog):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with FakeOpenAIServer() as alive:
        client = backend([dead, alive.url], model="m", cooldown=60)
        results = [client.generate(page(100 + i, 100), "p", SETTINGS) for i in range(10)]
        assert len(alive.chat_requests()) == 10
    assert all(r.text.startswith("page ") for r in results)
    # Tried once, then left alone while it cools down.
    assert caplog.text.count("connection failed") == 1


def test_a_failing_server_sends_its_pages_elsewhere_immediately():
    sleeps = []
    with FakeOpenAIServer() as bad, FakeOpenAIServer() as good:
        bad.plan = [503] * 100
        client = OpenAIBackend([bad.url, good.url], model="m", sleep=sleeps.append)
        for i in range(6):
            client.generate(page(100 + i, 100), "p", SETTINGS)
        assert len(bad.chat_requests()) == 1
        assert len(good.chat_requests()) == 6
    assert sleeps == []  # no backoff while another server is healthy


def test_all_servers_down_is_a_backend_error():
    urls = [f"http://127.0.0.1:{free_port()}/v1", f"http://127.0.0.1:{free_port()}/v1"]
    with pytest.raises(BackendError, match="connection failed"):
        backend(urls, model="m", max_retries=3).generate(page(), "p", SETTINGS)


def test_thread_safety_under_failures():
    with FakeOpenAIServer(delay=0.02) as a, FakeOpenAIServer(delay=0.02) as b:
        rng = random.Random(5)
        a.plan = [rng.choice(["ok", 503, 429, "drop", "cut"]) for _ in range(40)]
        b.plan = [rng.choice(["ok", 503, "drop"]) for _ in range(40)]
        client = backend([a.url, b.url], concurrency=8, max_retries=8, cooldown=0.05)
        sizes = [(100 + i, 120) for i in range(40)]
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda s: client.generate(page(*s), "p", SETTINGS), sizes))
    assert [r.text.split()[1] for r in results] == [f"{w}x{h}" for w, h in sizes]


# --- URLs, images, doctor ----------------------------------------------------------------


@pytest.mark.parametrize(
    "url, expected",
    [
        ("http://localhost:8000", "http://localhost:8000/v1"),
        ("http://localhost:8000/", "http://localhost:8000/v1"),
        ("http://localhost:8000/v1/", "http://localhost:8000/v1"),
        ("https://gpu.example.org/openai/v1", "https://gpu.example.org:443/openai/v1"),
        ("http://[::1]:9000/v1", "http://[::1]:9000/v1"),
    ],
)
def test_base_url_with_or_without_v1(url, expected):
    assert OpenAIBackend([url]).servers == [expected]


@pytest.mark.parametrize("url", ["localhost:8000", "ftp://host/v1", ""])
def test_bad_base_urls_are_usage_errors(url):
    with pytest.raises(UsageError):
        OpenAIBackend([url])


def test_concurrency_must_be_positive():
    with pytest.raises(UsageError):
        OpenAIBackend(["http://localhost:8000"], concurrency=0)


def test_image_encoding_picks_the_smaller_format():
    clean = page(600, 800)
    noisy = Image.effect_noise((600, 800), 60).convert("RGB")
    assert encode_image(clean).startswith("data:image/png;base64,")
    assert encode_image(noisy).startswith("data:image/jpeg;base64,")
    assert encode_image(noisy, "png").startswith("data:image/png;base64,")
    rgba = Image.new("RGBA", (50, 50), (0, 0, 0, 0))
    assert encode_image(rgba).startswith("data:image/")  # transparent → flattened on white
    assert encode_image(Image.new("1", (50, 50))).startswith("data:image/")


def test_check_server_lists_models(server):
    server.models = ["qwen3.5-397b-a17b"]
    info = check_server(server.url)
    assert info["reachable"] and info["status"] == 200
    assert info["models"] == ["qwen3.5-397b-a17b"]
    assert info["error"] is None and info["latency_s"] >= 0


def test_check_server_unreachable():
    info = check_server(f"http://127.0.0.1:{free_port()}", timeout=2)
    assert info["reachable"] is False
    assert "connection failed" in info["error"]


def test_check_server_wrong_key_names_the_env_var():
    with FakeOpenAIServer(api_key=SECRET) as fake:
        info = check_server(fake.url, api_key="wrong")
        ok = check_server(fake.url, api_key=SECRET)
    assert info["reachable"] and info["status"] == 401
    assert "QWENOCR_API_KEY" in info["error"]
    assert ok["models"] == ["qwen3.5-fake"]
    assert SECRET not in json.dumps([info, ok])


def test_check_server_bad_url():
    assert "not an http" in check_server("nonsense")["error"]


def test_backend_writes_nothing_to_stdout(server, capfd):
    server.plan = [503]
    backend(server).generate(page(), "p", SETTINGS)
    out, _ = capfd.readouterr()
    assert out == ""


# --- the real server: llama-cpp-python on the tiny GGUF -----------------------------------


@pytest.mark.engine
def test_against_llama_cpp_server(tiny_models, tmp_path, caplog):
    # tiny_models (conftest.py) skips without QWENOCR_TEST_MODELS, and fails under CI.
    # The key reaches the server through its environment (API_KEY, read by its
    # pydantic settings), never through argv, so that it can't show in `ps`.
    env = dict(os.environ, API_KEY=SECRET)
    # by default a new request cuts the one streaming (a bare [DONE]); queue instead
    queued = ("--interrupt_requests", "False")
    with llama_server(
        tiny_models.dense_gguf, tiny_models.dense_mmproj, tmp_path / "server.log", *queued, env=env, api_key=SECRET
    ) as (process, url, info):
        assert SECRET not in " ".join(process.args)  # not in the process list

        caplog.set_level(logging.DEBUG)
        client = OpenAIBackend([url], model=None, api_key=SECRET, concurrency=2, timeout=120)
        from tests.support.samples import page_image

        images = [page_image(n, size=(256, 320)) for n in (1, 2, 3)]
        pieces = []
        settings = GenerationSettings(max_tokens=16)
        with ThreadPoolExecutor(2) as pool:
            futures = [
                pool.submit(
                    client.generate,
                    image,
                    "Read all the text in the image.",
                    settings,
                    lambda p: pieces.append(p) is None,
                )
                for image in images
            ]
            results = [f.result() for f in futures]
        assert client.model == info["models"][0]
        for result in results:
            assert result.finish_reason in ("stop", "length")
            assert result.output_tokens > 0
        assert sum(r.output_tokens for r in results) >= 3
        # the pieces streamed are the text returned (random weights: any text will do)
        assert sorted("".join(pieces)) == sorted("".join(r.text for r in results))

        # an unauthorised client gets a clear, key-free error
        with pytest.raises(BackendError, match="HTTP 401") as info401:
            OpenAIBackend([url], model="m", api_key="wrong").generate(images[0], "p", settings)
        assert SECRET not in info401.value.one_line() + caplog.text


def test_grey_pages_are_sent_as_exact_greyscale():
    import base64
    import io

    from tests.support.samples import page_image

    rgb = page_image(1, size=(400, 500))
    uri = encode_image(rgb)
    decoded = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert decoded.mode == "L"
    assert decoded.convert("RGB").tobytes() == rgb.tobytes()  # lossless
    coloured = rgb.copy()
    coloured.putpixel((10, 10), (255, 0, 0))
    decoded = Image.open(io.BytesIO(base64.b64decode(encode_image(coloured).split(",", 1)[1])))
    assert decoded.mode == "RGB"


def test_a_data_uri_passes_through(server):
    uri = encode_image(page(77, 55))
    assert encode_image(uri) is uri
    backend(server).generate(uri, "p", SETTINGS)
    assert image_size(server.chat_requests()[0]["body"]) == (77, 55)


@pytest.mark.parametrize(
    "mode, size", [("L", (1, 1)), ("L", (7, 3)), ("RGB", (5, 9)), ("RGB", (700, 700)), ("L", (1300, 1000))]
)
def test_own_png_writer_is_lossless(mode, size):
    import io

    # the larger sizes span several zlib blocks (about 1 MB of rows each)
    channels = [Image.effect_noise(size, 60 + 10 * i) for i in range(3)]
    image = channels[0] if mode == "L" else Image.merge("RGB", channels)
    decoded = Image.open(io.BytesIO(openai_encode._png(image)))
    decoded.load()
    assert decoded.mode == mode and decoded.size == size
    assert decoded.tobytes() == image.tobytes()


def test_own_png_writer_stops_past_the_limit():
    noisy = Image.effect_noise((800, 800), 80)
    assert openai_encode._png(noisy, limit=10_000) is None
    assert len(openai_encode._png(noisy)) > 10_000


# --- keys an HTTP header can't carry, and numbers JSON can't (issue 12: 4, 15) ----------


@pytest.mark.parametrize("bad", ["sk-abc\ndef", "sk-abc\rdef", "sk-abc\x00def", "sk-abc\u2026def", "sk-é-key"])
def test_a_key_a_header_cant_carry_is_refused_without_echoing_it(bad):
    with pytest.raises(UsageError) as info:
        api_key_from_env({"QWENOCR_API_KEY": bad})
    line = info.value.one_line()
    assert "QWENOCR_API_KEY" in line and "\n" not in line
    assert "abc" not in line and "sk-" not in line
    with pytest.raises(UsageError) as info2:
        api_key_from_env({"OPENAI_API_KEY": bad})
    assert "OPENAI_API_KEY" in info2.value.one_line()
    # A key handed straight to the backend is checked too, before any request.
    with pytest.raises(UsageError) as info3:
        OpenAIBackend(["http://127.0.0.1:9/v1"], api_key=bad)
    assert "abc" not in info3.value.one_line()
    result = check_server("http://127.0.0.1:9/v1", api_key=bad)
    assert result["error"] and "abc" not in json.dumps(result)


def test_a_key_with_surrounding_whitespace_is_trimmed_not_refused():
    assert api_key_from_env({"QWENOCR_API_KEY": " sk-ok-key\n"}) == "sk-ok-key"


def test_a_bad_key_is_exit_2_without_the_key_in_scan_or_doctor(tmp_path):
    from tests.support import samples
    from tests.support.clirun import run_cli

    bad = "sk-LEAKY-KEY\nsecond-line"
    pdf = samples.write_pdf(tmp_path / "doc.pdf", pages=1)
    with FakeOpenAIServer() as fake:
        for args in (
            ("scan", pdf, "--backend", "openai", "--base-url", fake.url),
            ("doctor", "--base-url", fake.url),
            ("doctor", "--base-url", fake.url, "--json"),
        ):
            for name in ("QWENOCR_API_KEY", "OPENAI_API_KEY"):
                env = {"QWENOCR_API_KEY": "", "OPENAI_API_KEY": "", name: bad}
                proc = run_cli(*args, env=env)
                assert proc.returncode == int(ExitCode.USAGE), (args, proc.stderr.decode())
                assert b"LEAKY" not in proc.stdout + proc.stderr
                assert b"Bearer" not in proc.stdout + proc.stderr
                assert name.encode() in proc.stderr
                assert len(proc.stderr.decode().strip().splitlines()) <= 2  # the error and its hint
        assert fake.requests == []  # refused before anything was sent


def test_non_finite_usage_numbers_are_dropped():
    progress = openai_stream.Progress()
    state = openai_stream._StreamState(None, progress)
    state.event(b'{"choices": [{"delta": {"content": "hi"}, "finish_reason": "stop"}]}')
    state.event(b'{"choices": [], "usage": {"prompt_tokens": NaN, "completion_tokens": Infinity}}')
    result = state.result("stop")
    assert result.prompt_tokens is None
    assert result.output_tokens == 1  # the deltas counted, not the server's infinity
    raw = b'{"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": -Infinity, '
    raw += b'"completion_tokens": NaN}}'
    generation = openai_stream.from_json(raw, None, progress)
    assert generation.prompt_tokens is None and generation.output_tokens == 1
