"""Temp files left by a killed writer are removed by the next write to the same path.

atomicio writes `.NAME.<hex>.tmp` beside the output and renames it at the end; SIGKILL
leaves it behind. The writer holds a lock on it while it lives, so the next write can
tell an abandoned one from a live one. These drive a real `qwenocr scan -o` that is
SIGKILLed mid-page, and real second processes writing beside a live writer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qwenocr.atomicio import atomic_write, write_text
from tests.support.clirun import QWENOCR, run_cli
from tests.support.openai_fake_server import FakeOpenAIServer
from tests.support.samples import write_pdf

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock: no cleanup on Windows")


def _temps(directory: Path, name: str) -> list:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(f".{name}.") and p.name.endswith(".tmp"))


def _wait_for(condition, what: str, limit: float = 60.0) -> None:
    """Poll until `condition()`; the limit only keeps a broken run from hanging the suite."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def test_a_sigkilled_scan_leaves_a_temp_that_the_next_run_removes(tmp_path: Path) -> None:
    pdf = write_pdf(tmp_path / "doc.pdf", pages=2)
    out = tmp_path / "out.md"
    with FakeOpenAIServer(delay=600) as slow:  # the first page never comes back
        scan = subprocess.Popen(
            [*QWENOCR, "scan", str(pdf), "--backend", "openai", "--base-url", slow.url, "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for(lambda: slow.chat_requests() and _temps(tmp_path, "out.md"), "the scan to be mid-page")
        finally:
            scan.send_signal(signal.SIGKILL)
            scan.wait()
    left = _temps(tmp_path, "out.md")
    assert len(left) == 1 and not out.exists()  # what SIGKILL leaves: the temp, no output

    with FakeOpenAIServer() as server:
        proc = run_cli("scan", pdf, "--backend", "openai", "--base-url", server.url, "-o", out)
    assert proc.returncode == 0, proc.stderr.decode()
    assert _temps(tmp_path, "out.md") == []
    assert out.read_text().count("says hello in several pieces of text") == 2  # both pages, complete


def test_an_abandoned_temp_is_removed_and_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "out.md"
    abandoned = tmp_path / ".out.md.0123abcd.tmp"  # as an older qwenocr, or a killed one, left it
    abandoned.write_text("half a document")
    keep = {
        ".out.md.0123abcd.tmp.bak": "not our pattern",
        ".out.md.XYZ.tmp": "not hex",
        ".other.md.0123abcd.tmp": "another output's",
        "out.md.0123abcd.tmp": "not hidden",
        ".out.md.0123abcde.tmp": "nine digits",
    }
    for name, text in keep.items():
        (tmp_path / name).write_text(text)
    victim = tmp_path / "elsewhere.txt"
    victim.write_text("must survive")
    (tmp_path / ".out.md.deadbeef.tmp").symlink_to(victim)

    write_text(target, "done\n")

    assert target.read_text() == "done\n"
    assert not abandoned.exists()
    for name, text in keep.items():
        assert (tmp_path / name).read_text() == text
    assert (tmp_path / ".out.md.deadbeef.tmp").is_symlink()  # a symlink: never followed, never removed
    assert victim.read_text() == "must survive"


_LIVE_WRITER = """
import sys, time
from qwenocr.atomicio import atomic_write
with atomic_write(sys.argv[1]) as handle:
    handle.write("from the live writer")
    handle.flush()
    print("writing", flush=True)
    sys.stdin.readline()  # until the test says so
"""


def test_a_live_writers_temp_is_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "out.md"
    writer = subprocess.Popen(
        [sys.executable, "-c", _LIVE_WRITER, str(target)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdin is not None
        assert writer.stdout.readline().strip() == "writing"
        live = _temps(tmp_path, "out.md")
        assert len(live) == 1

        write_text(target, "from this process\n")  # another process writing the same path meanwhile

        assert live[0] in _temps(tmp_path, "out.md")  # still there: its writer holds it
        assert target.read_text() == "from this process\n"
        writer.stdin.write("\n")
        writer.stdin.flush()
        assert writer.wait(timeout=60) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert target.read_text() == "from the live writer"  # the live writer finished normally
    assert _temps(tmp_path, "out.md") == []


def test_a_live_writer_in_the_same_process_is_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "out.md"
    with atomic_write(target) as outer:
        outer.write("outer")
        (mine,) = _temps(tmp_path, "out.md")
        write_text(target, "inner\n")
        assert mine in _temps(tmp_path, "out.md")
    assert target.read_text() == "outer"
    assert _temps(tmp_path, "out.md") == []


def test_a_temp_of_another_user_is_left_alone(tmp_path: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to make a file owned by another user")
    foreign = tmp_path / ".out.md.0123abcd.tmp"
    foreign.write_text("someone else's")
    os.chown(foreign, 12345, 12345)
    write_text(tmp_path / "out.md", "done\n")
    assert foreign.read_text() == "someone else's"
