"""A failing disk under the checkpoint directory costs resumability, not the run (issue
#12, defect 7).

Before: a full disk while saving a page was "internal error" (output on stdout) or
blamed on the output file (with -o). Now the run warns once, keeps the pages in memory
and finishes the document. The disk is made to fail by patching the checkpoint's
writes in-process (a real tiny file system needs privileges); the CLI test does the
same inside the qwenocr process, with the tiny GGUF as the engine.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qwenocr.scan import checkpoint as ckpt_module
from qwenocr.scan.checkpoint import Checkpoint
from qwenocr.scan.progress import Reporter
from qwenocr.scan.request import ScanRequest
from qwenocr.scan.run import run_scan
from qwenocr.store.resolve import ModelFiles
from tests.support import samples
from tests.support.fake_engine import FakeBackend

LOGGER = "qwenocr.scan.checkpoint"
KEY = "k" * 32


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def _failing_writes(monkeypatch, code=errno.ENOSPC, after=0):
    """Let `after` writes through, then write a few bytes of each line and fail (a torn line)."""
    calls = []
    real = ckpt_module._write_all

    def write_all(fd, data):
        calls.append(data)
        if len(calls) <= after:
            return real(fd, data)
        os.write(fd, data[:5])
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(ckpt_module, "_write_all", write_all)
    return calls


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS])
def test_a_failed_write_warns_once_and_keeps_pages_in_memory(tmp_path, caplog, monkeypatch, code):
    calls = _failing_writes(monkeypatch, code, after=1)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        with Checkpoint.open(tmp_path, KEY) as ckpt:
            ckpt.put(1, {"text": "one"})
            ckpt.put(2, {"text": "two"})  # fails: warned, kept in memory
            ckpt.put(3, {"text": "three"})  # not even tried
            assert {n: r["text"] for n, r in ckpt.finished().items()} == {1: "one", 2: "two", 3: "three"}
            assert not ckpt.writable
    assert len(calls) == 2
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "continuing" in warnings[0] and str(tmp_path) in warnings[0], warnings
    # The page saved before the failure is still there to resume from; the torn line is gone.
    monkeypatch.undo()
    with Checkpoint.open(tmp_path, KEY) as again:
        assert list(again.finished()) == [1]
        assert again.skipped_lines == 0
    assert (tmp_path / KEY / "pages.jsonl").read_bytes().endswith(b"\n")


def test_other_write_errors_still_stop_the_run(tmp_path, monkeypatch):
    _failing_writes(monkeypatch, errno.EBADF)
    with Checkpoint.open(tmp_path, KEY) as ckpt, pytest.raises(OSError):
        ckpt.put(1, {"text": "one"})


def test_a_checkpoint_that_cannot_be_created_on_a_full_disk_is_skipped(tmp_path, caplog, monkeypatch):
    def full(directory):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_module, "_open_pages", full)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ckpt = Checkpoint.open(tmp_path, KEY)
    ckpt.put(1, {"text": "one"})
    assert ckpt.get(1) == {"text": "one"}
    assert not ckpt.persistent
    ckpt.discard()
    assert (tmp_path / KEY).is_dir()  # not ours to delete: only the open failed
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "the disk is full" in warnings[0], warnings


def _scan(inputs, **kwargs):
    """run_scan with the fake engine: exit code, stdout, and what the user saw on stderr."""
    backend = FakeBackend()
    engine = lambda: (ModelFiles("fake", Path("fake"), None, "fake-model"), None, backend)  # noqa: E731
    out, err = io.StringIO(), io.StringIO()
    request = ScanRequest(inputs=[str(i) for i in inputs], **kwargs)
    code = run_scan(request, out, Reporter(stream=err), engine=engine)
    return code, out.getvalue(), err.getvalue()


def test_a_scan_finishes_on_stdout_when_the_checkpoint_disk_fills(tmp_path, monkeypatch):
    pdf = samples.write_pdf(tmp_path / "three.pdf", pages=3)
    calls = _failing_writes(monkeypatch, after=1)
    code, text, stderr = _scan([pdf])
    assert code == 0, stderr
    assert all(f"<!-- page {n} -->" in text for n in (1, 2, 3)), text
    assert len(calls) == 2
    assert stderr.count("warning") == 1 and "the disk is full" in stderr, stderr


def test_a_scan_to_a_file_finishes_when_the_checkpoint_disk_fills(tmp_path, monkeypatch):
    pdf = samples.write_pdf(tmp_path / "three.pdf", pages=3)
    _failing_writes(monkeypatch)
    code, _, stderr = _scan([pdf], output=tmp_path / "out.md")
    assert code == 0, stderr
    assert "out.md" not in stderr and "the disk is full" in stderr, stderr
    assert (tmp_path / "out.md").read_text().count("<!-- page ") == 3


# Runs the real CLI in a subprocess whose checkpoint writes fail as on a full disk.
_FULL_DISK_CLI = """
import errno, sys
from qwenocr.scan import checkpoint
def full(fd, data):
    raise OSError(errno.ENOSPC, "No space left on device")
checkpoint._write_all = full
from qwenocr.cli.app import main
sys.argv = ["qwenocr", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("to_file", [False, True])
def test_cli_full_checkpoint_disk_is_one_warning_not_an_error(tmp_path, tiny_models, to_file):
    pdf = samples.write_pdf(tmp_path / "doc.pdf", pages=2, size=(600, 800))
    model = ["--model", tiny_models.dense_gguf, "--mmproj", tiny_models.dense_mmproj]
    fast = ["--max-tokens", "24", "--max-image-tokens", "128"]
    args = ["scan", str(pdf), *model, *fast] + (["-o", str(tmp_path / "doc.md")] if to_file else [])
    result = subprocess.run(
        [sys.executable, "-c", _FULL_DISK_CLI, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ,
    )
    assert result.returncode == 0, result.stderr
    assert "internal error" not in result.stderr and "doc.md" not in result.stderr, result.stderr
    assert "the disk is full" in result.stderr and "continuing" in result.stderr, result.stderr
    text = (tmp_path / "doc.md").read_text() if to_file else result.stdout
    assert "<!-- page 1 " in text and "<!-- page 2 " in text
