"""A hostile PDF costs one input or one page, never gigabytes or minutes of the main process.

PDFium inflates a PDF's /Metadata stream while it opens the document, and a page's
content streams while it reads the page's text layer (`--mode text|auto`). Both used to
run in the main process: a 1 MB file with a Flate bomb in /Metadata took gigabytes there
before any page was read, and a page whose text layer takes PDFium two minutes held the
run for two minutes. Now a PDF is opened, read and rendered in the guarded child process
(qwenocr/pages/renderguard.py), with `--render-timeout` as the deadline and its address
space capped. These tests run the real CLI in a subprocess and measure the peak memory of
that process alone (not of its children), with `clirun.run_cli_with_peak`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import broken_inputs, clirun
from tests.support import textlayer_pdfs as pdfs

# The main process reads nothing of a PDF itself: well under this. Inflating the bombs
# below in it took 1.5-4 GB.
PARENT_LIMIT_KB = 1024 * 1024

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB and RLIMIT_AS: Linux")


def run_measured(tmp_path: Path, *args, timeout: float = 120) -> tuple[subprocess.CompletedProcess, int]:
    """`qwenocr ARGS` in a subprocess; its exit, and the peak RSS (KiB) of that process alone."""
    try:
        return clirun.run_cli_with_peak(
            *args, peak_file=tmp_path / "peak.txt", env={"QWENOCR_CACHE_DIR": str(tmp_path / "cache")}, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"qwenocr {' '.join(map(str, args))} did not finish in {timeout} s")


def error_lines(proc: subprocess.CompletedProcess) -> list:
    return [line for line in proc.stderr.decode(errors="replace").splitlines() if line.startswith("qwenocr: error: ")]


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bombs")
    files = {
        "metadata": root / "metadata-bomb.pdf",
        "content": root / "content-bomb.pdf",
        "good": root / "good.pdf",
        "slow": root / "slow.pdf",
    }
    files["metadata"].write_bytes(broken_inputs.metadata_bomb_pdf(2**30))
    files["content"].write_bytes(broken_inputs.content_bomb_pdf(2**30))
    files["good"].write_bytes(broken_inputs.text_pdf(2))
    files["slow"].write_bytes(broken_inputs.slow_render_pdf(depth=7))
    return files


def test_a_metadata_bomb_is_one_input_error_and_no_memory_of_the_main_process(bombs, tmp_path):
    """Found before any model is planned (--model names nothing): exit 3, one line, the
    main process stays small."""
    proc, peak = run_measured(
        tmp_path, "scan", bombs["metadata"], "-o", tmp_path / "out.md", "--model", tmp_path / "none"
    )
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == 3, stderr
    assert stderr.count("\n") == 1 and len(error_lines(proc)) == 1, stderr
    assert f"{bombs['metadata']}: opening the PDF" in stderr and "compression bomb" in stderr
    assert peak < PARENT_LIMIT_KB, f"the main process peaked at {peak / 1024:.0f} MiB"
    assert not (tmp_path / "out.md").exists()


def test_a_metadata_bomb_among_good_inputs_costs_that_input(bombs, tmp_path):
    out = tmp_path / "out"
    proc, peak = run_measured(tmp_path, "scan", bombs["good"], bombs["metadata"], "--mode", "text", "-o", out, "-q")
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == 10, stderr
    assert len(error_lines(proc)) == 1 and str(bombs["metadata"]) in error_lines(proc)[0], stderr
    assert "Page 2 - line 30" in (out / "good.md").read_text()
    assert not (out / "metadata-bomb.md").exists()
    assert peak < PARENT_LIMIT_KB, f"the main process peaked at {peak / 1024:.0f} MiB"


def test_a_content_bomb_in_text_mode_is_read_in_the_child(bombs, tmp_path):
    """--mode text reads each page's text layer, which inflates its content stream: in
    the guarded child, so the main process stays small and the other page is read."""
    out = tmp_path / "out.json"
    proc, peak = run_measured(tmp_path, "scan", bombs["content"], "--mode", "text", "-f", "json", "-o", out, "-q")
    assert proc.returncode == 10, proc.stderr.decode(errors="replace")
    pages = json.loads(out.read_text())["pages"]
    assert [page["status"] for page in pages] == ["ok", "error"]
    assert "Page 1 - line 30" in pages[0]["text"] and "\n" not in pages[1]["error"]
    assert peak < PARENT_LIMIT_KB, f"the main process peaked at {peak / 1024:.0f} MiB"


def test_a_content_bomb_in_auto_mode_costs_no_memory_of_the_main_process(bombs, tmp_path):
    from tests.support.openai_fake_server import FakeOpenAIServer

    out = tmp_path / "out.json"
    with FakeOpenAIServer() as server:
        proc, peak = run_measured(
            tmp_path,
            "scan",
            bombs["content"],
            "--mode",
            "auto",
            "-f",
            "json",
            "-o",
            out,
            "-q",
            "--backend",
            "openai",
            "--base-url",
            server.url,
            "--max-image-tokens",
            "64",
        )
    assert proc.returncode in (0, 10), proc.stderr.decode(errors="replace")
    pages = json.loads(out.read_text())["pages"]
    assert pages[0]["source"] == "text-layer" and pages[0]["status"] == "ok"
    assert peak < PARENT_LIMIT_KB, f"the main process peaked at {peak / 1024:.0f} MiB"


def test_a_text_layer_that_takes_minutes_costs_the_render_timeout(bombs, tmp_path):
    """Page 2 of slow.pdf nests form XObjects 10 wide and 7 deep: PDFium took two minutes
    and gigabytes to read its text layer in the main process. In the child that page is
    an error within --render-timeout (or sooner: the child runs out of its address space
    and dies); the pages around it are read from their text layers."""
    out = tmp_path / "out.json"
    proc, peak = run_measured(
        tmp_path,
        "scan",
        bombs["slow"],
        "--mode",
        "text",
        "--render-timeout",
        "2",
        "-f",
        "json",
        "-o",
        out,
        "-q",
        timeout=60,
    )
    assert proc.returncode == 10, proc.stderr.decode(errors="replace")
    pages = json.loads(out.read_text())["pages"]
    assert [page["status"] for page in pages] == ["ok", "error", "ok"]
    error = pages[1]["error"]
    assert "page 2 took longer than 2 s to read its text layer" in error or "page 2 crashed the PDF renderer" in error
    assert "Page 3 - line 1" in pages[2]["text"]
    assert peak < PARENT_LIMIT_KB, f"the main process peaked at {peak / 1024:.0f} MiB"


_IN_CHILD = r"""
import json, sys
from qwenocr.pages.document import open_document
layers = []
with open_document(sys.argv[1], timeout=30) as document:
    for number in range(1, document.page_count + 1):
        page = document.text_layer(number)
        layers.append([page.text, page.width, page.height, [list(b) for b in page.boxes],
                       page.image_fraction, page.path_objects])
