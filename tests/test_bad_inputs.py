"""Bad inputs through the real CLI, as a user meets them: one line, a documented exit code.

Every case runs `python -m qwenocr scan` as a subprocess on a file from
tests/support/broken_inputs.py and checks what docs/exit-codes.md promises: the exit code,
exactly one `qwenocr: error: ` line on stderr (warnings for single pages), no traceback,
nothing on stdout. Most failures happen in the input check, before any model is
resolved; those runs pass a --model path that does not exist (see NO_MODEL), so they
need no model files, touch no network, and prove the order of the checks. The cases
that must get past loading (a bad page inside a good PDF, several inputs, outputs that
fail late, a slow page) use the tiny GGUF with small budgets and are marked `engine`.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import broken_inputs
from tests.support.clirun import QWENOCR, run_cli, run_cli_with_peak

FAST = ["--max-tokens", "16", "--max-image-tokens", "64", "--no-resume"]


def assert_one_error(proc, code: int, *needles: str) -> str:
    """Exit `code`, stdout empty, stderr exactly one `qwenocr: error:` line holding `needles`."""
    stderr = proc.stderr.decode(errors="replace")
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert proc.stdout == b""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("qwenocr: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    files = {
        "not_a_pdf.pdf": broken_inputs.not_a_pdf(),
        "empty.pdf": b"",
        "truncated.pdf": broken_inputs.truncated_pdf(),
        "corrupt.pdf": broken_inputs.corrupt_pdf(),
        "zero_pages.pdf": broken_inputs.zero_page_pdf(),
        "corrupt.png": broken_inputs.corrupt_png(),
        "truncated.png": broken_inputs.png_bytes()[:600],
        "huge.png": broken_inputs.huge_png(),
        "good.pdf": broken_inputs.text_pdf(3),
        "bad_page.pdf": broken_inputs.bad_page_pdf(),
        "absurd.pdf": broken_inputs.absurd_size_pdf(1e6, 1e6),
        "absurd_strip.pdf": broken_inputs.absurd_size_pdf(1e6, 1),
        "slow.pdf": broken_inputs.slow_render_pdf(depth=7),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = root / name
        paths[name].write_bytes(data)
    return paths


@pytest.fixture(scope="module")
def gguf(tiny_models):
    """For the runs that must get past loading: the tiny GGUF."""
    return ["--model", str(tiny_models.dense_gguf)]


# For the runs that must fail in the input check: a model that does not exist. Nothing
# can reach the network with it, and had the run got as far as the model it would end
# with exit 2 (no such file), which no test here expects: so every one of these tests
# also checks that inputs and outputs are checked before any model is resolved.
NO_MODEL = ["--model", "/nonexistent/qwenocr-tests/model.gguf"]


# -- the input check: before any model is loaded -----------------------------------

INPUT_CASES = [
    ("not_a_pdf.pdf", 3, ["not_a_pdf.pdf", "not a PDF or a supported image"]),
    ("empty.pdf", 3, ["empty.pdf", "the file is empty"]),
    ("truncated.pdf", 3, ["truncated.pdf", "damaged or truncated", "qpdf"]),
    ("corrupt.pdf", 3, ["corrupt.pdf", "damaged or truncated"]),
    ("zero_pages.pdf", 3, ["zero_pages.pdf", "has no pages"]),
    ("corrupt.png", 3, ["corrupt.png", "could not be decoded"]),
    ("truncated.png", 3, ["truncated.png", "could not be decoded"]),
    ("huge.png", 3, ["huge.png", "too large to decode", "3600000000 pixels"]),
]


@pytest.mark.parametrize("name,code,needles", INPUT_CASES, ids=[c[0] for c in INPUT_CASES])
def test_broken_file_is_one_line(corpus, name, code, needles):
    assert_one_error(run_cli("scan", corpus[name], *NO_MODEL), code, *needles)


def test_missing_path(tmp_path):
    assert_one_error(run_cli("scan", tmp_path / "nope.pdf", *NO_MODEL), 3, "nope.pdf", "no such file")


def test_fifo_is_refused_without_blocking(tmp_path):
    """Opening a FIFO for reading blocks until a writer comes: it must be refused first."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    fifo = tmp_path / "pipe.pdf"
    os.mkfifo(fifo)
    assert_one_error(run_cli("scan", fifo, *NO_MODEL, timeout=60), 3, "pipe.pdf", "not a regular file")


