"""Inputs that break the edges of the input checks (issue #12, defects 5, 11 and 12).

- File names that are not valid UTF-8 (Linux names are bytes): outputs and messages
  show each undecodable byte as U+FFFD, and JSON, JSONL and several inputs on one
  stdout stay valid UTF-8 (defect 5).
- A multi-frame TIFF whose second frame declares a huge size: refused at open, before
  any frame is decoded, with the usual one line and no raw Pillow warning (defect 11).
- stdin (`-`): its type is sniffed from its first bytes, so an endless stream that is
  not a PDF or image fails at once; a stream over the limit fails with one line (12).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from qwenocr.pages.base import display_name
from qwenocr.pages.images import ImageDocument
from tests.support.broken_inputs import text_pdf
from tests.support.clirun import QWENOCR, run_cli

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="byte file names and pipes as on Linux")

BAD_NAME = b"scan-\xff-page.pdf"


def _bad_named_pdf(tmp_path: Path) -> str:
    """A born-digital PDF whose file name holds the byte 0xff (not valid UTF-8)."""
    path = os.fsencode(tmp_path) + b"/" + BAD_NAME
    with open(path, "wb") as handle:
        handle.write(text_pdf(1))
    return os.fsdecode(path)  # the str Python gives such a name: 0xff as '\udcff'


def _one_line(stderr: bytes) -> str:
    lines = stderr.decode("utf-8").strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# --- defect 5: non-UTF-8 file names ---------------------------------------------------


def test_display_name_replaces_undecodable_bytes():
    assert display_name(os.fsdecode(b"a\xffb.pdf")) == "a\ufffdb.pdf"
    assert display_name("r\u00e9sum\u00e9.pdf") == "r\u00e9sum\u00e9.pdf"  # valid UTF-8 is untouched
    assert display_name("x\ud800.pdf") == "x?.pdf"  # a surrogate no byte stands for


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_non_utf8_name_in_json_outputs(tmp_path, fmt):
    name = _bad_named_pdf(tmp_path)
    result = run_cli("scan", "--mode", "text", "-f", fmt, name)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    text = result.stdout.decode("utf-8")  # strict: the output is valid UTF-8
    record = json.loads(text.splitlines()[0] if fmt == "jsonl" else text)
    shown = record["file"] if fmt == "jsonl" else record["source"]
    assert shown == str(tmp_path) + "/scan-\ufffd-page.pdf"
    assert "Page 1" in (record["text"] if fmt == "jsonl" else record["pages"][0]["text"])


@pytest.mark.parametrize("fmt", ["markdown", "jsonl", "json"])
def test_non_utf8_name_with_two_inputs_to_stdout(tmp_path, fmt):
    name = _bad_named_pdf(tmp_path)
    other = tmp_path / "plain.pdf"
    other.write_bytes(text_pdf(1))
    result = run_cli("scan", "--mode", "text", "-f", fmt, name, other)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    text = result.stdout.decode("utf-8")
    assert "scan-\ufffd-page.pdf" in text
    if fmt == "markdown":
        assert f"<!-- document: {tmp_path}/scan-\ufffd-page.pdf -->" in text
    elif fmt == "json":
        assert [d["source"] for d in json.loads(text)] == [f"{tmp_path}/scan-\ufffd-page.pdf", str(other)]
    else:
        assert [json.loads(line)["file"] for line in text.splitlines()][-1] == str(other)
    summary = result.stderr.decode("utf-8")  # the summary table names the file too
    assert "Traceback" not in summary and "2 file(s)" in summary


def test_non_utf8_name_in_an_error_message(tmp_path):
    path = os.fsencode(tmp_path) + b"/bad-\xff.pdf"
    with open(path, "wb") as handle:
        handle.write(b"not a pdf at all")
    result = run_cli("scan", "--mode", "text", os.fsdecode(path))
    assert result.returncode == 3
    assert "bad-\ufffd.pdf: not a PDF" in _one_line(result.stderr)


# --- defect 11: every frame of a multi-frame image against the pixel limit ------------


def _ifd(width: int, height: int, strip_offset: int, strip_bytes: int, next_ifd: int) -> bytes:
    """One baseline TIFF directory: 8-bit grey, uncompressed, one strip."""

    def entry(tag: int, kind: int, value: int) -> bytes:
        if kind == 3:  # SHORT: left-justified in the 4-byte value field
            return struct.pack("<HHIHH", tag, 3, 1, value, 0)
        return struct.pack("<HHII", tag, 4, 1, value)

    entries = [
        entry(256, 4, width),
        entry(257, 4, height),
        entry(258, 3, 8),  # bits per sample
        entry(259, 3, 1),  # no compression
        entry(262, 3, 1),  # black is zero
        entry(273, 4, strip_offset),
        entry(277, 3, 1),  # samples per pixel
        entry(278, 4, height),  # rows per strip
        entry(279, 4, strip_bytes),
    ]
    return struct.pack("<H", len(entries)) + b"".join(entries) + struct.pack("<I", next_ifd)


def two_frame_tiff(second: tuple) -> bytes:
    """A TIFF whose first frame is 4x4 pixels and whose second declares `second` (w, h)
    but holds 16 bytes of pixels: the file stays tiny whatever size it claims."""
    pixels = bytes(range(16))
    ifd_size = 2 + 9 * 12 + 4
    first_ifd = 8 + len(pixels)
    second_ifd = first_ifd + ifd_size
    width, height = second
    return (
        b"II*\x00"
        + struct.pack("<I", first_ifd)
        + pixels
        + _ifd(4, 4, 8, 16, second_ifd)
        + _ifd(width, height, 8, width * height, 0)
    )


def test_second_frame_over_the_limit_is_refused_at_open(monkeypatch):
    # Between the limit and twice it Pillow only warns, and only when the frame is decoded.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    data = two_frame_tiff((40, 40))  # 1,600 pixels
    with pytest.raises(Exception) as caught:
        ImageDocument(data, "two.tif")
    assert type(caught.value).__name__ == "InputError"
    assert "frame 2" in str(caught.value) and "too large" in str(caught.value)


def test_two_frame_tiff_within_the_limit_still_opens():
    document = ImageDocument(two_frame_tiff((8, 8)), "two.tif")
    assert document.page_count == 2
    document.close()


@pytest.mark.parametrize("second", [(24000, 24000), (40000, 40000)])  # 576 MP (warns), 1.6 GP (errors)
def test_huge_second_tiff_frame_through_the_cli(tmp_path, second):
    path = tmp_path / "two.tif"
    path.write_bytes(two_frame_tiff(second))
    assert path.stat().st_size < 1024  # nothing large on disk: only the header claims it
    result = run_cli("scan", str(path), env={"QWENOCR_OFFLINE": "1"}, timeout=60)
    assert result.returncode == 3, result.stderr.decode(errors="replace")
    line = _one_line(result.stderr)
    assert "frame 2" in line and "too large to decode" in line
    assert "DecompressionBombWarning" not in line and result.stdout == b""


# --- defect 12: stdin read with a limit, its type sniffed first ------------------------


def test_endless_zeros_on_stdin_fail_at_once():
    process = subprocess.Popen([*QWENOCR, "scan", "-"], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdin is not None
    deadline = time.monotonic() + 30
    written = 0
    block = b"\x00" * 65536
    try:
        while time.monotonic() < deadline and process.poll() is None:
            process.stdin.write(block)  # an endless stream, as `cat /dev/zero` is
            written += len(block)
    except BrokenPipeError:
        pass  # qwenocr stopped reading: what we want
    if process.poll() is None and time.monotonic() >= deadline:
        process.kill()  # still reading after 30 s: the test fails below, without hanging
    try:
        process.stdin.close()
    except BrokenPipeError:
        pass
    stderr = process.stderr.read() if process.stderr else b""
    assert process.wait(timeout=10) == 3
    assert "not a PDF or a supported image" in _one_line(stderr)
    assert written < 64 * 1024 * 1024  # refused after its first bytes, not after gigabytes


_SMALL_LIMIT = (
    "import qwenocr.scan.inputs as inputs; inputs.STDIN_LIMIT = 4_000_000; from qwenocr.cli import main; main()"
)


def test_stdin_over_the_limit_fails_with_one_line():
    # The real limit is 2 GiB; the same code path, with a limit a test can afford.
    stream = text_pdf(1) + b"\n%" + b"\x00" * 5_000_000
    result = subprocess.run(
        [sys.executable, "-c", _SMALL_LIMIT, "scan", "--mode", "text", "-"],
        input=stream,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 3
    assert "stdin is larger than 4000000 bytes" in _one_line(result.stderr)
    assert result.stdout == b""


def test_stdin_within_the_limit_is_scanned():
    result = subprocess.run(
        [sys.executable, "-c", _SMALL_LIMIT, "scan", "--mode", "text", "-f", "jsonl", "-"],
        input=text_pdf(1),
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert json.loads(result.stdout.decode().splitlines()[0])["file"] == "-"
