"""Interruption loses nothing: a real `qwenocr scan` subprocess, stopped mid-run.

The run reads a six-page PDF with the tiny GGUF (about a second a page with these
budgets on a 2-core CPU). Once the checkpoint
(`$QWENOCR_CACHE_DIR/checkpoints/<key>/pages.jsonl`) holds a finished page, the test
sends SIGINT, SIGTERM or SIGKILL and checks what docs/exit-codes.md and the issue
promise: the exit code (130, 143; a SIGKILL can't be caught), one line on stderr, no
output file at -o (it is replaced atomically, never half-written), the finished pages
kept in the checkpoint. Running the same command again resumes: the finished pages come
back `resumed: true`, unchanged (not recomputed), and the final document equals an
uninterrupted run's, page for page (greedy decoding on llama.cpp's CPU backend is
deterministic, which the --no-resume rerun checks too).
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

from tests.support import broken_inputs, samples

pytestmark = pytest.mark.engine

QWENOCR = [sys.executable, "-m", "qwenocr"]
PAGES = 6
BUDGET = ["--max-tokens", "48", "--max-image-tokens", "64"]


def _command(pdf: Path, out: Path, gguf: Path, *extra: str) -> list:
    return [*QWENOCR, "scan", str(pdf), "-o", str(out), "-f", "json", "-q", "--model", str(gguf), *BUDGET, *extra]


def _env(cache: Path) -> dict:
    return {**os.environ, "QWENOCR_CACHE_DIR": str(cache)}


def _finished_pages(cache: Path) -> dict:
    """Page number -> record, as a resumed run will read them (the last record wins)."""
    pages = {}
    for path in (cache / "checkpoints").glob("*/pages.jsonl"):
        for line in path.read_bytes().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # a torn last line from a SIGKILL
                continue
            pages[entry["page"]] = entry["record"]
    return pages


def _start_and_stop(command: list, cache: Path, sig: int, at_least: int = 1):
    """Start the scan, wait for `at_least` finished pages, send `sig`; returns
    (returncode, stderr, finished pages when the signal was sent, pid)."""
    # Its own process group, so that SIGINT can go to the whole group as a terminal's
    # Ctrl-C does (the render process gets it too, and must leave it to its parent).
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(cache), start_new_session=True
    )
    deadline = time.monotonic() + 120
    while len(_finished_pages(cache)) < at_least:
        if proc.poll() is not None:
            pytest.fail(
                f"the scan ended (exit {proc.returncode}) before it could be interrupted: {proc.stderr.read().decode()}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no page finished within 120 s")
        time.sleep(0.02)
    done_at_signal = set(_finished_pages(cache))
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert stdout == b""
    assert len(done_at_signal) < PAGES, "the run finished before the signal: make the pages slower"
    return proc.returncode, stderr.decode(errors="replace"), done_at_signal, proc.pid


def _texts(document: dict) -> list:
    return [(p["number"], p["status"], p["text"]) for p in document["pages"]]


def _assert_no_output(out: Path, allow_temp: bool = False) -> None:
    assert not out.exists(), "a partial output file was left at -o"
    if not allow_temp:
        assert [p.name for p in out.parent.iterdir() if p.name.startswith("." + out.name)] == []


def _assert_workers_gone(pid: int) -> None:
    if not Path("/proc/self/cmdline").exists():
        return
    deadline = time.monotonic() + 5  # a SIGKILLed parent's worker notices within 0.5 s
    while broken_inputs.render_workers_of(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert broken_inputs.render_workers_of(pid) == []


@pytest.fixture(scope="module")
def pdf(tmp_path_factory):
    return samples.write_pdf(tmp_path_factory.mktemp("in") / "six.pdf", pages=PAGES, size=(600, 800))


@pytest.fixture(scope="module")
def reference(pdf, tiny_models, tmp_path_factory):
    """An uninterrupted run's document (its own cache directory)."""
    root = tmp_path_factory.mktemp("reference")
    out = root / "ref.json"
    proc = subprocess.run(
        _command(pdf, out, tiny_models.dense_gguf, "--no-resume"),
        capture_output=True,
        env=_env(root / "cache"),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    document = json.loads(out.read_text())
    assert [p["number"] for p in document["pages"]] == list(range(1, PAGES + 1))
    assert not any(p["resumed"] for p in document["pages"])
    return document


def test_sigint_keeps_finished_pages_and_a_rerun_resumes(pdf, tiny_models, reference, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out.json"
    command = _command(pdf, out, tiny_models.dense_gguf)
    code, stderr, done, pid = _start_and_stop(command, cache, signal.SIGINT)
    assert code == 130, stderr
    assert stderr.splitlines() == [
        "qwenocr: error: interrupted; finished pages are kept: run the same command again to resume"
    ]
    _assert_no_output(out)
    _assert_workers_gone(pid)
    kept = _finished_pages(cache)
    assert set(kept) >= done and len(kept) < PAGES

    verbose = [arg for arg in command if arg != "-q"] + ["--verbose"]
    rerun = subprocess.run(verbose, capture_output=True, env=_env(cache), timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()
    assert f"resuming, {len(kept)} page(s) already done" in rerun.stderr.decode()
    document = json.loads(out.read_text())
    for page in document["pages"]:
        assert page["resumed"] == (page["number"] in kept)
        if page["resumed"]:  # the very record of the first run, not a recomputation
            assert page["seconds"] == kept[page["number"]]["seconds"]
    assert _texts(document) == _texts(reference)
    # Done and written: the checkpoint has gone.
    assert _finished_pages(cache) == {}


def test_sigterm_exits_143_and_no_resume_starts_over(pdf, tiny_models, reference, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out.json"
    command = _command(pdf, out, tiny_models.dense_gguf)
    code, stderr, done, pid = _start_and_stop(command, cache, signal.SIGTERM)
    assert code == 143, stderr
    assert stderr.splitlines() == [
        "qwenocr: error: terminated; finished pages are kept: run the same command again to resume"
    ]
    _assert_no_output(out)
    _assert_workers_gone(pid)
    assert set(_finished_pages(cache)) >= done

    fresh = subprocess.run([*command, "--no-resume"], capture_output=True, env=_env(cache), timeout=300)
    assert fresh.returncode == 0, fresh.stderr.decode()
    document = json.loads(out.read_text())
    assert not any(page["resumed"] for page in document["pages"])
    # Computed again from scratch, and the same as the reference: decoding is deterministic.
    assert _texts(document) == _texts(reference)


def test_sigkill_loses_at_most_the_page_in_flight(pdf, tiny_models, reference, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out.json"
    out.write_text("the previous run's output\n")  # must survive a crash untouched
    command = _command(pdf, out, tiny_models.dense_gguf)
    code, stderr, done, pid = _start_and_stop(command, cache, signal.SIGKILL, at_least=2)
    assert code == -signal.SIGKILL
    assert out.read_text() == "the previous run's output\n"
    _assert_workers_gone(pid)
    kept = _finished_pages(cache)
    # Every page that was in the checkpoint when the kill came is still there (fsynced
    # before the next page starts); only the page being read was lost.
    assert set(kept) >= done and len(kept) < PAGES

    rerun = subprocess.run(command, capture_output=True, env=_env(cache), timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()
    document = json.loads(out.read_text())
    assert {p["number"] for p in document["pages"] if p["resumed"]} == set(kept)
    assert _texts(document) == _texts(reference)


def test_interrupted_run_of_several_inputs_redoes_no_finished_document(pdf, tiny_models, reference, tmp_path):
    """`scan a.pdf six.pdf -o DIR` stopped while reading six.pdf: the rerun takes a.pdf
    from its checkpoint too (a finished document's checkpoint goes only when the whole
    run has ended), and then removes both."""
    cache, out = tmp_path / "cache", tmp_path / "out"
    first = samples.write_pdf(tmp_path / "a.pdf", pages=2, size=(600, 800))
    command = _command(first, out, tiny_models.dense_gguf)
    command.insert(command.index(str(first)) + 1, str(pdf))
    code, stderr, done, pid = _start_and_stop(command, cache, signal.SIGINT, at_least=3)
    assert code == 130, stderr
    assert (out / "a.json").is_file() and not (out / "six.json").exists()

    rerun = subprocess.run(command, capture_output=True, env=_env(cache), timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()
    assert all(page["resumed"] for page in json.loads((out / "a.json").read_text())["pages"])
    six = json.loads((out / "six.json").read_text())
    assert six["pages"][0]["resumed"]
    assert _texts(six) == _texts(reference)
    assert _finished_pages(cache) == {}


# -- a signal that lands inside a native library's callback ---------------------------


def _sort_through_c(compare) -> None:
    """Have C code (libc's qsort) call `compare` back through ctypes."""
    import ctypes

    libc = ctypes.CDLL(None)
    numbers = (ctypes.c_int * 8)(5, 3, 8, 1, 9, 2, 7, 4)
    prototype = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))
    libc.qsort(numbers, len(numbers), ctypes.sizeof(ctypes.c_int), prototype(compare))


def _compare_and_signal(signum):
    sent = []

    def compare(a, b):
        if not sent:
            sent.append(1)
            os.kill(os.getpid(), signum)
            for _ in range(1000):  # bytecodes at which the handler runs, inside the callback
                pass
        return a[0] - b[0]

    return compare


@pytest.fixture
def saved_handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the "Exception ignored"
def test_ctrl_c_inside_an_unregistered_callback_is_lost(saved_handlers):
    """The hazard: ctypes swallows the KeyboardInterrupt raised in a callback."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    _sort_through_c(_compare_and_signal(signal.SIGINT))  # no KeyboardInterrupt comes out


@pytest.mark.parametrize("signum,raised", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, "Terminated")])
def test_a_signal_inside_a_registered_callback_is_raised_after_it(saved_handlers, signum, raised):
    from qwenocr import interrupts
    from qwenocr.errors import Terminated

    expected = Terminated if raised == "Terminated" else raised
    compare = interrupts.register_callback(_compare_and_signal(signum))
    interrupts.install()
    finished = []
    with pytest.raises(expected):
        _sort_through_c(compare)
        finished.append("the sort")  # the signal comes out after the C code
        for _ in range(500):  # (interrupt_main wakes no sleep: short ones)
            time.sleep(0.01)
    assert finished == ["the sort"]