print(json.dumps({"pdfium_here": "pypdfium2" in sys.modules, "layers": layers}))
"""


def test_a_guarded_document_never_loads_pdfium_in_this_process(tmp_path):
    """Open, page count and text layers all come from the child, identical to reading
    them in process."""
    from qwenocr.pages.document import open_document

    pdf = tmp_path / "mixed.pdf"
    pdf.write_bytes(pdfs.mixed_pdf())
    proc = subprocess.run([sys.executable, "-c", _IN_CHILD, str(pdf)], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    answer = json.loads(proc.stdout)
    assert answer["pdfium_here"] is False
    with open_document(pdf, timeout=None) as document:
        expected = [document.text_layer(number) for number in range(1, document.page_count + 1)]
    assert len(answer["layers"]) == len(expected)
    for got, page in zip(answer["layers"], expected, strict=True):
        assert got[0] == page.text and (got[1], got[2]) == (page.width, page.height)
        assert [tuple(box) for box in got[3]] == list(page.boxes)
        assert (got[4], got[5]) == (page.image_fraction, page.path_objects)


def test_documents_share_one_child_and_a_damaged_one_does_not_end_it(tmp_path):
    """One child serves document after document, a damaged one (refused at open) included."""
    from qwenocr.errors import InputError
    from qwenocr.pages import renderguard
    from qwenocr.pages.document import open_document

    good = tmp_path / "good.pdf"
    good.write_bytes(broken_inputs.text_pdf(1))
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(broken_inputs.corrupt_pdf())
    renderguard._discard_spare()
    try:
        pids = []
        for path in (good, bad, good):
            try:
                with open_document(path, timeout=30) as document:
                    assert document.text_layer(1).text
                    pids.append(document._worker._proc.pid)
            except InputError as error:
                assert "damaged or truncated" in error.message
        assert len(pids) == 2 and pids[0] == pids[1]
    finally:
        renderguard._discard_spare()