def test_directory_named_like_a_pdf_with_nothing_inside(tmp_path):
    folder = tmp_path / "report.pdf"
    folder.mkdir()
    assert_one_error(run_cli("scan", folder, *NO_MODEL), 3, "report.pdf", "no PDF or image")


def test_unreadable_file(tmp_path):
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip(
            "running as root: chmod 000 does not stop root from reading"
            " (the FIFO and directory cases cover unreadable paths)"
        )
    path = tmp_path / "secret.pdf"
    path.write_bytes(broken_inputs.text_pdf(1))
    path.chmod(0)
    try:
        assert_one_error(run_cli("scan", path, *NO_MODEL), 3, "secret.pdf", "permission denied")
    finally:
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_garbage_on_stdin():
    assert_one_error(run_cli("scan", "-", *NO_MODEL, stdin=b"\x00\x01 not a document"), 3, "-:", "not a PDF")


def test_page_range_outside_the_document_is_a_usage_error(corpus):
    assert_one_error(run_cli("scan", corpus["good.pdf"], "--pages", "5-7", *NO_MODEL), 2, "page 5", "3 page(s)")


@pytest.mark.parametrize("target", ["missing-dir/x.md", "good.pdf/x.md"])
def test_output_that_cannot_be_written_fails_before_the_model(corpus, tmp_path, target):
    """The output is checked with the inputs, before the model (see NO_MODEL)."""
    out = (tmp_path / target) if target.startswith("missing") else Path(str(corpus["good.pdf"]) + "/x.md")
    proc = run_cli("scan", corpus["good.pdf"], "-o", out, *NO_MODEL)
    assert_one_error(proc, 4, "-o ", str(out.parent))


def test_output_onto_the_input_is_refused(tmp_path):
    pdf = tmp_path / "doc.pdf"
    pdf.write_bytes(broken_inputs.text_pdf(1))
    proc = run_cli("scan", pdf, "-o", tmp_path / "." / "doc.pdf", *NO_MODEL)
    assert_one_error(proc, 2, "would destroy the input")
    assert pdf.read_bytes() == broken_inputs.text_pdf(1)


def test_output_directory_onto_an_input_is_refused(tmp_path):
    # issue 12 defect 3: a PNG named scan.md (its type comes from its content) scanned
    # into its own folder would be replaced by its own output, scan.md.
    folder = tmp_path / "clob"
    folder.mkdir()
    png = folder / "scan.md"
    png.write_bytes(broken_inputs.png_bytes())
    proc = run_cli("scan", png, "-o", str(folder) + "/", *NO_MODEL)
    assert_one_error(proc, 2, "would destroy the input", str(png))
    assert png.read_bytes() == broken_inputs.png_bytes()
    # Several inputs: one input's output (a.png -> a.md) is another input (a PNG named a.md).
    (folder / "a.png").write_bytes(broken_inputs.png_bytes())
    (folder / "a.md").write_bytes(broken_inputs.png_bytes())
    proc = run_cli("scan", folder / "a.png", folder / "a.md", "-o", folder, *NO_MODEL)
    assert_one_error(proc, 2, "would destroy the input", str(folder / "a.md"))
    assert (folder / "a.md").read_bytes() == broken_inputs.png_bytes()


def test_output_directory_beside_the_input_with_another_name_works(tmp_path):
    """The control: an input whose output name differs is scanned into its own folder."""
    pdf = tmp_path / "doc.pdf"
    pdf.write_bytes(broken_inputs.text_pdf(1))
    proc = run_cli("scan", pdf, "-o", tmp_path, "--mode", "text", "--no-resume")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert (tmp_path / "doc.md").read_text().strip()
    assert pdf.read_bytes() == broken_inputs.text_pdf(1)


