"""Local engines run in a worker process: a native crash or hang costs one page, not the run.

The crashes are real: the test-only hook QWENOCR_TEST_ENGINE_FAULTS makes the worker
call abort() (SIGABRT, as a failed GGML_ASSERT does) or hang at chosen generate calls
(1 = the run's first). The engines are the real ones, with the tiny checkpoints;
sampling at temperature 1 keeps the loop guard from retrying pages, so that call N is
page N (a crashed page's retry is the next call).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qwenocr.engines.base import GenerationSettings
from qwenocr.engines.isolated import CRASHES_TO_STOP, IsolatedEngine
from qwenocr.errors import BackendError
from tests.support import clirun, samples

pytestmark = pytest.mark.engine

FAST = ["--max-tokens", "16", "--max-image-tokens", "64", "--temperature", "1", "-f", "jsonl"]
CRASH_LINE = "engine crashed (signal 6, SIGABRT); retrying the page in a fresh engine"


def _gguf(tiny_models):
    return ["--model", tiny_models.dense_gguf, "--mmproj", tiny_models.dense_mmproj]


def _scan(pdf, tiny_models, faults, *extra, model=None, timeout=300):
    return clirun.run_cli(
        "scan",
        pdf,
        *FAST,
        *([] if "--resume" in extra else ["--no-resume"]),
        *(model if model is not None else _gguf(tiny_models)),
        *extra,
        env={"QWENOCR_TEST_ENGINE_FAULTS": faults},
        timeout=timeout,
    )


def _pages(stdout: bytes):
    return [json.loads(line) for line in stdout.decode().splitlines()]


@pytest.fixture(scope="module")
def pdf(tmp_path_factory):
    return samples.write_pdf(tmp_path_factory.mktemp("in") / "doc.pdf", pages=3, size=(600, 800))


def test_a_crash_is_one_line_and_the_page_is_retried_in_a_fresh_engine(tiny_models, pdf):
    proc = _scan(pdf, tiny_models, "2")
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    crash_lines = [line for line in stderr.splitlines() if "crashed" in line]
    assert crash_lines == [f"qwenocr: warning: page 2: the llama.cpp {CRASH_LINE}"]
    pages = _pages(proc.stdout)
    assert [page["number"] for page in pages] == [1, 2, 3]
    assert all(page["status"] != "error" for page in pages), pages
    assert pages[1]["attempts"] >= 2 and pages[1]["output_tokens"] > 0


def test_a_page_that_crashes_twice_is_an_error_and_the_run_goes_on(tiny_models, pdf):
    proc = _scan(pdf, tiny_models, "2,3")
    stderr = proc.stderr.decode()
    assert proc.returncode == 10, stderr
    assert "Traceback" not in stderr
    pages = _pages(proc.stdout)
    assert [page["status"] == "error" for page in pages] == [False, True, False]
    assert "crashed (signal 6, SIGABRT) again on the retry" in pages[1]["error"]
    assert pages[2]["output_tokens"] > 0  # the page after it ran in a fresh engine


def test_crash_after_crash_stops_the_run_and_a_rerun_resumes(tiny_models, tmp_path):
    pdf = samples.write_pdf(tmp_path / "five.pdf", pages=5, size=(600, 800))
    out = tmp_path / "out.jsonl"
    # Page 1 finishes; pages 2, 3 and 4 crash on both tries: the 6th crash in a row stops it.
    faults = ",".join(str(call) for call in range(2, 2 + CRASHES_TO_STOP))
    proc = _scan(pdf, tiny_models, faults, "-o", out, "--resume")
    stderr = proc.stderr.decode()
    assert proc.returncode == 12, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("qwenocr: error:")]
    assert len(errors) == 1 and f"crashed {CRASHES_TO_STOP} times in a row" in errors[0], stderr
    assert not out.exists()  # the output is written whole or not at all
    rerun = _scan(pdf, tiny_models, "", "-o", out, "--resume", "--verbose")
    assert rerun.returncode == 0, rerun.stderr.decode()
    assert "resuming, 1 page(s) already done" in rerun.stderr.decode()
    assert [page["number"] for page in _pages(out.read_bytes())] == [1, 2, 3, 4, 5]


def test_a_hung_engine_costs_the_page_its_timeout(tiny_models, pdf):
    proc = _scan(pdf, tiny_models, "2:hang", "--page-timeout", "3")
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr
    pages = _pages(proc.stdout)
    assert [page["status"] for page in pages][1] == "timeout"
    assert pages[0]["output_tokens"] > 0 and pages[2]["output_tokens"] > 0
    assert pages[2]["status"] != "timeout"  # the fresh engine's loading is not the next page's time


def test_mlx_runs_isolated_too(tiny_models, pdf):
    proc = _scan(pdf, tiny_models, "1", model=["--model", tiny_models.dense_mlx])
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr
    assert f"page 1: the mlx {CRASH_LINE}" in stderr
    assert [page["status"] != "error" for page in _pages(proc.stdout)] == [True, True, True]


def test_load_errors_come_back_with_their_class_and_message(tmp_path):
    fake = tmp_path / "not-a-model.gguf"
    fake.write_bytes(b"GGUF" + os.urandom(4096))
    with pytest.raises(BackendError) as raised:
        IsolatedEngine(
            "llama.cpp", {"model_path": str(fake), "mmproj_path": str(fake), "n_ctx": 1024, "n_gpu_layers": 0}
        )
    assert "not-a-model.gguf" in raised.value.message
    assert "Traceback" not in raised.value.one_line()


def test_same_text_as_the_engine_in_process_and_stop_works(tiny_models, tmp_path):
    from qwenocr.engines.llamacpp import LlamaCppBackend

    image = samples.page_image(1, size=(320, 420))
    settings = GenerationSettings(max_tokens=24)
    args = {"model_path": str(tiny_models.dense_gguf), "mmproj_path": str(tiny_models.dense_mmproj)}
    local = LlamaCppBackend(tiny_models.dense_gguf, tiny_models.dense_mmproj, n_ctx=1024)
    try:
        expected = local.generate(image, "Read.", settings)
    finally:
        local.close()
    engine = IsolatedEngine("llama.cpp", {**args, "n_ctx": 1024, "n_gpu_layers": -1})
    try:
        assert engine.max_image_tokens == LlamaCppBackend.max_image_tokens
        same = engine.generate(image, "Read.", settings)
        assert (same.text, same.output_tokens, same.finish_reason) == (
            expected.text,
            expected.output_tokens,
            expected.finish_reason,
        )
        seen = []

        def stop_after_three(piece: str) -> bool:
            seen.append(piece)
            return len(seen) < 3

        stopped = engine.generate(image, "Read.", settings, stop_after_three)
        assert stopped.finish_reason == "aborted"
        assert len(seen) == 3
        # A stop belongs to its page: the next one runs to its end.
        again = engine.generate(image, "Read.", settings)
        assert again.text == expected.text
    finally:
        engine.close()


def _workers_of(parent: int):
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"qwenocr.engines.isolated" in argv and str(parent).encode() in argv:
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_worker_does_not_outlive_a_killed_run(tiny_models, pdf):
    proc = subprocess.Popen(
        [*clirun.QWENOCR, "scan", pdf, *FAST, *_gguf(tiny_models)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "QWENOCR_TEST_ENGINE_FAULTS": "1:hang"},
    )
    try:
        deadline = time.monotonic() + 120
        while not _workers_of(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = _workers_of(proc.pid)
        assert workers, "the engine worker never started"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while _workers_of(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _workers_of(proc.pid) == []