def test_input_errors_come_before_the_model(corpus):
    proc = run_cli("scan", corpus["truncated.pdf"], *NO_MODEL)
    assert_one_error(proc, 3, "damaged or truncated")


def test_several_outputs_into_a_file_is_a_usage_error(corpus, tmp_path):
    proc = run_cli("scan", corpus["good.pdf"], corpus["bad_page.pdf"], "-o", tmp_path / "out.md", *NO_MODEL)
    assert_one_error(proc, 2, "output directory")


# -- encrypted PDFs ----------------------------------------------------------------


@pytest.fixture(scope="module")
def encrypted(tmp_path_factory):
    pytest.importorskip("pikepdf", reason="pikepdf (the test extra) builds the encrypted PDFs")
    root = tmp_path_factory.mktemp("encrypted")
    return {
        "aes": broken_inputs.encrypted_pdf(root / "aes256.pdf", aes=True),
        "rc4": broken_inputs.encrypted_pdf(root / "rc4.pdf", aes=False),
    }


@pytest.mark.parametrize("kind", ["aes", "rc4"])
def test_encrypted_without_password(encrypted, kind):
    line = assert_one_error(
        run_cli("scan", encrypted[kind], *NO_MODEL, env={"QWENOCR_PDF_PASSWORD": ""}), 8, "needs a password"
    )
    assert "QWENOCR_PDF_PASSWORD" in line and "--password-file" in line


def test_encrypted_wrong_password_every_way(encrypted, tmp_path):
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not it\n")
    for args, env in [
        (["--password", "not it"], {}),
        ([], {"QWENOCR_PDF_PASSWORD": "not it"}),
        (["--password-file", wrong], {}),
    ]:
        proc = run_cli("scan", encrypted["aes"], *args, *NO_MODEL, env=env)
        assert_one_error(proc, 8, "password is wrong")


def test_missing_password_file_is_a_usage_error(encrypted, tmp_path):
    assert_one_error(
        run_cli("scan", encrypted["aes"], "--password-file", tmp_path / "none.txt", *NO_MODEL), 2, "--password-file"
    )


@pytest.mark.engine
def test_encrypted_with_the_right_password_every_way(encrypted, gguf, tmp_path):
    secret = tmp_path / "pw.txt"
    secret.write_text(broken_inputs.PASSWORD + "\n")  # a trailing newline, as editors leave it
    for kind, args, env in [
        ("aes", ["--password-file", secret], {}),
        ("rc4", [], {"QWENOCR_PDF_PASSWORD": broken_inputs.PASSWORD}),
        ("aes", ["--password", broken_inputs.PASSWORD], {}),
    ]:
        proc = run_cli("scan", encrypted[kind], "-f", "json", "-q", *args, *FAST, *gguf, env=env)
        assert proc.returncode == 0, proc.stderr.decode()
        document = json.loads(proc.stdout)
        assert document["page_count"] == 1 and document["pages"][0]["status"] != "error"


# -- past the model: pages and several inputs ---------------------------------------


@pytest.mark.engine
def test_bad_page_inside_a_good_pdf_is_partial(corpus, gguf):
    proc = run_cli("scan", corpus["bad_page.pdf"], "-f", "json", *FAST, *gguf)
    stderr = proc.stderr.decode()
    assert proc.returncode == 10, stderr
    assert "Traceback" not in stderr
    pages = json.loads(proc.stdout)["pages"]
    assert [p["status"] == "error" for p in pages] == [False, True, False]
    assert "could not be loaded" in pages[1]["error"] and pages[1]["text"] == ""
    warnings = [line for line in stderr.splitlines() if "page 2" in line]
    assert len(warnings) == 1 and warnings[0].startswith("qwenocr: warning: page 2: error: ")
    assert not [line for line in stderr.splitlines() if line.startswith("qwenocr: error:")]


@pytest.mark.engine
def test_several_inputs_some_bad_good_ones_complete(corpus, gguf, tmp_path):
    out = tmp_path / "out"
    inputs = [corpus["good.pdf"], corpus["truncated.pdf"], corpus["empty.pdf"], tmp_path / "missing.pdf"]
    proc = run_cli("scan", *inputs, "-o", out, "-f", "json", "-q", *FAST, *gguf)
    stderr = proc.stderr.decode()
    assert proc.returncode == 10, stderr
    assert "Traceback" not in stderr and proc.stdout == b""
    errors = stderr.splitlines()
    assert len(errors) == 3 and all(line.startswith("qwenocr: error: ") for line in errors), stderr
    for name in ("truncated.pdf", "empty.pdf", "missing.pdf"):
        assert sum(name in line for line in errors) == 1
    assert sorted(p.name for p in out.iterdir()) == ["good.json"]
    assert [p["status"] != "error" for p in json.loads((out / "good.json").read_text())["pages"]] == [True] * 3


@pytest.mark.engine
def test_output_write_failing_late_is_an_output_error(corpus, gguf):
    """A directory that looks writable but refuses files (/sys, even for root): the run
    gets as far as writing, and still ends in one line and exit 4."""
    if not sys.platform.startswith("linux") or not os.path.isdir("/sys/kernel"):
        pytest.skip("needs Linux's /sys")
    proc = run_cli("scan", corpus["good.pdf"], "--pages", "1", "-o", "/sys/qwenocr-test.md", "-q", *FAST, *gguf)
    assert_one_error(proc, 4, "/sys/qwenocr-test.md", "cannot write")


@pytest.mark.engine
@pytest.mark.parametrize("name", ["absurd.pdf", "absurd_strip.pdf"])
def test_absurd_page_size_renders_within_the_budget(corpus, gguf, tmp_path, name):
    """MediaBox 1e6 x 1e6 pt (and a 1e6 x 1 pt strip): rendered within the token budget,
    in this process (--render-timeout 0) so that its peak memory is measured."""
    if not sys.platform.startswith("linux"):
        pytest.skip("reads VmHWM from /proc")
    out = tmp_path / "out.json"
    args = ["scan", str(corpus[name]), "-f", "json", "-o", str(out), "--render-timeout", "0", *FAST, *gguf]
    try:
        proc, peak_kib = run_cli_with_peak(*args, peak_file=tmp_path / "peak.txt")
    except subprocess.TimeoutExpired:
        pytest.fail("qwenocr scan did not finish in time")
    peak = peak_kib * 1024
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    page = json.loads(out.read_text())["pages"][0]
    assert page["status"] != "error", page
    assert page["image_tokens"] <= 64
    # The tiny model and the interpreter take a few hundred MB; a bitmap at the page's
    # declared size would take gigabytes.
    assert peak < 1.5e9, f"peak RSS {peak / 1e9:.2f} GB"


# -- a page PDFium takes minutes over ------------------------------------------------


@pytest.mark.engine
def test_slow_page_is_skipped_after_the_render_timeout(corpus, gguf):
    """Page 2 draws 10^7 nested forms (minutes of PDFium): with --render-timeout 3 it is
    an error after ~3 s, pages 1 and 3 are read, and no render process is left behind."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [*QWENOCR, "scan", str(corpus["slow.pdf"]), "-f", "json", "--render-timeout", "3", *FAST, *gguf],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = proc.communicate(timeout=90)
    elapsed = time.monotonic() - started
    stderr = stderr.decode()
    assert proc.returncode == 10, stderr
    assert "Traceback" not in stderr
    pages = json.loads(stdout)["pages"]
    assert [p["status"] == "error" for p in pages] == [False, True, False]
    assert "took longer than 3 s to render" in pages[1]["error"]
    assert "--render-timeout" in pages[1]["error"]
    assert elapsed < 60
    if Path("/proc/self/cmdline").exists():
        assert broken_inputs.render_workers_of(proc.pid) == []


@pytest.mark.engine
def test_unwritable_checkpoint_directory_is_an_output_error(corpus, gguf):
    if not sys.platform.startswith("linux") or not os.path.isdir("/sys/kernel"):
        pytest.skip("needs Linux's /sys")
    proc = run_cli(
        "scan", corpus["good.pdf"], "--pages", "1", "-q", *FAST, *gguf, env={"QWENOCR_CACHE_DIR": "/sys/qwenocr-cache"}
    )
    assert_one_error(proc, 4, "checkpoint", "QWENOCR_CACHE_DIR")


# -- the render process itself -------------------------------------------------------


def test_render_process_gives_the_same_pixels(tmp_path):
    from qwenocr.pages.document import RenderSettings, open_document

    pdf = tmp_path / "text.pdf"
    pdf.write_bytes(broken_inputs.text_pdf(2))
    with (
        open_document(pdf) as in_process,
        open_document(pdf) as guarded,
        open_document("-", data=pdf.read_bytes()) as from_stdin,
    ):
        for number in (1, 2):
            expected = in_process.render(number, RenderSettings(max_image_tokens=256))
            for document in (guarded, from_stdin):
                image = document.render(number, RenderSettings(max_image_tokens=256, timeout=30))
                assert image.size == expected.size and image.tobytes() == expected.tobytes()


def test_render_process_crash_costs_one_page(tmp_path):
    """A page that kills PDFium (simulated: the render process gets SIGSEGV) is one
    InputError; the next page gets a fresh render process."""
    import signal
    import threading

    from qwenocr.errors import InputError
    from qwenocr.pages.document import RenderSettings, open_document

    pdf = tmp_path / "slow.pdf"
    pdf.write_bytes(broken_inputs.slow_render_pdf(depth=7))
    settings = RenderSettings(max_image_tokens=64, timeout=60)
    with open_document(pdf) as document:
        document.render(1, settings)
        worker = document._worker
        pid = worker._proc.pid
        threading.Timer(1.0, os.kill, (pid, signal.SIGSEGV)).start()
        started = time.monotonic()
        with pytest.raises(InputError, match=r"page 2 crashed the PDF renderer \(signal 11\)"):
            document.render(2, settings)
        assert time.monotonic() - started < 30
        assert document.render(3, settings).size[0] > 0
        assert worker._proc.pid != pid


def test_render_process_reports_an_error_of_its_own_open(tmp_path):
    """The render process opens the document itself; if that fails, the first page says
    why (and the protocol stays in step for the next one)."""
    from qwenocr.errors import InputError
    from qwenocr.pages.document import RenderSettings
    from qwenocr.pages.renderguard import RenderWorker

    garbage = tmp_path / "garbage.pdf"
    garbage.write_bytes(broken_inputs.corrupt_pdf())
    worker = RenderWorker(garbage, "garbage.pdf", None, timeout=30)
    try:
        for number in (1, 2):
            with pytest.raises(InputError, match="damaged or truncated"):
                worker.render(number, RenderSettings(max_image_tokens=64))
    finally:
        worker.close()


def test_prestarted_render_processes_serve_the_documents_that_follow(tmp_path):
    """prestart(n) starts a child ahead; the first document takes it; a document that is
    closed gives its child back, and the next document is served by it (one child for a
    run, not one per document); the pixels are the same as in process."""
    from qwenocr.pages import renderguard
    from qwenocr.pages.document import RenderSettings, open_document

    pdf = tmp_path / "text.pdf"
    pdf.write_bytes(broken_inputs.text_pdf(1))
    renderguard._discard_spare()  # no idle child left over from an earlier test
    with open_document(pdf, timeout=None) as in_process:
        expected = in_process.render(1, RenderSettings(max_image_tokens=128)).tobytes()
    renderguard.prestart(2)
    first_spare = renderguard._spare
    assert first_spare is not None and first_spare.poll() is None
    try:
        pids = []
        for _ in range(3):
            with open_document(pdf) as document:
                assert document.render(1, RenderSettings(max_image_tokens=128, timeout=30)).tobytes() == expected
                pids.append(document._worker._proc.pid)
        assert pids == [first_spare.pid] * 3
        assert renderguard._pool == [first_spare]  # idle, for the next document
    finally:
        renderguard._discard_spare()
    assert first_spare.poll() is not None  # ended with the run, not left running
